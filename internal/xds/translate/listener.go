package translate

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/registry"
)

var routerFilter = mustAny(&routerv3.Router{})

// httpPort reports whether a service port is routed as HTTP. Ports of
// unknown protocol count as HTTP on the HTTP_PROXY listener: the
// application chose to send HTTP there (Istio would sniff them).
func httpPort(p registry.Port, viaHTTPProxy bool) bool {
	return p.Protocol.IsHTTP() || (viaHTTPProxy && p.Protocol == registry.Unsupported)
}

func (b *builder) buildSidecarListeners() {
	ob := b.proxy.Outbound
	if ob.HTTPProxy != "" {
		ap := netip.MustParseAddrPort(ob.HTTPProxy)
		name := listenerName(ap.Addr().String(), uint32(ap.Port()))
		if b.claim(ap.String(), name) {
			b.res.Routes = append(b.res.Routes, b.httpProxyRoute())
			b.res.Listeners = append(b.res.Listeners, b.httpListener(name, ap.Addr().String(), uint32(ap.Port()), corev3.TrafficDirection_OUTBOUND, HTTPProxyRoute, false))
		}
	}
	if ob.BindIP != "" {
		b.perPortListeners(ob.BindIP, ob.HTTPProxy != "")
	}
	if !b.outboundOnly {
		b.inboundListeners()
	}
}

// httpProxyRoute has one virtual host per visible HTTP service port.
// Clients put the port in Host unless it is 80, so "name:port" forms are
// always there and bare names only for port 80 (as Istio's route for
// HTTP_PROXY listeners); this also keeps the domains of one host's ports
// apart.
func (b *builder) httpProxyRoute() *routev3.RouteConfiguration {
	d := b.newDomains()
	rc := &routev3.RouteConfiguration{Name: HTTPProxyRoute, ValidateClusters: wrapperspb.Bool(false), MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	for _, svc := range b.services {
		for _, p := range svc.Ports {
			if !httpPort(p, true) {
				continue
			}
			domains := d.claim(svc, p.Number, true, p.Number == 80)
			if len(domains) == 0 {
				continue
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name: svc.Hostname + ":" + strconv.FormatUint(uint64(p.Number), 10), Domains: domains,
				Routes: b.sidecarRoutes(svc, p.Number), IncludeRequestAttemptCount: true,
			})
		}
	}
	rc.VirtualHosts = append(rc.VirtualHosts, b.catchAllVirtualHost())
	return rc
}

// sidecarRoutes are the routes of one service port: its VirtualService's,
// or the default route when it has none that apply (as Istio).
func (b *builder) sidecarRoutes(svc *registry.Service, port uint32) []*routev3.Route {
	if vs := b.vsByHost[svc.Hostname]; vs != nil {
		if routes := b.httpRoutes(vs, port, []string{meshGateway}); len(routes) > 0 {
			return routes
		}
	}
	r := b.defaultRoute(OutboundCluster(port, "", svc.Hostname), svc.Hostname, port)
	// Istio's hashByService: the service's consistentHash, if any.
	if hp := b.serviceHashPolicy(svc.Hostname, svc.Namespace, "", port); hp != nil {
		r.GetRoute().HashPolicy = hp
	}
	return []*routev3.Route{r}
}

// perPortListeners binds one listener per visible service port on ip.
func (b *builder) perPortListeners(ip string, httpViaProxy bool) {
	type portGroup struct {
		http []*registry.Service
		tcp  []*registry.Service
	}
	groups := map[uint32]*portGroup{}
	var ports []uint32
	for _, svc := range b.services {
		for _, p := range svc.Ports {
			if p.Protocol == registry.UDP {
				continue
			}
			g := groups[p.Number]
			if g == nil {
				g = &portGroup{}
				groups[p.Number] = g
				ports = append(ports, p.Number)
			}
			if httpPort(p, false) {
				g.http = append(g.http, svc)
			} else {
				g.tcp = append(g.tcp, svc)
			}
		}
	}
	slices.Sort(ports)
	for _, port := range ports {
		g := groups[port]
		name := listenerName(ip, port)
		switch {
		case len(g.http) > 0 && !httpViaProxy:
			for _, s := range g.tcp {
				b.warnf(nil, "service %s port %d: TCP shares port %d with HTTP services on %s; not reachable there", s.Hostname, port, port, ip)
			}
			if !b.claim(netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String(), name) {
				continue
			}
			b.res.Routes = append(b.res.Routes, b.portRoute(port, g.http))
			b.res.Listeners = append(b.res.Listeners, b.httpListener(name, ip, port, corev3.TrafficDirection_OUTBOUND, strconv.FormatUint(uint64(port), 10), false))
		case len(g.tcp) > 0:
			// Without a VIP or SNI to tell them apart, the first service
			// (by hostname) owns the port.
			for _, s := range g.tcp[1:] {
				b.warnf(nil, "service %s port %d: port %d on %s already forwards to %s; not reachable there", s.Hostname, port, port, ip, g.tcp[0].Hostname)
			}
			if !b.claim(netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String(), name) {
				continue
			}
			b.res.Listeners = append(b.res.Listeners, b.tcpListener(name, ip, port, g.tcp[0]))
		}
	}
}

// portRoute is Istio's per-port outbound route: bare domains, the port is
// ignored in Host matching.
func (b *builder) portRoute(port uint32, svcs []*registry.Service) *routev3.RouteConfiguration {
	d := b.newDomains()
	rc := &routev3.RouteConfiguration{
		Name: strconv.FormatUint(uint64(port), 10), ValidateClusters: wrapperspb.Bool(false),
		MaxDirectResponseBodySizeBytes: maxDirectResponseBody, IgnorePortInHostMatching: true,
	}
	for _, svc := range svcs {
		domains := d.claim(svc, port, false, true)
		if len(domains) == 0 {
			continue
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name: svc.Hostname + ":" + strconv.FormatUint(uint64(port), 10), Domains: domains,
			Routes: b.sidecarRoutes(svc, port), IncludeRequestAttemptCount: true,
		})
	}
	rc.VirtualHosts = append(rc.VirtualHosts, b.catchAllVirtualHost())
	return rc
}

// domains hands out virtual host domains without duplicates (Envoy refuses
// a domain on two virtual hosts): the first claim wins, and a short alias
// never takes the name of another service (Istio's dedupeDomains).
type domains struct {
	b     *builder
	used  map[string]bool
	known map[string]bool // every service hostname
}

func (b *builder) newDomains() *domains {
	d := &domains{b: b, used: map[string]bool{}, known: make(map[string]bool, len(b.services))}
	for _, s := range b.services {
		d.known[s.Hostname] = true
	}
	return d
}

func (d *domains) claim(svc *registry.Service, port uint32, withPort, bare bool) []string {
	p := ":" + strconv.FormatUint(uint64(port), 10)
	var out []string
	add := func(h string, alias bool) {
		if alias && d.known[h] {
			return
		}
		for _, v := range [2]string{h, h + p} {
			if (v == h && !bare) || (v != h && !withPort) || d.used[v] {
				continue
			}
			d.used[v] = true
			out = append(out, v)
		}
	}
	add(svc.Hostname, false)
	for _, a := range d.b.aliases(svc.Hostname) {
		add(a, true)
	}
	for _, vip := range svc.Addresses {
		if ip, err := netip.ParseAddr(vip); err == nil {
			h := ip.String()
			if ip.Is6() {
				h = "[" + h + "]"
			}
			add(h, false)
		}
	}
	return out
}

// aliases are the short names a client in the proxy's namespace may use
// for a Kubernetes-style hostname name.ns.svc.<suffix> (Istio's
// GenerateAltVirtualHosts): name, name.ns.svc and name.ns from the same
// namespace; name.ns and name.ns.svc from another.
func (b *builder) aliases(host string) []string {
	suffix := ".svc." + b.mesh.DomainSuffix
	if !strings.HasSuffix(host, suffix) || registry.IsWildcard(host) {
		return nil
	}
	nameNS := strings.TrimSuffix(host, suffix)
	name, ns, ok := strings.Cut(nameNS, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return nil
	}
	if ns == b.proxy.Namespace {
		return []string{name, nameNS + ".svc", nameNS}
	}
	return []string{nameNS, nameNS + ".svc"}
}

// httpListener is a listener with an HTTP connection manager reading its
// routes over RDS.
func (b *builder) httpListener(name, ip string, port uint32, dir corev3.TrafficDirection, rds string, gateway bool) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix(dir, ip, port),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource, RouteConfigName: rds,
		}},
		// The fault filter before the router, as Istio orders them; it acts
		// only on routes whose VirtualService asks for a fault.
		HttpFilters: []*hcmv3.HttpFilter{faultHTTPFilter(),
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: copyAny(routerFilter)}}},
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	if gateway {
		// The edge is where the client address enters X-Forwarded-For.
		m.UseRemoteAddress = wrapperspb.Bool(true)
		// Gateways enforce the policies that select them (authentication
		// and authorization first, as Istio orders them).
		m.HttpFilters = append(b.securityHTTPFilters(port), m.HttpFilters...)
		b.applyTelemetry(m, modeClient|modeServer)
	} else {
		b.applyTelemetry(m, modeClient)
	}
	m.HttpFilters = append([]*hcmv3.HttpFilter{metadataExchangeFilter(modeClient)}, m.HttpFilters...)
	return listenerWith(name, ip, port, dir, "envoy.filters.network.http_connection_manager", mustAny(m))
}

func statPrefix(dir corev3.TrafficDirection, ip string, port uint32) string {
	prefix := "outbound_"
	if dir == corev3.TrafficDirection_INBOUND {
		prefix = "inbound_"
	}
	return prefix + listenerName(ip, port)
}

func listenerWith(name, ip string, port uint32, dir corev3.TrafficDirection, filter string, cfg *anypb.Any) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, port),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: filter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg},
		}}}},
	}
}

// tcpListener forwards a TCP service port, following the service's
// VirtualService tcp routes when one matches.
func (b *builder) tcpListener(name, ip string, port uint32, svc *registry.Service) *listenerv3.Listener {
	cluster := OutboundCluster(port, "", svc.Hostname)
	tp := &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
	if vs := b.vsByHost[svc.Hostname]; vs != nil {
		b.applyTCPRoute(tp, vs, port, []string{meshGateway})
	}
	return listenerWith(name, ip, port, corev3.TrafficDirection_OUTBOUND, "envoy.filters.network.tcp_proxy", mustAny(tp))
}

// applyTCPRoute uses the first tcp route whose match applies (Istio's
// buildSidecarOutboundTCPTLSFilterChainOpts for one service).
func (b *builder) applyTCPRoute(tp *tcpv3.TcpProxy, vs *vsEntry, port uint32, gws []string) {
	for i, r := range vs.spec.GetTcp() {
		if !b.tcpMatches(vs, i, r.GetMatch(), port, gws) || len(r.GetRoute()) == 0 {
			continue
		}
		path := "tcp[" + strconv.Itoa(i) + "]"
		dsts := r.GetRoute()
		if len(dsts) == 1 {
			tp.ClusterSpecifier = &tcpv3.TcpProxy_Cluster{Cluster: b.destinationCluster(vs, path+".route[0]", dsts[0].GetDestination(), port)}
			return
		}
		allZero := true
		for _, d := range dsts {
			allZero = allZero && d.GetWeight() == 0
		}
		wc := &tcpv3.TcpProxy_WeightedCluster{}
		for k, d := range dsts {
			w := uint32(max(d.GetWeight(), 0))
			if allZero {
				w = 1
			}
			if w == 0 {
				continue
			}
			wc.Clusters = append(wc.Clusters, &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
				Name: b.destinationCluster(vs, path+".route["+strconv.Itoa(k)+"]", d.GetDestination(), port), Weight: w,
			})
		}
		tp.ClusterSpecifier = &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
		return
	}
}

func (b *builder) tcpMatches(vs *vsEntry, i int, matches []*networking.L4MatchAttributes, port uint32, gws []string) bool {
	if len(matches) == 0 {
		return true
	}
	for j, m := range matches {
		if m.GetPort() != 0 && m.GetPort() != port {
			continue
		}
		if len(m.GetDestinationSubnets()) > 0 || m.GetSourceSubnet() != "" {
			b.warnf(vs.obj, "tcp[%d].match[%d]: destinationSubnets/sourceSubnet not translated yet; match ignored", i, j)
			continue
		}
		if b.sourceMatches(m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), vs.obj.Meta.Namespace, gws) {
			return true
		}
	}
	return false
}

// inboundListeners accept traffic for the proxy's own workload and hand it
// to the application through inbound|<port>||.
func (b *builder) inboundListeners() {
	ip := "0.0.0.0"
	if len(b.proxy.IPs) > 0 {
		ip = netip.MustParseAddr(b.proxy.IPs[0]).String()
	}
	for _, in := range b.proxy.Inbound {
		port := in.ListenPort
		if port == 0 {
			port = in.Port
		}
		name := listenerName(ip, port)
		if !b.claim(netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String(), name) {
			continue
		}
		cluster := InboundCluster(in.Port)
		target := in.TargetPort
		if target == 0 {
			target = in.Port
		}
		if !in.Protocol.IsHTTP() {
			tp := &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
			l := listenerWith(name, ip, port, corev3.TrafficDirection_INBOUND, "envoy.filters.network.tcp_proxy", mustAny(tp))
			// Authorization runs before the proxying filter.
			fc := l.FilterChains[0]
			fc.Filters = append(b.securityNetworkFilters(target), fc.Filters...)
			if b.inboundChains(l, target, false) {
				b.res.Listeners = append(b.res.Listeners, l)
			}
			continue
		}
		// Inline routes, as Istio: the inbound side has nothing to choose.
		rc := &routev3.RouteConfiguration{
			Name:             cluster,
			ValidateClusters: wrapperspb.Bool(false),
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "inbound|http|" + strconv.FormatUint(uint64(in.Port), 10), Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
						Timeout:          noTimeout,
						MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{
							MaxStreamDuration: noTimeout, GrpcTimeoutHeaderMax: noTimeout,
						},
					}},
				}},
			}},
		}
		m := &hcmv3.HttpConnectionManager{
			StatPrefix:     statPrefix(corev3.TrafficDirection_INBOUND, ip, port),
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
			// Authentication and authorization, then the router.
			HttpFilters: append(append([]*hcmv3.HttpFilter{metadataExchangeFilter(modeServer)}, b.securityHTTPFilters(target)...),
				&hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: copyAny(routerFilter)}}),
			UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		}
		if b.proxy.MTLS {
			// As Istio's inbound: the application learns the caller's
			// identity from x-forwarded-client-cert.
			m.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
			m.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true}
		}
		b.applyTelemetry(m, modeServer)
		l := listenerWith(name, ip, port, corev3.TrafficDirection_INBOUND, "envoy.filters.network.http_connection_manager", mustAny(m))
		if b.inboundChains(l, target, true) {
			b.res.Listeners = append(b.res.Listeners, l)
		}
	}
}
