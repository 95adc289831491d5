package controlplane

import (
	"maps"
	"slices"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/xds/server"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// views shares translation work between the proxies of a push. Sidecars
// are mostly replicas: those with the same translate.ViewKey (namespace,
// outbound settings, the selectors their labels match) get the same
// outbound listeners, routes, clusters and endpoints. Each push builds the
// translator input once, translates and serializes each view's outbound
// part once, and adds each proxy's small inbound part to it, instead of
// translating 1000 proxies' full views one by one. The result is what
// translate.Translate gives for each proxy (TestGenerateEqualsTranslate,
// and the translate tests for the split itself).
type views struct {
	mu        sync.Mutex
	built     bool
	push      uint64
	in        translate.Input
	selectors []map[string]string
	byKey     map[string]*view
	// interner serializes once what views share: translate.Shared makes
	// the views of a push share their clusters and load assignments.
	interner *server.Interner

	// own holds the proxies' own parts used since the last push started;
	// ownPrev those of the push before, which proxies still connected
	// carry over: the others are let go.
	ownMu        sync.Mutex
	own, ownPrev map[*corev3.Node]*own
}

// view is one shared outbound part.
type view struct {
	ready chan struct{} // closed once built
	// listeners are the outbound listeners, whose addresses inbound
	// listeners must not take.
	listeners []*listenerv3.Listener
	sets      server.Config
	err       error
	// warnings name configuration the translator left out for this view.
	warnings []string
}

// Generate implements server.Generator.
func (cp *ControlPlane) Generate(node *corev3.Node, push uint64) (server.Config, error) {
	o := cp.views.proxy(node, cp.opts.Mesh)
	if o.err != nil {
		return nil, o.err
	}
	p := o.p
	v, in := cp.views.get(cp, p, push)
	if v.err != nil {
		// The error of this proxy, named as Translate names it.
		_, err := translate.TranslateOutbound(in, p)
		if err == nil {
			err = v.err
		}
		return nil, err
	}
	own, err := o.inbound(v, in)
	if err != nil {
		return nil, err
	}
	cfg := make(server.Config, len(v.sets))
	for t, sets := range v.sets {
		cfg[t] = sets
	}
	for t, set := range own {
		// Clipped: appending must not write into the shared slice.
		cfg[t] = append(slices.Clip(cfg[t]), set)
	}
	if p.MTLS && cp.ca != nil {
		set, err := cp.rootSecret()
		if err != nil {
			return nil, err
		}
		cfg[resourcev3.SecretType] = []*server.Set{set}
	}
	return cfg, nil
}

// own is what belongs to one proxy: its description and its inbound
// part, kept while its node (immutable for a stream) and its view's
// outbound listeners stay the same, so that a push does not translate
// and serialize a thousand unchanged inbound listeners again.
type own struct {
	p   translate.Proxy
	err error

	mu        sync.Mutex
	listeners uint64 // fingerprint of the outbound listeners sets was built with
	// security are the policies sets was built with; the store shares
	// unchanged objects between snapshots, so equal slices mean no change.
	security [4][]*config.Object
	jwks     map[string]string
	sets     map[resourcev3.Type]*server.Set
}

func securityOf(in translate.Input) [4][]*config.Object {
	return [4][]*config.Object{in.PeerAuthentications, in.RequestAuthentications, in.AuthorizationPolicies, in.Telemetries}
}

// proxy returns the node's own part, kept from this push or the one before.
func (vs *views) proxy(node *corev3.Node, mesh translate.Mesh) *own {
	vs.ownMu.Lock()
	defer vs.ownMu.Unlock()
	if o := vs.own[node]; o != nil {
		return o
	}
	o := vs.ownPrev[node]
	if o == nil {
		o = &own{}
		o.p, o.err = ProxyFromNode(node, mesh)
	}
	if vs.own == nil {
		vs.own = map[*corev3.Node]*own{}
	}
	vs.own[node] = o
	return o
}

func (o *own) inbound(v *view, in translate.Input) (map[resourcev3.Type]*server.Set, error) {
	fp := v.sets[resourcev3.ListenerType][0].Fingerprint()
	sec := securityOf(in)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sets != nil && o.listeners == fp && sameSecurity(o.security, sec) && maps.Equal(o.jwks, in.JWKS) {
		return o.sets, nil
	}
	res, err := translate.TranslateInbound(in, &translate.Resources{Listeners: v.listeners}, o.p)
	if err != nil {
		return nil, err
	}
	sets := map[resourcev3.Type]*server.Set{}
	for t, rs := range res.ByType() {
		if len(rs) == 0 {
			continue
		}
		if sets[t], err = server.NewSet(t, rs); err != nil {
			return nil, err
		}
	}
	o.sets, o.listeners, o.security, o.jwks = sets, fp, sec, in.JWKS
	return sets, nil
}

// get returns p's view for a push, building the push's input on its first
// call and the view on the first call for its key; concurrent callers wait
// for the same build. A call for an older push is served from the newer
// input: the server pushes again after every change.
func (vs *views) get(cp *ControlPlane, p translate.Proxy, push uint64) (*view, translate.Input) {
	vs.mu.Lock()
	if !vs.built || push > vs.push {
		vs.renew(cp.input())
		vs.built, vs.push = true, push
	}
	in, interner := vs.in, vs.interner
	key := translate.ViewKey(p, vs.selectors)
	v := vs.byKey[key]
	if v != nil {
		vs.mu.Unlock()
		<-v.ready
		return v, in
	}
	v = &view{ready: make(chan struct{})}
	vs.byKey[key] = v
	vs.mu.Unlock()
	defer close(v.ready)
	v.build(in, interner, p)
	return v, in
}

// renew starts a push from in, keeping what is still valid: the views
// themselves when nothing changed (a push for a health check that changed
// nothing), else, with the same registry (a routing change), the
// clusters and load assignments translated and serialized before.
func (vs *views) renew(in translate.Input) {
	same := vs.built && in.Registry == vs.in.Registry
	if same && slices.Equal(in.VirtualServices, vs.in.VirtualServices) &&
		slices.Equal(in.DestinationRules, vs.in.DestinationRules) && slices.Equal(in.Gateways, vs.in.Gateways) &&
		sameSecurity(securityOf(in), securityOf(vs.in)) && maps.Equal(in.JWKS, vs.in.JWKS) {
		return
	}
	if same {
		in.Shared = vs.in.Shared
		vs.interner = vs.interner.Next()
	} else {
		in.Shared = translate.NewShared()
		vs.interner = server.NewInterner()
	}
	vs.in = in
	vs.selectors = translate.ViewSelectors(in)
	vs.byKey = map[string]*view{}
	vs.ownMu.Lock()
	vs.own, vs.ownPrev = map[*corev3.Node]*own{}, vs.own
	vs.ownMu.Unlock()
}

// build translates and serializes the outbound part for p's key, from a
// copy of p without what the key leaves out, so that nothing of this
// proxy's own leaks into what others get.
func (v *view) build(in translate.Input, interner *server.Interner, p translate.Proxy) {
	p.ID, p.ServiceAccount, p.Inbound = "", "", nil
	if p.Type == translate.Router {
		p.IPs = p.IPs[:min(len(p.IPs), 1)]
	} else {
		p.IPs = nil
	}
	out, err := translate.TranslateOutbound(in, p)
	if err != nil {
		v.err = err
		return
	}
	v.listeners = out.Listeners
	v.warnings = out.Warnings
	v.sets = server.Config{}
	for t, rs := range out.ByType() {
		set, err := interner.NewSet(t, rs)
		if err != nil {
			v.err = err
			return
		}
		v.sets[t] = []*server.Set{set}
	}
	// Every type, even empty, so that each proxy's configuration has the
	// same shape.
	for _, t := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		if v.sets[t] == nil {
			v.sets[t] = []*server.Set{server.MustSet(t)}
		}
	}
}

// Warnings lists, without duplicates and sorted, what the current views
// could not translate (e.g. a VirtualService mirror the proxy cannot carry
// out yet), so operators see it in `amime proxy-status`.
func (cp *ControlPlane) Warnings() []string {
	vs := &cp.views
	vs.mu.Lock()
	views := make([]*view, 0, len(vs.byKey))
	for _, v := range vs.byKey {
		views = append(views, v)
	}
	vs.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, v := range views {
		select {
		case <-v.ready:
		default:
			continue // still being built
		}
		for _, w := range v.warnings {
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	sort.Strings(out)
	return out
}

func sameSecurity(a, b [4][]*config.Object) bool {
	for i := range a {
		if !slices.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
