package server

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// configCache is the go-control-plane cache the ADS server answers from.
// go-control-plane's SnapshotCache marshals every resource again for every
// response and resends every resource of a changed type; this one sends
// the bytes of shared Sets, serialized once, and for the types that are
// not state of the world in SotW (EDS, RDS) only the resources that
// changed, as the protocol allows and Istio does: an endpoint change then
// costs each proxy one load assignment, not all of them.
//
// A request naming resources is answered with those it names, as
// go-control-plane's cache does with ads=false: gRPC clients ask for one
// listener and the clusters they route to, not for every resource.
//
// For SotW it keeps what each stream was sent itself (streamState: the
// type configuration and subscription of the last response actually
// sent), rather than a name -> version map per stream and type in the
// subscription's returned resources: with shared sets, what changed
// between two configurations is computed once for all the proxies that
// share them (diffs), and a push costs each proxy the changes, not a map
// of its thousand load assignments.
type configCache struct {
	flow *flow
	// streamOf names the stream a SotW request came on (the server
	// learns it from the callback that precedes CreateWatch).
	streamOf func(*discoveryv3.DiscoveryRequest) (int64, bool)
	mu       sync.Mutex
	nodes    map[string]*nodeEntry
	diffs    diffCache
}

type nodeEntry struct {
	mu    sync.Mutex
	cfg   *nodeConfig // nil until the node's first generation
	sotw  map[*sotwWatch]struct{}
	delta map[*deltaWatch]struct{}
	// streams are the node's SotW streams, by id (usually one).
	streams map[int64]*streamState
}

// streamState is what a SotW stream was sent, by type.
type streamState struct {
	sent map[string]*sentState
	// version is the type version of the last response sent, whether or
	// not accepted (a NACK of it waits for the next one).
	version map[string]string
}

// sentState: after the response, the client has every subscribed resource
// at its version in tc.
type sentState struct {
	tc       *typeConfig
	wildcard bool
	subs     map[string]struct{} // the subscription it was sent for
}

// covers reports whether the client was sent name.
func (st *sentState) covers(name string) bool {
	if st.wildcard {
		return true
	}
	_, ok := st.subs[name]
	return ok
}

// nodeConfig is what one node should have.
type nodeConfig struct {
	types map[string]*typeConfig
}

type typeConfig struct {
	version string
	sets    []*Set
}

func (tc *typeConfig) get(name string) *Resource {
	for _, s := range tc.sets {
		if r := s.get(name); r != nil {
			return r
		}
	}
	return nil
}

func (tc *typeConfig) len() int {
	n := 0
	for _, s := range tc.sets {
		n += len(s.items)
	}
	return n
}

// typ returns a type's configuration; an empty one for a type the node has
// none of, once it has a configuration at all.
func (nc *nodeConfig) typ(t string) *typeConfig {
	if tc := nc.types[t]; tc != nil {
		return tc
	}
	return &typeConfig{}
}

type sotwWatch struct {
	req *discoveryv3.DiscoveryRequest
	sub cachev3.Subscription
	ch  chan cachev3.Response
	st  *streamState
	// known is the version the client has: a configuration of another
	// version is sent.
	known string
	// resend sends every subscribed resource: the client rejected the
	// last response, so what it was sent says nothing of what it has.
	resend bool
}

type deltaWatch struct {
	req *discoveryv3.DeltaDiscoveryRequest
	sub cachev3.Subscription
	ch  chan cachev3.DeltaResponse
}

func newConfigCache(f *flow) *configCache {
	return &configCache{flow: f, nodes: map[string]*nodeEntry{}, diffs: diffCache{m: map[string][]string{}}}
}

func (c *configCache) entry(id string) *nodeEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	ne := c.nodes[id]
	if ne == nil {
		ne = &nodeEntry{sotw: map[*sotwWatch]struct{}{}, delta: map[*deltaWatch]struct{}{}, streams: map[int64]*streamState{}}
		c.nodes[id] = ne
	}
	return ne
}

func (c *configCache) lookup(id string) *nodeEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// clear forgets a node (its last stream closed).
func (c *configCache) clear(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, id)
}

// newPush drops the diffs between the sets of earlier pushes.
func (c *configCache) newPush() { c.diffs.reset() }

// dropStream forgets a closed stream.
func (c *configCache) dropStream(node string, id int64) {
	if ne := c.lookup(node); ne != nil {
		ne.mu.Lock()
		delete(ne.streams, id)
		ne.mu.Unlock()
	}
}

func newStreamState() *streamState {
	return &streamState{sent: map[string]*sentState{}, version: map[string]string{}}
}

// stream returns the state of the stream req came on; called with ne.mu
// held. Requests the server did not tell of (none should be) share one
// state per node: a fresh state per request would answer every ACK with a
// full response, and that with another ACK.
func (c *configCache) stream(ne *nodeEntry, req *discoveryv3.DiscoveryRequest) *streamState {
	id, ok := int64(0), false
	if c.streamOf != nil {
		id, ok = c.streamOf(req)
	}
	if !ok {
		id = -1 // go-control-plane numbers streams from 1
	}
	st := ne.streams[id]
	if st == nil {
		st = newStreamState()
		ne.streams[id] = st
	}
	return st
}

// set installs a node's configuration and answers the watches it changes.
func (c *configCache) set(id string, cfg *nodeConfig) {
	ne := c.entry(id)
	ne.mu.Lock()
	defer ne.mu.Unlock()
	ne.cfg = cfg
	for w := range ne.sotw {
		if tc := cfg.typ(w.req.GetTypeUrl()); tc.version != w.known {
			c.respond(ne, w, tc)
			delete(ne.sotw, w)
		}
	}
	for w := range ne.delta {
		if resp := deltaFor(c.flow, w, cfg.typ(w.req.GetTypeUrl())); resp != nil {
			w.ch <- resp
			delete(ne.delta, w)
		}
	}
}

// CreateWatch answers a SotW request now when the node's configuration
// differs from what the client has, else when it next changes.
func (c *configCache) CreateWatch(req *discoveryv3.DiscoveryRequest, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	ne := c.entry(req.GetNode().GetId())
	ne.mu.Lock()
	defer ne.mu.Unlock()
	t := req.GetTypeUrl()
	st := c.stream(ne, req)
	w := &sotwWatch{req: req, sub: sub, ch: ch, st: st, known: req.GetVersionInfo()}
	if req.GetErrorDetail() != nil {
		// A NACK names the last version the client accepted. Sending the
		// version it rejected again would only be rejected again: wait
		// for the next one.
		w.resend = true
		if ne.cfg != nil && st.version[t] == ne.cfg.typ(t).version {
			w.known = st.version[t]
		}
	} else if prev := st.sent[t]; prev != nil && prev.tc.version != req.GetVersionInfo() {
		// The client does not have what the stream last sent (a response
		// it did not get, a new stream with an old version): assume
		// nothing.
		delete(st.sent, t)
	}
	if ne.cfg != nil {
		if tc := ne.cfg.typ(t); tc.version != w.known || (!w.resend && unsent(st.sent[t], tc, sub)) {
			c.respond(ne, w, tc)
			return func() {}, nil
		}
	}
	ne.sotw[w] = struct{}{}
	return func() {
		ne.mu.Lock()
		delete(ne.sotw, w)
		ne.mu.Unlock()
	}, nil
}

// unsent reports whether the stream lacks a subscribed resource that
// exists (a new subscription, a new stream), which is answered even when
// the versions agree.
func unsent(prev *sentState, tc *typeConfig, sub cachev3.Subscription) bool {
	if sub.IsWildcard() {
		if prev != nil && prev.wildcard {
			return false
		}
		for _, s := range tc.sets {
			for _, r := range s.items {
				if prev == nil || !prev.covers(r.Name) {
					return true
				}
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if (prev == nil || !prev.covers(name)) && tc.get(name) != nil {
			return true
		}
	}
	return false
}

// respond sends a SotW response; called with ne.mu held. The response
// channel never blocks: go-control-plane gives it room for one response
// per type, and a watch is answered once.
func (c *configCache) respond(ne *nodeEntry, w *sotwWatch, tc *typeConfig) {
	t := w.req.GetTypeUrl()
	st := w.st
	prev := st.sent[t]
	wildcard := w.sub.IsWildcard()
	subs := w.sub.SubscribedResources()
	wanted := func(name string) bool {
		if wildcard {
			return true
		}
		_, ok := subs[name]
		return ok
	}
	var out []*anypb.Any
	switch {
	case cachev3.ResourceRequiresFullStateInSotw(t) || w.resend || prev == nil:
		out = make([]*anypb.Any, 0, tc.len())
		for _, s := range tc.sets {
			for _, r := range s.items {
				if wanted(r.Name) {
					out = append(out, r.Any)
				}
			}
		}
	case wildcard == prev.wildcard && (wildcard || sameKeys(subs, prev.subs)):
		// The usual case: same subscription, so what changed between the
		// two configurations, computed once for all proxies sharing them.
		for _, name := range c.diffs.changed(prev.tc, tc) {
			if wanted(name) {
				out = append(out, tc.get(name).Any)
			}
		}
	default:
		for _, s := range tc.sets {
			for _, r := range s.items {
				if !wanted(r.Name) {
					continue
				}
				// A changed type may leave this stream's resources as they
				// were: then the response carries none, only the version.
				if old := prev.tc.get(r.Name); old == nil || old.sum != r.sum || !prev.covers(r.Name) {
					out = append(out, r.Any)
				}
			}
		}
	}
	w.ch <- &sotwResponse{req: w.req, resp: &discoveryv3.DiscoveryResponse{VersionInfo: tc.version, Resources: out, TypeUrl: t},
		admit: admission(c.flow, w.req.GetNode().GetId(), out),
		sent: func() {
			// What the client has from now on, recorded when the response
			// is actually sent: go-control-plane drops a response that a
			// new request of its type overtakes.
			ne.mu.Lock()
			st.sent[t] = &sentState{tc: tc, wildcard: wildcard, subs: subs}
			st.version[t] = tc.version
			ne.mu.Unlock()
		}}
}

func sameKeys(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// diffCache holds what changed between two type configurations, by the
// sets they consist of: the proxies that share sets share the diff.
type diffCache struct {
	mu sync.Mutex
	m  map[string][]string
}

func (d *diffCache) reset() {
	d.mu.Lock()
	d.m = map[string][]string{}
	d.mu.Unlock()
}

// changed lists the names of to whose resource is new or different in to.
func (d *diffCache) changed(from, to *typeConfig) []string {
	var b []byte
	for _, s := range from.sets {
		b = strconv.AppendUint(b, s.id, 36)
		b = append(b, ',')
	}
	b = append(b, '>')
	for _, s := range to.sets {
		b = strconv.AppendUint(b, s.id, 36)
		b = append(b, ',')
	}
	key := string(b)
	d.mu.Lock()
	names, ok := d.m[key]
	d.mu.Unlock()
	if ok {
		return names
	}
	for _, s := range to.sets {
		if slices.Contains(from.sets, s) {
			continue
		}
		for _, r := range s.items {
			if old := from.get(r.Name); old == nil || old.sum != r.sum {
				names = append(names, r.Name)
			}
		}
	}
	d.mu.Lock()
	d.m[key] = names
	d.mu.Unlock()
	return names
}

// admission returns the wait for room in the flow for these resources,
// run when the server is about to serialize them.
func admission(f *flow, node string, rs []*anypb.Any) func() {
	var size int64
	for _, a := range rs {
		size += int64(len(a.Value)) + 64 // Any framing and type URL, roughly
	}
	var once sync.Once
	return func() { once.Do(func() { f.admit(node, size) }) }
}

// CreateDeltaWatch answers a delta request with what changed, now or when
// the configuration next changes; as go-control-plane's cache does, the
// first request of a wildcard subscription is answered even when empty.
func (c *configCache) CreateDeltaWatch(req *discoveryv3.DeltaDiscoveryRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	ne := c.entry(req.GetNode().GetId())
	ne.mu.Lock()
	defer ne.mu.Unlock()
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	if ne.cfg != nil {
		if resp := deltaFor(c.flow, w, ne.cfg.typ(req.GetTypeUrl())); resp != nil {
			ch <- resp
			return func() {}, nil
		}
	}
	ne.delta[w] = struct{}{}
	return func() {
		ne.mu.Lock()
		delete(ne.delta, w)
		ne.mu.Unlock()
	}, nil
}

// deltaFor is go-control-plane's createDeltaResponse over shared sets; nil
// when there is nothing to send.
func deltaFor(f *flow, w *deltaWatch, tc *typeConfig) *deltaResponse {
	returned := w.sub.ReturnedResources()
	var res []*discoveryv3.Resource
	var removed []string
	var next map[string]string
	add := func(r *Resource) {
		res = append(res, &discoveryv3.Resource{Name: r.Name, Version: r.Version, Resource: r.Any})
	}
	if w.sub.IsWildcard() {
		next = make(map[string]string, tc.len())
		for _, s := range tc.sets {
			for _, r := range s.items {
				next[r.Name] = r.Version
				if returned[r.Name] != r.Version {
					add(r)
				}
			}
		}
		for name := range returned {
			if _, ok := next[name]; !ok {
				removed = append(removed, name)
			}
		}
	} else {
		next = make(map[string]string, len(w.sub.SubscribedResources()))
		for name := range w.sub.SubscribedResources() {
			prev, found := returned[name]
			if r := tc.get(name); r != nil {
				next[name] = r.Version
				if prev != r.Version {
					add(r)
				}
			} else if found {
				removed = append(removed, name)
			}
		}
		slices.SortFunc(res, func(a, b *discoveryv3.Resource) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.Sort(removed)
	if len(res) == 0 && len(removed) == 0 && !(w.sub.IsWildcard() && w.req.GetResponseNonce() == "") {
		return nil
	}
	anys := make([]*anypb.Any, len(res))
	for i, r := range res {
		anys[i] = r.Resource
	}
	return &deltaResponse{req: w.req, version: tc.version, next: next, resp: &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: tc.version, Resources: res, RemovedResources: removed, TypeUrl: w.req.GetTypeUrl(),
	}, admit: admission(f, w.req.GetNode().GetId(), anys)}
}

// Fetch is REST xDS, which the server does not offer.
func (c *configCache) Fetch(context.Context, *discoveryv3.DiscoveryRequest) (cachev3.Response, error) {
	return nil, errors.New("REST xDS is not served: use ADS")
}

// sotwResponse is a response built from shared, already serialized
// resources.
type sotwResponse struct {
	req   *discoveryv3.DiscoveryRequest
	resp  *discoveryv3.DiscoveryResponse
	admit func()
	sent  func()
	once  sync.Once
}

// GetDiscoveryResponse is called by the stream right before it serializes
// the response: where it waits for room in the flow, and records what the
// client is sent.
func (r *sotwResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	r.once.Do(func() {
		r.admit()
		r.sent()
	})
	return r.resp, nil
}
func (r *sotwResponse) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }
func (r *sotwResponse) GetVersion() (string, error)               { return r.resp.GetVersionInfo(), nil }
func (r *sotwResponse) GetResponseVersion() string                { return r.resp.GetVersionInfo() }
func (r *sotwResponse) GetReturnedResources() map[string]string   { return nil } // see streamState
func (r *sotwResponse) GetContext() context.Context               { return context.Background() }

type deltaResponse struct {
	req     *discoveryv3.DeltaDiscoveryRequest
	resp    *discoveryv3.DeltaDiscoveryResponse
	version string
	next    map[string]string
	admit   func()
}

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	r.admit()
	return r.resp, nil
}
func (r *deltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                          { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string                { return r.next }
func (r *deltaResponse) GetReturnedResources() map[string]string             { return r.next }
func (r *deltaResponse) GetContext() context.Context                         { return context.Background() }
