package translate

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Gateways, as Istio's ingress gateway builds them:
//   - HTTP, HTTP2 and GRPC servers of one address and port share one
//     listener and route configuration "http.<port>" ("http.<port>.<bind>"
//     for a server with a bind address); httpsRedirect servers mark their
//     virtual hosts require_tls ALL (a 301 to https for every request).
//   - HTTPS and TLS servers of one address and port share one listener with
//     the tls_inspector and one filter chain per server, chosen by SNI
//     (filter_chain_match.server_names from the server's hosts; a "*" host
//     matches any name). Terminated HTTPS servers get their own route
//     configuration "https.<port>.<port name>.<gateway>.<namespace>";
//     terminated TLS servers forward with tcp_proxy along the tcp routes of
//     their VirtualServices; PASSTHROUGH servers get one chain per tls route
//     match, named by its sniHosts, forwarding the still encrypted bytes.
//   - TCP servers (and MONGO, REDIS, MYSQL: plain TCP to the gateway) forward
//     with tcp_proxy along the VirtualServices' tcp routes.
//
// Certificates come from files on the gateway's host (serverCertificate,
// privateKey, caCertificates) or, for ISTIO_MUTUAL, from the gateway's
// workload identity (SDS "default" and "ROOTCA"). credentialName needs
// Kubernetes Secrets and AUTO_PASSTHROUGH needs the sni-dnat cluster set:
// such servers are skipped with a warning, never served with less security
// than asked.

// serverKind is how a Gateway server is carried out.
type serverKind int

const (
	kindHTTP        serverKind = iota // plaintext HTTP, HTTP2, GRPC
	kindHTTPS                         // TLS terminated, HTTP inside
	kindTLSTerm                       // TLS terminated, TCP inside
	kindPassthrough                   // TLS forwarded by SNI, not terminated
	kindTCP                           // plaintext TCP
)

// portClass groups the kinds that can share one listener.
func (k serverKind) portClass() string {
	switch k {
	case kindHTTP:
		return "plaintext HTTP"
	case kindTCP:
		return "TCP"
	}
	return "TLS"
}

// gwServer is one server of a Gateway selecting this proxy.
type gwServer struct {
	gw     *config.Object
	name   string   // "namespace/name"
	index  int      // in the Gateway's servers
	hosts  []gwHost // parsed server hosts
	server *networking.Server
	kind   serverKind
}

// gwHost is a server host "namespace/host": VirtualServices of that
// namespace ("*" any) may bind host.
type gwHost struct{ ns, host string }

// gwKey is a listener address.
type gwKey struct {
	bind string
	port uint32
}

// buildGatewayListeners gives a router one listener per bind address and
// port of the Gateways selecting it.
func (b *builder) buildGatewayListeners() {
	groups := map[gwKey][]*gwServer{}
	var keys []gwKey
	for _, o := range precedence(b.in.Gateways, b.proxy.Namespace) {
		gw, ok := o.Spec.(*networking.Gateway)
		if !ok || !hasLabels(b.proxy.Labels, gw.GetSelector()) {
			continue
		}
		for i, s := range gw.GetServers() {
			srv := b.gatewayServer(o, i, s)
			if srv == nil {
				continue
			}
			bind := s.GetBind()
			if bind == "" && len(b.proxy.IPs) > 0 {
				// Outside Kubernetes the gateway's own address, as inbound
				// listeners use: a laptop mesh must not listen on every
				// interface unless asked to.
				bind = b.proxy.IPs[0]
			}
			if bind == "" {
				bind = "0.0.0.0"
			}
			if _, err := netip.ParseAddr(bind); err != nil {
				b.warnf(o, "servers[%d].bind: %q is not an IP address; server skipped", i, bind)
				continue
			}
			k := gwKey{bind, s.GetPort().GetNumber()}
			if prev := groups[k]; len(prev) > 0 && prev[0].kind.portClass() != srv.kind.portClass() {
				// Istio refuses to mix them on one port too: nothing in the
				// first bytes tells a plaintext request from a TCP stream.
				b.warnf(o, "servers[%d]: port %d on %s already serves %s for Gateway %s; a %s server cannot share it; server skipped",
					i, k.port, bind, prev[0].kind.portClass(), prev[0].name, srv.kind.portClass())
				continue
			}
			if groups[k] == nil {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], srv)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].port != keys[j].port {
			return keys[i].port < keys[j].port
		}
		return keys[i].bind < keys[j].bind
	})
	used := &gwRouteUse{tls: map[*vsEntry]map[int]bool{}, tcp: map[*vsEntry]map[int]bool{}}
	for _, k := range keys {
		name := listenerName(k.bind, k.port)
		if !b.claim(netip.AddrPortFrom(netip.MustParseAddr(k.bind), uint16(k.port)).String(), name) {
			continue
		}
		servers := groups[k]
		switch servers[0].kind.portClass() {
		case "plaintext HTTP":
			rds := gatewayRDSName(servers[0])
			b.res.Routes = append(b.res.Routes, b.gatewayRoute(rds, k.port, servers))
			b.res.Listeners = append(b.res.Listeners, b.httpListener(name, k.bind, k.port, corev3.TrafficDirection_OUTBOUND, rds, true))
		case "TCP":
			if l := b.gatewayTCPListener(name, k, servers, used); l != nil {
				b.res.Listeners = append(b.res.Listeners, l)
			}
		default:
			if l := b.gatewayTLSListener(name, k, servers, used); l != nil {
				b.res.Listeners = append(b.res.Listeners, l)
			}
		}
	}
	b.warnUnusedL4Routes(used)
}

// gatewayServer classifies a server and checks what Istio's validation
// would refuse; nil (with a warning) when it cannot be served as asked.
func (b *builder) gatewayServer(o *config.Object, i int, s *networking.Server) *gwServer {
	srv := &gwServer{gw: o, name: o.Meta.Namespace + "/" + o.Meta.Name, index: i, server: s}
	if len(s.GetHosts()) == 0 {
		b.warnf(o, "servers[%d].hosts: at least one host is required; server skipped", i)
		return nil
	}
	for _, h := range s.GetHosts() {
		ns, host, found := strings.Cut(h, "/")
		if !found {
			ns, host = "*", h
		} else if ns == "." {
			ns = o.Meta.Namespace
		}
		srv.hosts = append(srv.hosts, gwHost{ns, strings.ToLower(host)})
	}
	tls := s.GetTls()
	proto := registry.ParseProtocol(s.GetPort().GetProtocol())
	switch {
	case proto.IsHTTP():
		srv.kind = kindHTTP
		if tls != nil && !onlyHTTPSRedirect(tls) {
			b.warnf(o, "servers[%d].tls: a plaintext %s server takes only httpsRedirect (use protocol HTTPS to terminate TLS); server skipped", i, proto)
			return nil
		}
		return srv
	case proto == registry.TCP || proto == registry.Mongo || proto == registry.Redis || proto == registry.MySQL:
		srv.kind = kindTCP
		if tls != nil {
			b.warnf(o, "servers[%d].tls: a %s server takes no TLS settings (use protocol TLS); server skipped", i, proto)
			return nil
		}
		return srv
	case proto == registry.HTTPS || proto == registry.TLS:
	default:
		b.warnf(o, "servers[%d].port.protocol: %q is not a Gateway protocol amime serves (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO, REDIS, MYSQL); server skipped", i, s.GetPort().GetProtocol())
		return nil
	}
	if tls == nil {
		b.warnf(o, "servers[%d].tls: required for protocol %s; server skipped", i, proto)
		return nil
	}
	if tls.GetHttpsRedirect() {
		b.warnf(o, "servers[%d].tls.httpsRedirect: applies to plaintext HTTP servers only; ignored on %s", i, proto)
	}
	switch tls.GetMode() {
	case networking.ServerTLSSettings_PASSTHROUGH:
		srv.kind = kindPassthrough
	case networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		b.warnf(o, "servers[%d].tls.mode: AUTO_PASSTHROUGH is not supported by amime (it routes by Istio's SNI-encoded cluster names, for multi-network meshes); server skipped", i)
		return nil
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL,
		networking.ServerTLSSettings_ISTIO_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		srv.kind = kindTLSTerm
		if proto == registry.HTTPS {
			srv.kind = kindHTTPS
		}
	default:
		b.warnf(o, "servers[%d].tls.mode: %s is not known; server skipped", i, tls.GetMode())
		return nil
	}
	return srv
}

// onlyHTTPSRedirect: the tls block of a plaintext server sets nothing but
// httpsRedirect (mode's zero value is PASSTHROUGH).
func onlyHTTPSRedirect(t *networking.ServerTLSSettings) bool {
	return t.GetMode() == networking.ServerTLSSettings_PASSTHROUGH && t.GetServerCertificate() == "" && t.GetPrivateKey() == "" &&
		t.GetCaCertificates() == "" && t.GetCredentialName() == "" && len(t.GetCredentialNames()) == 0 &&
		len(t.GetSubjectAltNames()) == 0 && len(t.GetVerifyCertificateSpki()) == 0 && len(t.GetVerifyCertificateHash()) == 0 &&
		t.GetMinProtocolVersion() == networking.ServerTLSSettings_TLS_AUTO && t.GetMaxProtocolVersion() == networking.ServerTLSSettings_TLS_AUTO &&
		len(t.GetCipherSuites()) == 0 && t.GetCaCrl() == "" && len(t.GetTlsCertificates()) == 0
}

// gatewayRDSName is Istio's route configuration name for a server:
// "http.<port>" for plaintext HTTP, "https.<port>.<port name>.<gateway>.<namespace>"
// for terminated HTTPS, each with ".<bind>" when the server names one.
func gatewayRDSName(srv *gwServer) string {
	s := srv.server
	var name string
	if srv.kind == kindHTTPS {
		name = "https." + strconv.FormatUint(uint64(s.GetPort().GetNumber()), 10) + "." + s.GetPort().GetName() + "." + srv.gw.Meta.Name + "." + srv.gw.Meta.Namespace
	} else {
		name = "http." + strconv.FormatUint(uint64(s.GetPort().GetNumber()), 10)
	}
	if s.GetBind() != "" {
		name += "." + s.GetBind()
	}
	return name
}

// boundHosts are the hosts of vs that srv serves: for each pair of a
// VirtualService host and a server host that match, the more specific of
// the two. Empty when vs is not bound to srv's Gateway, or its namespace
// may not bind the server's hosts.
func boundHosts(vs *vsEntry, srv *gwServer) []string {
	if !slices.Contains(vs.gateways, srv.name) {
		return nil
	}
	var out []string
	for _, h := range vs.hosts {
		for _, sh := range srv.hosts {
			if sh.ns != "*" && sh.ns != vs.obj.Meta.Namespace {
				continue
			}
			switch {
			case registry.HostCovers(sh.host, h):
				out = append(out, h)
			case registry.HostCovers(h, sh.host):
				out = append(out, sh.host)
			}
		}
	}
	return out
}

// gatewayRoute has a virtual host per host that both a server and a
// VirtualService bound to it name; requests for other hosts get 404 (no
// virtual host), as from Istio's gateways. The hosts of httpsRedirect
// servers require TLS, and have a virtual host even without a
// VirtualService, so that they redirect rather than answer 404.
func (b *builder) gatewayRoute(name string, port uint32, servers []*gwServer) *routev3.RouteConfiguration {
	type vhost struct {
		vh  *routev3.VirtualHost
		vss map[*vsEntry]bool
	}
	byHost := map[string]*vhost{}
	var hosts []string
	newVHost := func(h string) *vhost {
		v := byHost[h]
		if v == nil {
			v = &vhost{vh: &routev3.VirtualHost{Name: h + ":" + strconv.FormatUint(uint64(port), 10), Domains: gatewayDomains(h, port), IncludeRequestAttemptCount: true}, vss: map[*vsEntry]bool{}}
			byHost[h] = v
			hosts = append(hosts, h)
		}
		return v
	}
	redirect := func(srv *gwServer) bool { return srv.server.GetTls().GetHttpsRedirect() }
	for _, vs := range b.vss {
		// The gateways of this port that the VirtualService binds.
		var gws []string
		type bound struct {
			host     string
			redirect bool
		}
		var matched []bound
		for _, srv := range servers {
			hs := boundHosts(vs, srv)
			if len(hs) == 0 {
				continue
			}
			if !slices.Contains(gws, srv.name) {
				gws = append(gws, srv.name)
			}
			for _, h := range hs {
				matched = append(matched, bound{h, redirect(srv)})
			}
		}
		if len(matched) == 0 {
			continue
		}
		sort.Strings(gws)
		routes := b.httpRoutes(vs, port, gws)
		for _, m := range matched {
			v := newVHost(m.host)
			if m.redirect {
				v.vh.RequireTls = routev3.VirtualHost_ALL
			}
			if v.vss[vs] {
				continue
			}
			// Several VirtualServices for one host: their routes are
			// merged in precedence order (Istio merges gateway routes).
			v.vss[vs] = true
			v.vh.Routes = append(v.vh.Routes, routes...)
		}
	}
	for _, srv := range servers {
		if !redirect(srv) {
			continue
		}
		for _, sh := range srv.hosts {
			if byHost[sh.host] == nil {
				newVHost(sh.host).vh.RequireTls = routev3.VirtualHost_ALL
			}
		}
	}
	sort.Strings(hosts)
	rc := &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false), MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	for _, h := range hosts {
		if v := byHost[h]; len(v.vh.Routes) > 0 || v.vh.RequireTls != routev3.VirtualHost_NONE {
			rc.VirtualHosts = append(rc.VirtualHosts, v.vh)
		}
	}
	if len(rc.VirtualHosts) == 0 {
		// Istio answers 404 when nothing is bound, rather than an empty table.
		rc.VirtualHosts = []*routev3.VirtualHost{{Name: "blackhole:" + strconv.FormatUint(uint64(port), 10), Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name:   "blackhole",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
		}}}}
	}
	return rc
}

// gatewayDomains: the host with and without the listener port ("*" alone
// matches everything), so a Host header carrying the port matches too.
func gatewayDomains(host string, port uint32) []string {
	if host == "*" {
		return []string{"*"}
	}
	return []string{host, host + ":" + strconv.FormatUint(uint64(port), 10)}
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// newGatewayListener is a gateway listener with the given filter chains.
func newGatewayListener(name string, k gwKey, chains []*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(k.bind, k.port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     chains,
	}
}
