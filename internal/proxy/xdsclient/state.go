package xdsclient

import (
	"maps"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// typeState is everything the client knows about one type URL. It is guarded
// by Client.mu. The accepted state survives reconnects; the per-stream fields
// are reset when a new stream starts.
type typeState struct {
	typeURL string

	// Desired subscription.
	wildcard bool
	names    map[string]struct{}

	// Accepted (last ACKed) state.
	resources  map[string]*anypb.Any
	versions   map[string]string // delta: per-resource versions, for initial_resource_versions
	version    string            // SotW version_info / delta system_version_info of the last ACK
	delivered  bool              // the handler has seen this type at least once
	lastUpdate time.Time

	// Last NACK, kept for the admin endpoint.
	lastNACK string
	nacked   bool // the most recent response of this type was rejected

	// redeliver asks the serving loop to hand the (pruned) set to the handler.
	redeliver bool

	// Per-stream protocol state.
	nonce        string              // most recent nonce received on this stream
	sent         bool                // a request for this type went out on this stream
	dirty        bool                // the subscription changed since the last request
	explicitSent bool                // SotW: a named (or "*") request went out, so legacy wildcard is gone
	sentWildcard bool                // delta: the server believes we are wildcard
	sentNames    map[string]struct{} // delta: names the server believes we subscribe to
}

func newTypeState(typeURL string) *typeState {
	return &typeState{
		typeURL:   typeURL,
		names:     map[string]struct{}{},
		resources: map[string]*anypb.Any{},
		versions:  map[string]string{},
	}
}

// resetStream forgets per-stream state: nonces do not survive a stream and
// the server knows nothing of our subscriptions until we resend them.
func (st *typeState) resetStream() {
	st.nonce = ""
	st.sent = false
	st.dirty = true
	st.explicitSent = false
	st.sentWildcard = false
	st.sentNames = nil
}

func (st *typeState) subscribed(name string) bool {
	if st.wildcard {
		return true
	}
	_, ok := st.names[name]
	return ok
}

// prune drops accepted resources that are no longer subscribed and reports
// whether anything was dropped.
func (st *typeState) prune() bool {
	n := len(st.resources)
	maps.DeleteFunc(st.resources, func(name string, _ *anypb.Any) bool { return !st.subscribed(name) })
	maps.DeleteFunc(st.versions, func(name string, _ string) bool { return !st.subscribed(name) })
	return len(st.resources) != n
}

// setSubscription replaces the desired subscription and reports whether it changed.
func (st *typeState) setSubscription(wildcard bool, names []string) bool {
	want := make(map[string]struct{}, len(names))
	for _, n := range names {
		want[n] = struct{}{}
	}
	if st.wildcard == wildcard && maps.Equal(st.names, want) {
		return false
	}
	st.wildcard, st.names = wildcard, want
	st.dirty = true
	if st.prune() && st.delivered {
		st.redeliver = true
	}
	return true
}

func sortedNames(set map[string]struct{}) []string {
	return slices.Sorted(maps.Keys(set))
}

// sotwRequest builds the next SotW request for this type. Unless force is set
// (ACK/NACK), it returns nil when nothing needs sending. Every SotW request
// carries the full subscription, the last ACKed version and the latest nonce.
func (st *typeState) sotwRequest(force bool) *discoveryv3.DiscoveryRequest {
	if !force && !st.dirty {
		return nil
	}
	var names []string
	switch {
	case st.wildcard && st.explicitSent:
		// An empty list would now mean "unsubscribe from everything".
		names = []string{wildcardName}
	case st.wildcard:
		// Legacy wildcard (empty list): what Envoy sends and every server understands.
	case len(st.names) == 0 && !st.sent && !force:
		// An empty first request would read as a (legacy) wildcard subscription.
		st.dirty = false
		return nil
	default:
		names = sortedNames(st.names)
	}
	if len(names) > 0 {
		st.explicitSent = true
	}
	st.sent = true
	st.dirty = false
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   st.version,
		ResourceNames: names,
		TypeUrl:       st.typeURL,
		ResponseNonce: st.nonce,
	}
}

// deltaRequest builds the next delta request for this type: on a fresh stream
// the whole subscription plus initial_resource_versions, afterwards only the
// subscription diff. Unless force is set (ACK/NACK), it returns nil when there
// is nothing to say.
func (st *typeState) deltaRequest(force bool) *discoveryv3.DeltaDiscoveryRequest {
	if !force && !st.dirty {
		return nil
	}
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: st.typeURL}
	if !st.sent {
		if !st.wildcard && len(st.names) == 0 && !force {
			// Empty subscribe on a first request would read as legacy wildcard.
			st.dirty = false
			return nil
		}
		if len(st.versions) > 0 {
			req.InitialResourceVersions = maps.Clone(st.versions)
		}
		// Wildcard uses the legacy form (no names), as Envoy does.
		req.ResourceNamesSubscribe = sortedNames(st.names)
		st.sentWildcard = st.wildcard
		st.sentNames = maps.Clone(st.names)
		st.sent = true
		st.dirty = false
		return req
	}
	for n := range st.names {
		if _, ok := st.sentNames[n]; !ok {
			req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
		}
	}
	for n := range st.sentNames {
		if _, ok := st.names[n]; !ok {
			req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
		}
	}
	slices.Sort(req.ResourceNamesSubscribe)
	slices.Sort(req.ResourceNamesUnsubscribe)
	if st.wildcard && !st.sentWildcard {
		req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, wildcardName)
	}
	if !st.wildcard && st.sentWildcard {
		req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, wildcardName)
	}
	st.sentWildcard = st.wildcard
	st.sentNames = maps.Clone(st.names)
	st.dirty = false
	if !force && len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 {
		return nil
	}
	return req
}
