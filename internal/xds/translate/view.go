package translate

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Sharing work between proxies. A mesh's sidecars are mostly replicas:
// proxies of one namespace with the same outbound settings get the same
// outbound listeners, routes, clusters and endpoints, and differ only in
// their inbound side (their own address and ports). A control plane serving
// many proxies translates the outbound part once per ViewKey and adds each
// proxy's inbound part:
//
//	Translate(in, p) == Merge(out, TranslateInbound(in, out, p))
//	    where out = TranslateOutbound(in, p)
//
// and TranslateOutbound gives the same result for every proxy with the same
// ViewKey (for one Input and Mesh).

// ViewSelectors lists the label selectors of in that a proxy's labels are
// matched against (VirtualService sourceLabels, Gateway selectors): the
// only way labels shape a view. Sorted, without duplicates.
func ViewSelectors(in Input) []map[string]string {
	seen := map[string]map[string]string{}
	add := func(sel map[string]string) {
		if len(sel) > 0 {
			seen[selectorString(sel)] = sel
		}
	}
	for _, o := range in.VirtualServices {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		for _, h := range vs.GetHttp() {
			for _, m := range h.GetMatch() {
				add(m.GetSourceLabels())
			}
		}
		for _, t := range vs.GetTcp() {
			for _, m := range t.GetMatch() {
				add(m.GetSourceLabels())
			}
		}
	}
	for _, o := range in.Gateways {
		if gw, ok := o.Spec.(*networking.Gateway); ok {
			add(gw.GetSelector())
		}
	}
	// Security policies shape gateways' listeners: their selectors, and
	// the gateway-name label a Gateway targetRef binds.
	addPolicy := func(sel *typev1beta1.WorkloadSelector, refs []*typev1beta1.PolicyTargetReference) {
		add(sel.GetMatchLabels())
		for _, r := range refs {
			if r.GetKind() == "Gateway" {
				add(map[string]string{gatewayNameLabel: r.GetName()})
			}
		}
	}
	for _, o := range in.AuthorizationPolicies {
		if ap, ok := o.Spec.(*security.AuthorizationPolicy); ok {
			addPolicy(ap.GetSelector(), append(slices.Clone(ap.GetTargetRefs()), ap.GetTargetRef()))
		}
	}
	for _, o := range in.RequestAuthentications {
		if ra, ok := o.Spec.(*security.RequestAuthentication); ok {
			addPolicy(ra.GetSelector(), append(slices.Clone(ra.GetTargetRefs()), ra.GetTargetRef()))
		}
	}
	for _, o := range in.Telemetries {
		if t, ok := o.Spec.(*telemetry.Telemetry); ok {
			add(t.GetSelector().GetMatchLabels())
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]map[string]string, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	return out
}

func selectorString(sel map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(sel) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(sel[k])
		b.WriteByte(0)
	}
	return b.String()
}

// ViewKey identifies the proxies whose TranslateOutbound results are equal
// (for one Input, whose ViewSelectors are selectors, and one Mesh): same
// type, namespace and outbound settings, the same answer for every
// selector and, for gateways, whose listeners bind it, the same first IP.
func ViewKey(p Proxy, selectors []map[string]string) string {
	var b strings.Builder
	b.WriteString(string(rune('0' + p.Type)))
	if p.MTLS {
		b.WriteByte('m')
	}
	b.WriteByte('|')
	b.WriteString(p.Namespace)
	b.WriteByte('|')
	b.WriteString(p.Outbound.HTTPProxy)
	b.WriteByte('|')
	b.WriteString(p.Outbound.BindIP)
	b.WriteByte('|')
	if p.Type == Router && len(p.IPs) > 0 {
		b.WriteString(p.IPs[0])
	}
	b.WriteByte('|')
	for _, sel := range selectors {
		if hasLabels(p.Labels, sel) {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

// TranslateOutbound is Translate without a sidecar's inbound listeners and
// clusters: the part of its view that the proxies of one ViewKey share.
// For gateways and proxyless gRPC it is the whole view.
func TranslateOutbound(in Input, proxy Proxy) (*Resources, error) {
	return translate(in, proxy, true)
}

// TranslateInbound is the rest of a sidecar's view: its inbound listeners
// and clusters, shaped by in's security policies. outbound is the proxy's
// TranslateOutbound result, whose
// listeners keep their addresses when an inbound port collides with one, as
// in Translate. Other proxy types have no inbound part. It fails, as
// Translate does, when the proxy description is unusable.
func TranslateInbound(in Input, outbound *Resources, proxy Proxy) (*Resources, error) {
	if err := checkProxy(&proxy); err != nil {
		return nil, err
	}
	if proxy.Type != Sidecar {
		return &Resources{}, nil
	}
	// Only the security policies: routing does not shape the inbound side.
	b := newBuilder(Input{
		PeerAuthentications:    in.PeerAuthentications,
		RequestAuthentications: in.RequestAuthentications,
		AuthorizationPolicies:  in.AuthorizationPolicies,
		Telemetries:            in.Telemetries,
		JWKS:                   in.JWKS,
	}, &proxy)
	for _, l := range outbound.Listeners {
		sa := l.GetAddress().GetSocketAddress()
		if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			b.listened[netip.AddrPortFrom(ip, uint16(sa.GetPortValue())).String()] = l.GetName()
		}
	}
	b.inboundClusters()
	b.inboundListeners()
	return b.finish(), nil
}

// Merge lists the resources of both parts as Translate does: sorted by
// name, warnings sorted without duplicates. The messages are shared.
func Merge(a, b *Resources) *Resources {
	byName := func(x, y string) int { return strings.Compare(x, y) }
	r := &Resources{
		Listeners: slices.Concat(a.Listeners, b.Listeners),
		Routes:    slices.Concat(a.Routes, b.Routes),
		Clusters:  slices.Concat(a.Clusters, b.Clusters),
		Endpoints: slices.Concat(a.Endpoints, b.Endpoints),
		Warnings:  slices.Concat(a.Warnings, b.Warnings),
	}
	slices.SortFunc(r.Listeners, func(x, y *listenerv3.Listener) int { return byName(x.GetName(), y.GetName()) })
	slices.SortFunc(r.Routes, func(x, y *routev3.RouteConfiguration) int { return byName(x.GetName(), y.GetName()) })
	slices.SortFunc(r.Clusters, func(x, y *clusterv3.Cluster) int { return byName(x.GetName(), y.GetName()) })
	slices.SortFunc(r.Endpoints, func(x, y *endpointv3.ClusterLoadAssignment) int {
		return byName(x.GetClusterName(), y.GetClusterName())
	})
	slices.Sort(r.Warnings)
	r.Warnings = slices.Compact(r.Warnings)
	return r
}

// Shared lets the translations of one Input share the clusters and load
// assignments that depend on the proxy only through its type (a service's
// clusters follow the service, the DestinationRule that applies and the
// Mesh): the first translation builds them, the others reuse the same
// messages, so a control plane serializing many views serializes them
// once. Use one Shared per Registry and Mesh: what it holds is keyed by
// service and DestinationRule object, so it stays valid for a later Input
// with the same Registry (a routing change). Input.Shared nil shares
// nothing. Safe for concurrent translations.
type Shared struct {
	mu      sync.Mutex
	entries map[sharedKey]*sharedEntry
	// checked holds the result of compiling routes, by their serialized
	// form: views of different namespaces mostly translate a
	// VirtualService to the same routes, and compiling them (regexes) is
	// the costly part.
	checked map[string]error
}

// NewShared returns an empty Shared.
func NewShared() *Shared {
	return &Shared{entries: map[sharedKey]*sharedEntry{}, checked: map[string]error{}}
}

// checkRoutes is checkRoute(routes...), once per distinct routes.
func (sh *Shared) checkRoutes(routes []*routev3.Route) error {
	if sh == nil {
		return checkRoute(routes...)
	}
	var key []byte
	opts := proto.MarshalOptions{Deterministic: true}
	for _, r := range routes {
		b, err := opts.Marshal(r)
		if err != nil {
			return checkRoute(routes...)
		}
		key = protowire.AppendBytes(key, b)
	}
	sh.mu.Lock()
	err, ok := sh.checked[string(key)]
	sh.mu.Unlock()
	if ok {
		return err
	}
	err = checkRoute(routes...)
	sh.mu.Lock()
	sh.checked[string(key)] = err
	sh.mu.Unlock()
	return err
}

type sharedKey struct {
	typ  ProxyType
	mtls bool              // clusters of proxies with a certificate originate mTLS
	svc  *registry.Service // nil: the catch-all clusters
	dr   *config.Object
}

type sharedEntry struct {
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	warnings  []string
}

// shared runs build, which appends a service's clusters and assignments,
// or replays what an earlier translation of the same key appended.
func (b *builder) shared(svc *registry.Service, dr *drEntry, build func()) {
	sh := b.in.Shared
	if sh == nil {
		build()
		return
	}
	key := sharedKey{typ: b.proxy.Type, mtls: b.proxy.MTLS, svc: svc}
	if dr != nil {
		key.dr = dr.obj
	}
	sh.mu.Lock()
	e := sh.entries[key]
	sh.mu.Unlock()
	nc, ne := len(b.res.Clusters), len(b.res.Endpoints)
	if e == nil {
		var sink []string
		b.warnSink = &sink
		build()
		b.warnSink = nil
		mine := &sharedEntry{clusters: slices.Clone(b.res.Clusters[nc:]), endpoints: slices.Clone(b.res.Endpoints[ne:]), warnings: sink}
		sh.mu.Lock()
		if e = sh.entries[key]; e == nil {
			e = mine
			sh.entries[key] = e
		}
		sh.mu.Unlock()
		if e == mine {
			return
		}
		// Built concurrently by another translation: use its messages.
	}
	b.res.Clusters = append(b.res.Clusters[:nc], e.clusters...)
	b.res.Endpoints = append(b.res.Endpoints[:ne], e.endpoints...)
	for _, w := range e.warnings {
		b.warnings[w] = struct{}{}
	}
}
