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

// runSotW serves one StreamAggregatedResources stream.
func (c *Client) runSotW(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		cancel()
		return false, fmt.Errorf("opening ADS stream: %w", err)
	}
	c.startStream()
	c.log.Info("ADS stream established", "mode", "sotw")

	first := true
	send := func(req *discoveryv3.DiscoveryRequest) error {
		if first {
			req.Node = c.cfg.Node
			first = false
		}
		c.log.Debug("sending request", "type", req.GetTypeUrl(), "version", req.GetVersionInfo(),
			"nonce", req.GetResponseNonce(), "names", req.GetResourceNames(), "nack", req.GetErrorDetail() != nil)
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("sending %s request: %w", req.GetTypeUrl(), err)
		}
		return nil
	}
	flush := func() error {
		c.mu.Lock()
		var reqs []*discoveryv3.DiscoveryRequest
		for _, st := range c.pendingTypes() {
			if req := st.sotwRequest(false); req != nil {
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
	handle := func(resp *discoveryv3.DiscoveryResponse) error {
		return send(c.handleSotW(resp))
	}
	return serve(sctx, cancel, c, stream.Recv, flush, handle)
}

// handleSotW applies one response and returns the ACK or NACK to send.
func (c *Client) handleSotW(resp *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	typeURL := resp.GetTypeUrl()
	log := c.log.With("type", typeURL, "version", resp.GetVersionInfo(), "nonce", resp.GetNonce())
	log.Debug("received response", "resources", len(resp.GetResources()))

	c.mu.Lock()
	st, ok := c.types[typeURL]
	if !ok {
		c.mu.Unlock()
		err := fmt.Errorf("response for unsubscribed or unknown type %q", typeURL)
		if knownType(typeURL) {
			err = fmt.Errorf("response for unsubscribed type %q", typeURL)
		}
		log.Warn("NACK", "err", err)
		return &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResponseNonce: resp.GetNonce(), ErrorDetail: status.New(codes.InvalidArgument, err.Error()).Proto()}
	}
	st.nonce = resp.GetNonce()
	decoded, err := decodeSotW(typeURL, resp.GetResources())
	var candidate map[string]*anypb.Any
	if err == nil {
		candidate = st.sotwCandidate(decoded)
	} else {
		err = fmt.Errorf("invalid %s response version %q: %w", typeURL, resp.GetVersionInfo(), err)
		st.lastNACK, st.nacked = err.Error(), true
	}
	c.mu.Unlock()

	if err == nil {
		err = c.accept(st, candidate, func() { st.version = resp.GetVersionInfo() })
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// The request carries the current subscription, so it also flushes any
	// change the handler made to this type.
	req := st.sotwRequest(true)
	if err != nil {
		log.Warn("NACK", "err", err, "keeping_version", st.version)
		req.ErrorDetail = status.New(codes.InvalidArgument, err.Error()).Proto()
	} else {
		log.Debug("ACK", "resources", len(st.resources))
	}
	return req
}

// sotwCandidate computes the set that would be current if the response is
// accepted. LDS/CDS responses replace the set; other types only carry some
// names and are merged by name. Names we did not ask for are ignored, as the
// protocol requires. Called with c.mu held.
func (st *typeState) sotwCandidate(decoded map[string]entry) map[string]*anypb.Any {
	var next map[string]*anypb.Any
	if fullState(st.typeURL) {
		next = make(map[string]*anypb.Any, len(decoded))
	} else {
		next = maps.Clone(st.resources)
	}
	for name, e := range decoded {
		if !st.subscribed(name) {
			continue
		}
		if e.res == nil {
			// A TTL heartbeat: the resource is still there, unchanged.
			if cur, ok := st.resources[name]; ok {
				next[name] = cur
			}
			continue
		}
		next[name] = e.res
	}
	maps.DeleteFunc(next, func(name string, _ *anypb.Any) bool { return !st.subscribed(name) })
	return next
}
