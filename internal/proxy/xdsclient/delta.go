package xdsclient

import (
	"context"
	"fmt"
	"maps"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// runDelta serves one DeltaAggregatedResources stream.
func (c *Client) runDelta(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		cancel()
		return false, fmt.Errorf("opening delta ADS stream: %w", err)
	}
	c.startStream()
	c.log.Info("ADS stream established", "mode", "delta")

	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			req.Node = c.cfg.Node
			first = false
		}
		c.log.Debug("sending delta request", "type", req.GetTypeUrl(), "nonce", req.GetResponseNonce(),
			"subscribe", req.GetResourceNamesSubscribe(), "unsubscribe", req.GetResourceNamesUnsubscribe(),
			"initial", len(req.GetInitialResourceVersions()), "nack", req.GetErrorDetail() != nil)
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("sending %s delta request: %w", req.GetTypeUrl(), err)
		}
		return nil
	}
	flush := func() error {
		c.mu.Lock()
		var reqs []*discoveryv3.DeltaDiscoveryRequest
		for _, st := range c.pendingTypes() {
			// Spontaneous requests carry no nonce (the spec requires it omitted).
			if req := st.deltaRequest(false); req != nil {
				reqs = append(reqs, req)
			}
		}
		c.mu.Unlock()
		for _, req := range reqs {
			if err := send(req); err != nil {
				return err
			}
		}
		return nil
	}
	handle := func(resp *discoveryv3.DeltaDiscoveryResponse) error {
		return send(c.handleDelta(resp))
	}
	return serve(sctx, cancel, c, stream.Recv, flush, handle)
}

// handleDelta applies one delta response and returns the ACK or NACK to send.
func (c *Client) handleDelta(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	typeURL := resp.GetTypeUrl()
	log := c.log.With("type", typeURL, "system_version", resp.GetSystemVersionInfo(), "nonce", resp.GetNonce())
	log.Debug("received delta response", "resources", len(resp.GetResources()), "removed", resp.GetRemovedResources())

	c.mu.Lock()
	st, ok := c.types[typeURL]
	if !ok {
		c.mu.Unlock()
		err := fmt.Errorf("response for unsubscribed or unknown type %q", typeURL)
		if knownType(typeURL) {
			err = fmt.Errorf("response for unsubscribed type %q", typeURL)
		}
		log.Warn("NACK", "err", err)
		return &discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:       typeURL,
			ResponseNonce: resp.GetNonce(),
			ErrorDetail:   status.New(codes.InvalidArgument, err.Error()).Proto(),
		}
	}
	st.nonce = resp.GetNonce()
	decoded, err := decodeDelta(typeURL, resp.GetResources(), resp.GetRemovedResources())
	var candidate map[string]*anypb.Any
	var versions map[string]string
	if err == nil {
		candidate, versions = st.deltaCandidate(decoded, resp.GetRemovedResources())
	} else {
		err = fmt.Errorf("invalid %s delta response (system version %q): %w", typeURL, resp.GetSystemVersionInfo(), err)
		st.lastNACK, st.nacked = err.Error(), true
	}
	c.mu.Unlock()

	if err == nil {
		err = c.accept(st, candidate, func() {
			st.versions = versions
			st.version = resp.GetSystemVersionInfo()
		})
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// An ACK/NACK also carries any pending subscription change of this type.
	req := st.deltaRequest(true)
	req.ResponseNonce = resp.GetNonce()
	if err != nil {
		log.Warn("NACK", "err", err)
		req.ErrorDetail = status.New(codes.InvalidArgument, err.Error()).Proto()
	} else {
		log.Debug("ACK", "resources", len(st.resources))
	}
	return req
}

// deltaCandidate applies additions and removals to a copy of the current set.
// Names we are not subscribed to are ignored. Called with c.mu held.
func (st *typeState) deltaCandidate(decoded map[string]entry, removed []string) (map[string]*anypb.Any, map[string]string) {
	next, versions := maps.Clone(st.resources), maps.Clone(st.versions)
	for name, e := range decoded {
		if !st.subscribed(name) || e.res == nil { // nil: TTL heartbeat, nothing changes
			continue
		}
		next[name] = e.res
		versions[name] = e.version
	}
	for _, name := range removed {
		delete(next, name)
		delete(versions, name)
	}
	return next, versions
}
