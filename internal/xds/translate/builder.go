package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Well-known names, as Istio spells them.
const (
	BlackHoleCluster   = "BlackHoleCluster"
	PassthroughCluster = "PassthroughCluster"
	// HTTPProxyRoute names the route configuration of the HTTP_PROXY listener.
	HTTPProxyRoute = "http_proxy"
	meshGateway    = "mesh"
)

// OutboundCluster is Istio's outbound cluster name.
func OutboundCluster(port uint32, subset, host string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// InboundCluster is Istio's inbound cluster name.
func InboundCluster(port uint32) string {
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||"
}

func listenerName(ip string, port uint32) string {
	return ip + "_" + strconv.FormatUint(uint64(port), 10)
}

// vsEntry is a VirtualService with its hosts and gateways resolved.
type vsEntry struct {
	obj      *config.Object
	spec     *networking.VirtualService
	hosts    []string // FQDNs, lower-case
	gateways []string // "mesh" or "namespace/name"
}

type drEntry struct {
	obj  *config.Object
	spec *networking.DestinationRule
	host string
}

type routeKey struct {
	vs   *vsEntry
	port uint32
	gws  string
}

type builder struct {
	in    Input
	proxy *Proxy
	mesh  Mesh
	reg   *registry.Registry

	services []*registry.Service // visible from the proxy, by hostname
	vss      []*vsEntry          // visible, in Istio's precedence order
	drs      map[string]*drIndex // visible, by namespace

	// sidecar view: VirtualService per service hostname (nil: none)
	vsByHost map[string]*vsEntry
	routes   map[routeKey][]*routev3.Route
	origin   map[*routev3.Route]string // "http[i]" of a VirtualService route, for warnings

	defaultRetryPolicy *routev3.RetryPolicy
	defaultRetrySet    bool

	// outboundOnly leaves out a sidecar's inbound side (TranslateOutbound).
	outboundOnly bool
	// warnSink, when set, also receives warnings (see shared).
	warnSink *[]string

	res      Resources
	listened map[string]string // listener address -> name, to refuse clashes
	warnings map[string]struct{}
}

func newBuilder(in Input, p *Proxy) *builder {
	b := &builder{
		in: in, proxy: p, mesh: p.Mesh, reg: in.Registry,
		routes:   map[routeKey][]*routev3.Route{},
		drs:      map[string]*drIndex{},
		origin:   map[*routev3.Route]string{},
		listened: map[string]string{},
		warnings: map[string]struct{}{},
	}
	b.services = b.reg.VisibleServices(p.Namespace)
	for _, o := range precedence(in.VirtualServices, p.Namespace) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok || !registry.Visible(vs.GetExportTo(), o.Meta.Namespace, p.Namespace) {
			continue
		}
		e := &vsEntry{obj: o, spec: vs}
		for _, h := range vs.GetHosts() {
			e.hosts = append(e.hosts, b.resolveHost(h, o.Meta.Namespace))
		}
		e.gateways = b.resolveGateways(vs.GetGateways(), o.Meta.Namespace)
		if len(e.gateways) == 0 {
			e.gateways = []string{meshGateway}
		}
		if len(vs.GetTls()) > 0 && p.Type == Sidecar && slices.Contains(e.gateways, meshGateway) {
			// Gateways serve tls routes (gateway_tls.go); sidecars do not yet.
			b.warnf(o, "tls: not translated for sidecars yet (SNI routing of mesh traffic)")
		}
		b.vss = append(b.vss, e)
	}
	for _, o := range precedence(in.DestinationRules, p.Namespace) {
		dr, ok := o.Spec.(*networking.DestinationRule)
		if !ok || !registry.Visible(dr.GetExportTo(), o.Meta.Namespace, p.Namespace) {
			continue
		}
		e := &drEntry{obj: o, spec: dr, host: b.resolveHost(dr.GetHost(), o.Meta.Namespace)}
		idx := b.drs[o.Meta.Namespace]
		if idx == nil {
			idx = &drIndex{exact: map[string]*drEntry{}}
			b.drs[o.Meta.Namespace] = idx
		}
		if registry.IsWildcard(e.host) {
			idx.wildcards = append(idx.wildcards, e)
		} else if first, dup := idx.exact[e.host]; dup {
			b.warnf(o, "host %q already has DestinationRule %s (older): not merged yet; ignored", e.host, first.obj.Meta.Name)
		} else {
			idx.exact[e.host] = e
		}
	}
	if p.Type == Sidecar || p.Type == GRPC {
		b.indexSidecarVirtualServices()
	}
	return b
}

// precedence orders objects as Istio does for a proxy: those of the
// proxy's namespace first, then by age, namespace and name.
func precedence(in []*config.Object, ns string) []*config.Object {
	out := slices.Clone(in)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Meta, out[j].Meta
		if (a.Namespace == ns) != (b.Namespace == ns) {
			return a.Namespace == ns
		}
		if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
			return a.CreationTimestamp.Before(b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}

// indexSidecarVirtualServices picks, for each visible service, the
// VirtualService bound to the mesh that applies to it: an exact host
// match first, else the most specific wildcard; ties go by precedence.
func (b *builder) indexSidecarVirtualServices() {
	b.vsByHost = map[string]*vsEntry{}
	exact := map[string]*vsEntry{}
	type wildcard struct {
		pattern string
		vs      *vsEntry
	}
	var wildcards []wildcard
	for _, vs := range b.vss {
		if !slices.Contains(vs.gateways, meshGateway) {
			continue
		}
		for _, h := range vs.hosts {
			if registry.IsWildcard(h) {
				wildcards = append(wildcards, wildcard{h, vs})
			} else if _, taken := exact[h]; !taken {
				exact[h] = vs
			}
		}
	}
	// Longest (most specific) wildcard first; stable keeps precedence.
	sort.SliceStable(wildcards, func(i, j int) bool { return len(wildcards[i].pattern) > len(wildcards[j].pattern) })
	for _, svc := range b.services {
		if vs := exact[svc.Hostname]; vs != nil {
			b.vsByHost[svc.Hostname] = vs
			continue
		}
		for _, w := range wildcards {
			if registry.HostCovers(w.pattern, svc.Hostname) {
				b.vsByHost[svc.Hostname] = w.vs
				break
			}
		}
	}
}

// drIndex holds one namespace's DestinationRules.
type drIndex struct {
	exact     map[string]*drEntry
	wildcards []*drEntry // in precedence order
}

// destinationRule finds the rule for a host as Istio does: the proxy's
// namespace first, then the service's, then the root namespace; within a
// namespace an exact host beats the most specific wildcard.
func (b *builder) destinationRule(host, svcNS string) *drEntry {
	for _, ns := range []string{b.proxy.Namespace, svcNS, b.mesh.RootNamespace} {
		idx := b.drs[ns]
		if idx == nil {
			continue
		}
		if dr := idx.exact[host]; dr != nil {
			return dr
		}
		var best *drEntry
		for _, dr := range idx.wildcards {
			if registry.HostCovers(dr.host, host) && (best == nil || len(dr.host) > len(best.host)) {
				best = dr
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

func (b *builder) hasSubset(host, svcNS, subset string) bool {
	dr := b.destinationRule(host, svcNS)
	if dr == nil {
		return false
	}
	for _, s := range dr.spec.GetSubsets() {
		if s.GetName() == subset {
			return true
		}
	}
	return false
}

// resolveHost expands a short name relative to the object's namespace, as
// Istio's ResolveShortnameToFQDN: "reviews" -> "reviews.ns.svc.<suffix>";
// names with a dot, "*" and IPs stay as they are.
func (b *builder) resolveHost(h, ns string) string {
	h = strings.ToLower(h)
	if h == "" || h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h
	}
	return h + "." + ns + ".svc." + b.mesh.DomainSuffix
}

// resolveGateways qualifies gateway names with the object's namespace.
func (b *builder) resolveGateways(gws []string, ns string) []string {
	out := make([]string, 0, len(gws))
	for _, g := range gws {
		switch {
		case g == meshGateway:
		case strings.Contains(g, "/"):
		default:
			g = ns + "/" + g
		}
		out = append(out, g)
	}
	return out
}

// warnf records a warning about an object.
func (b *builder) warnf(o *config.Object, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if o != nil {
		msg = o.Kind + " " + o.Meta.Namespace + "/" + o.Meta.Name + ": " + msg
	}
	b.warnings[msg] = struct{}{}
	if b.warnSink != nil {
		*b.warnSink = append(*b.warnSink, msg)
	}
}

// claim reserves a listener address; false when another listener has it.
func (b *builder) claim(addr, name string) bool {
	if prev, ok := b.listened[addr]; ok {
		b.warnf(nil, "listener %s: address %s is already used by listener %s; skipped", name, addr, prev)
		return false
	}
	b.listened[addr] = name
	return true
}

func (b *builder) finish() *Resources {
	r := &b.res
	sort.Slice(r.Listeners, func(i, j int) bool { return r.Listeners[i].GetName() < r.Listeners[j].GetName() })
	sort.Slice(r.Routes, func(i, j int) bool { return r.Routes[i].GetName() < r.Routes[j].GetName() })
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].GetName() < r.Clusters[j].GetName() })
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].GetClusterName() < r.Endpoints[j].GetClusterName() })
	for _, w := range b.reg.Warnings() {
		b.warnings["registry: "+w] = struct{}{}
	}
	for w := range b.warnings {
		r.Warnings = append(r.Warnings, w)
	}
	sort.Strings(r.Warnings)
	return r
}
