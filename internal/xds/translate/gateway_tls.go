package translate

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/registry"
)

// gwRouteUse records which VirtualService tls and tcp routes a gateway
// server took, to warn about those bound to this gateway that none did.
type gwRouteUse struct {
	tls, tcp map[*vsEntry]map[int]bool
}

func (u *gwRouteUse) mark(m map[*vsEntry]map[int]bool, vs *vsEntry, i int) {
	if m[vs] == nil {
		m[vs] = map[int]bool{}
	}
	m[vs][i] = true
}

// sniClaims hands out SNI names on one listener: Envoy refuses two filter
// chains with the same match, so the first server (by precedence) keeps a
// name and later ones lose it, with a warning.
type sniClaims struct {
	names map[string]string // server name ("*" for any) -> owner
}

// claimSNI returns the server_names of a chain for hosts ("*" is any name:
// no server_names), leaving out those taken; ok is false when nothing is
// left.
func (b *builder) claimSNI(c *sniClaims, srv *gwServer, owner string, hosts []string) (names []string, ok bool) {
	seen := map[string]bool{}
	catchAll := false
	for _, h := range hosts {
		h = strings.ToLower(h)
		if seen[h] {
			continue
		}
		seen[h] = true
		if h != "*" && (strings.Contains(h[1:], "*") || (strings.HasPrefix(h, "*") && !strings.HasPrefix(h, "*."))) {
			b.warnf(srv.gw, "servers[%d]: host %q is not a name Envoy can match by SNI (a name or *.suffix); left out", srv.index, h)
			continue
		}
		if prev, taken := c.names[h]; taken {
			b.warnf(srv.gw, "servers[%d]: SNI %q on port %d is already served by %s; left out of %s", srv.index, h, srv.server.GetPort().GetNumber(), prev, owner)
			continue
		}
		c.names[h] = owner
		if h == "*" {
			catchAll = true
			continue
		}
		names = append(names, h)
	}
	if catchAll {
		// One chain without server_names takes every name; the others'
		// names stay more specific (Envoy matches server_names first).
		return nil, true
	}
	sort.Strings(names)
	return names, len(names) > 0
}

// gatewayTLSListener builds the listener of a port whose servers all speak
// TLS: one filter chain per terminated server, and per tls route match of
// passthrough servers.
func (b *builder) gatewayTLSListener(name string, k gwKey, servers []*gwServer, used *gwRouteUse) *listenerv3.Listener {
	claims := &sniClaims{names: map[string]string{}}
	var chains []*listenerv3.FilterChain
	for _, srv := range servers {
		switch srv.kind {
		case kindPassthrough:
			chains = append(chains, b.passthroughChains(srv, claims, used)...)
		case kindHTTPS, kindTLSTerm:
			ts, ok := b.serverTLSContext(srv)
			if !ok {
				continue
			}
			var filters []*listenerv3.Filter
			var owner string
			if srv.kind == kindHTTPS {
				rds := gatewayRDSName(srv)
				if slices.ContainsFunc(b.res.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.GetName() == rds }) {
					// Same port, port name, Gateway: Istio's names collide.
					b.warnf(srv.gw, "servers[%d].port.name: route configuration %s already exists (two HTTPS servers of one Gateway and port need distinct port names); server skipped", srv.index, rds)
					continue
				}
				owner = rds
				// The same connection manager as plaintext servers get
				// (security filters, telemetry), behind TLS.
				hl := b.httpListener(name, k.bind, k.port, corev3.TrafficDirection_OUTBOUND, rds, true)
				filters = hl.FilterChains[0].Filters
			} else {
				owner = "Gateway " + srv.name + " servers[" + strconv.Itoa(srv.index) + "]"
				tp := b.gatewayTCPProxy(srv, used)
				if tp == nil {
					b.warnf(srv.gw, "servers[%d]: no VirtualService bound to Gateway %s has a tcp route for port %d and hosts %s; server not served", srv.index, srv.name, k.port, hostList(srv))
					continue
				}
				filters = append(b.securityNetworkFilters(k.port), tcpFilter(tp))
			}
			hosts := make([]string, 0, len(srv.hosts))
			for _, h := range srv.hosts {
				hosts = append(hosts, h.host)
			}
			names, ok := b.claimSNI(claims, srv, owner, hosts)
			if !ok {
				continue
			}
			if srv.kind == kindHTTPS {
				b.res.Routes = append(b.res.Routes, b.gatewayRoute(owner, k.port, []*gwServer{srv}))
			}
			chains = append(chains, &listenerv3.FilterChain{
				Name:             owner,
				FilterChainMatch: sniMatch(names),
				Filters:          filters,
				TransportSocket:  ts,
			})
		}
	}
	if len(chains) == 0 {
		return nil
	}
	l := newGatewayListener(name, k, chains)
	l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspectorFilter}
	return l
}

func sniMatch(names []string) *listenerv3.FilterChainMatch {
	if len(names) == 0 {
		return nil
	}
	return &listenerv3.FilterChainMatch{ServerNames: names}
}

func tcpFilter(tp *tcpv3.TcpProxy) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}}
}

func hostList(srv *gwServer) string {
	hs := make([]string, 0, len(srv.hosts))
	for _, h := range srv.hosts {
		hs = append(hs, h.host)
	}
	return "[" + strings.Join(hs, " ") + "]"
}

// passthroughChains: a chain per tls route match of the VirtualServices
// bound to srv, with the match's sniHosts the server serves as
// server_names, forwarding the TLS stream as it is (Istio's
// buildGatewayNetworkFiltersFromTLSRoutes).
func (b *builder) passthroughChains(srv *gwServer, claims *sniClaims, used *gwRouteUse) []*listenerv3.FilterChain {
	port := srv.server.GetPort().GetNumber()
	var chains []*listenerv3.FilterChain
	for _, vs := range b.vss {
		if len(vs.spec.GetTls()) == 0 || len(boundHosts(vs, srv)) == 0 {
			continue
		}
		for i, r := range vs.spec.GetTls() {
			for j, m := range r.GetMatch() {
				if m.GetPort() != 0 && m.GetPort() != port {
					continue
				}
				if len(m.GetDestinationSubnets()) > 0 {
					b.warnf(vs.obj, "tls[%d].match[%d].destinationSubnets: not translated yet; match ignored", i, j)
					continue
				}
				if !b.sourceMatches(m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), vs.obj.Meta.Namespace, []string{srv.name}) {
					continue
				}
				sni := serverSNI(srv, m.GetSniHosts())
				if len(sni) == 0 {
					continue
				}
				if len(r.GetRoute()) == 0 {
					b.warnf(vs.obj, "tls[%d]: no route; match[%d] not served", i, j)
					continue
				}
				used.mark(used.tls, vs, i)
				path := "tls[" + strconv.Itoa(i) + "]"
				names, ok := b.claimSNI(claims, srv, "VirtualService "+vs.obj.Meta.Namespace+"/"+vs.obj.Meta.Name+" "+path+".match["+strconv.Itoa(j)+"]", sni)
				if !ok {
					continue
				}
				tp := b.l4Proxy(vs, path, r.GetRoute(), port)
				chains = append(chains, &listenerv3.FilterChain{
					Name:             "passthrough " + vs.obj.Meta.Namespace + "/" + vs.obj.Meta.Name + " " + path + ".match[" + strconv.Itoa(j) + "]",
					FilterChainMatch: sniMatch(names),
					Filters:          append(b.securityNetworkFilters(port), tcpFilter(tp)),
				})
			}
		}
	}
	return chains
}

// serverSNI keeps the sniHosts a server serves: for each pair of an SNI
// host and a server host that match, the more specific one.
func serverSNI(srv *gwServer, sniHosts []string) []string {
	var out []string
	for _, h := range sniHosts {
		h = strings.ToLower(h)
		for _, sh := range srv.hosts {
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

// l4Proxy is a tcp_proxy to route's destinations: one cluster, or weighted
// clusters (weights 0 everywhere mean equal shares, as Istio).
func (b *builder) l4Proxy(vs *vsEntry, path string, dsts []*networking.RouteDestination, port uint32) *tcpv3.TcpProxy {
	if len(dsts) == 1 {
		c := b.destinationCluster(vs, path+".route[0]", dsts[0].GetDestination(), port)
		return &tcpv3.TcpProxy{StatPrefix: c, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: c}}
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
	return &tcpv3.TcpProxy{StatPrefix: wc.Clusters[0].GetName(), ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: wc}}
}

// gatewayTCPProxy is the tcp_proxy of a TCP server (or a terminated TLS
// one): the first tcp route, in VirtualService precedence order, of a
// VirtualService bound to the server whose match applies (Istio's
// buildGatewayNetworkFiltersFromTCPRoutes). nil when none does.
func (b *builder) gatewayTCPProxy(srv *gwServer, used *gwRouteUse) *tcpv3.TcpProxy {
	port := srv.server.GetPort().GetNumber()
	for _, vs := range b.vss {
		if len(vs.spec.GetTcp()) == 0 || len(boundHosts(vs, srv)) == 0 {
			continue
		}
		for i, r := range vs.spec.GetTcp() {
			if len(r.GetRoute()) == 0 || !b.tcpMatches(vs, i, r.GetMatch(), port, []string{srv.name}) {
				continue
			}
			used.mark(used.tcp, vs, i)
			return b.l4Proxy(vs, "tcp["+strconv.Itoa(i)+"]", r.GetRoute(), port)
		}
	}
	return nil
}

// gatewayTCPListener serves a plaintext TCP port. Without SNI nothing
// tells two servers' connections apart: the first server owns the port.
func (b *builder) gatewayTCPListener(name string, k gwKey, servers []*gwServer, used *gwRouteUse) *listenerv3.Listener {
	for _, srv := range servers[1:] {
		b.warnf(srv.gw, "servers[%d]: TCP port %d on %s is already served by Gateway %s servers[%d] (plaintext TCP has no SNI to tell them apart); server skipped",
			srv.index, k.port, k.bind, servers[0].name, servers[0].index)
	}
	srv := servers[0]
	tp := b.gatewayTCPProxy(srv, used)
	if tp == nil {
		b.warnf(srv.gw, "servers[%d]: no VirtualService bound to Gateway %s has a tcp route for port %d and hosts %s; server not served", srv.index, srv.name, k.port, hostList(srv))
		return nil
	}
	return newGatewayListener(name, k, []*listenerv3.FilterChain{{
		Filters: append(b.securityNetworkFilters(k.port), tcpFilter(tp)),
	}})
}

// warnUnusedL4Routes names the tls and tcp routes of VirtualServices bound
// to this proxy's Gateways that no server took.
func (b *builder) warnUnusedL4Routes(used *gwRouteUse) {
	selected := map[string]bool{}
	for _, o := range b.in.Gateways {
		if gw, ok := o.Spec.(*networking.Gateway); ok && hasLabels(b.proxy.Labels, gw.GetSelector()) {
			selected[o.Meta.Namespace+"/"+o.Meta.Name] = true
		}
	}
	for _, vs := range b.vss {
		if !slices.ContainsFunc(vs.gateways, func(g string) bool { return selected[g] }) {
			continue
		}
		for i := range vs.spec.GetTls() {
			if !used.tls[vs][i] {
				b.warnf(vs.obj, "tls[%d]: no PASSTHROUGH server (protocol TLS or HTTPS) of its gateways %s on this gateway matches its sniHosts and port; not served here",
					i, strings.Join(vs.gateways, ","))
			}
		}
		for i := range vs.spec.GetTcp() {
			if !used.tcp[vs][i] {
				b.warnf(vs.obj, "tcp[%d]: no TCP or terminated TLS server of its gateways %s on this gateway takes it (hosts, port, or an earlier route wins); not served here",
					i, strings.Join(vs.gateways, ","))
			}
		}
	}
}

// serverTLSContext is the DownstreamTlsContext of a terminating server;
// ok is false (with a warning) when it cannot be built as asked.
func (b *builder) serverTLSContext(srv *gwServer) (*corev3.TransportSocket, bool) {
	t := srv.server.GetTls()
	o, i := srv.gw, srv.index
	fail := func(field, why string) (*corev3.TransportSocket, bool) {
		b.warnf(o, "servers[%d].tls.%s: %s; server skipped", i, field, why)
		return nil, false
	}
	mode := t.GetMode()
	switch {
	case t.GetCredentialName() != "" || len(t.GetCredentialNames()) > 0 || t.GetCaCertCredentialName() != "":
		return fail("credentialName", "certificates from Kubernetes Secrets need amime's Kubernetes integration, which this control plane does not run; give serverCertificate and privateKey files instead")
	case len(t.GetVerifyCertificateSpki()) > 0:
		return fail("verifyCertificateSpki", "not supported by the amime proxy")
	case len(t.GetVerifyCertificateHash()) > 0:
		return fail("verifyCertificateHash", "not supported by the amime proxy")
	case t.GetCaCrl() != "":
		return fail("caCrl", "the amime proxy checks no revocation list, and serving without it would accept revoked client certificates")
	}
	alpn := []string(nil)
	if srv.kind == kindHTTPS {
		alpn = []string{"h2", "http/1.1"}
	}
	var common *tlsv3.CommonTlsContext
	if mode == networking.ServerTLSSettings_ISTIO_MUTUAL {
		if t.GetServerCertificate() != "" || t.GetPrivateKey() != "" || t.GetCaCertificates() != "" || len(t.GetTlsCertificates()) > 0 {
			return fail("mode", "ISTIO_MUTUAL uses the gateway's workload certificate and takes no certificate files")
		}
		if !b.proxy.MTLS {
			return fail("mode", "ISTIO_MUTUAL needs a workload certificate, and proxy "+b.proxy.ID+" has none (start it with a join token)")
		}
		common = meshTLSContext(t.GetSubjectAltNames(), alpn)
		if t.GetMinProtocolVersion() != networking.ServerTLSSettings_TLS_AUTO || t.GetMaxProtocolVersion() != networking.ServerTLSSettings_TLS_AUTO || len(t.GetCipherSuites()) > 0 {
			common.TlsParams = nil
		}
	} else {
		common = &tlsv3.CommonTlsContext{AlpnProtocols: alpn}
		switch {
		case len(t.GetTlsCertificates()) > 0:
			if t.GetServerCertificate() != "" || t.GetPrivateKey() != "" {
				return fail("tlsCertificates", "cannot be combined with serverCertificate and privateKey")
			}
			for k, c := range t.GetTlsCertificates() {
				if c.GetServerCertificate() == "" || c.GetPrivateKey() == "" {
					return fail("tlsCertificates["+strconv.Itoa(k)+"]", "serverCertificate and privateKey are required")
				}
				common.TlsCertificates = append(common.TlsCertificates, &tlsv3.TlsCertificate{
					CertificateChain: fileSource(c.GetServerCertificate()), PrivateKey: fileSource(c.GetPrivateKey())})
			}
		case t.GetServerCertificate() == "" || t.GetPrivateKey() == "":
			return fail("serverCertificate", mode.String()+" needs serverCertificate and privateKey (files on the gateway's host)")
		default:
			common.TlsCertificates = []*tlsv3.TlsCertificate{{
				CertificateChain: fileSource(t.GetServerCertificate()), PrivateKey: fileSource(t.GetPrivateKey())}}
		}
		if mode == networking.ServerTLSSettings_MUTUAL || mode == networking.ServerTLSSettings_OPTIONAL_MUTUAL {
			ca := t.GetCaCertificates()
			for _, c := range t.GetTlsCertificates() {
				if ca == "" {
					ca = c.GetCaCertificates()
				}
			}
			if ca == "" {
				return fail("caCertificates", mode.String()+" needs the CA certificates that client certificates are verified against")
			}
			vc := &tlsv3.CertificateValidationContext{TrustedCa: fileSource(ca)}
			if t.GetInsecureSkipVerify().GetValue() {
				vc.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
			}
			for _, s := range t.GetSubjectAltNames() {
				// Any SAN type, as Istio's exact subjectAltNames.
				vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
			}
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		} else if len(t.GetSubjectAltNames()) > 0 {
			b.warnf(o, "servers[%d].tls.subjectAltNames: only verified with mode MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL; ignored for %s", i, mode)
		}
	}
	params, ok := b.tlsParams(srv)
	if !ok {
		return nil, false
	}
	if params != nil {
		common.TlsParams = params
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if mode != networking.ServerTLSSettings_SIMPLE {
		ctx.RequireClientCertificate = wrapperspb.Bool(mode != networking.ServerTLSSettings_OPTIONAL_MUTUAL)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}, true
}

var tlsVersions = map[networking.ServerTLSSettings_TLSProtocol]tlsv3.TlsParameters_TlsProtocol{
	networking.ServerTLSSettings_TLS_AUTO: tlsv3.TlsParameters_TLS_AUTO,
	networking.ServerTLSSettings_TLSV1_0:  tlsv3.TlsParameters_TLSv1_0,
	networking.ServerTLSSettings_TLSV1_1:  tlsv3.TlsParameters_TLSv1_1,
	networking.ServerTLSSettings_TLSV1_2:  tlsv3.TlsParameters_TLSv1_2,
	networking.ServerTLSSettings_TLSV1_3:  tlsv3.TlsParameters_TLSv1_3,
}

// proxyCipherSuites are the BoringSSL names the amime proxy implements
// (TLS 1.2 and below; TLS 1.3 suites are not configurable, in Envoy either).
var proxyCipherSuites = map[string]bool{
	"ECDHE-ECDSA-AES128-GCM-SHA256": true, "ECDHE-RSA-AES128-GCM-SHA256": true,
	"ECDHE-ECDSA-AES256-GCM-SHA384": true, "ECDHE-RSA-AES256-GCM-SHA384": true,
	"ECDHE-ECDSA-CHACHA20-POLY1305": true, "ECDHE-RSA-CHACHA20-POLY1305": true,
	"ECDHE-ECDSA-AES128-SHA": true, "ECDHE-RSA-AES128-SHA": true,
	"ECDHE-ECDSA-AES256-SHA": true, "ECDHE-RSA-AES256-SHA": true,
	"AES128-GCM-SHA256": true, "AES256-GCM-SHA384": true, "AES128-SHA": true, "AES256-SHA": true,
}

// tlsParams maps minProtocolVersion, maxProtocolVersion and cipherSuites;
// nil when none is set (Envoy's defaults: TLS 1.2 to 1.3). Unsupported
// cipher names are dropped with a warning, as Istio filters them.
func (b *builder) tlsParams(srv *gwServer) (*tlsv3.TlsParameters, bool) {
	t := srv.server.GetTls()
	minV, okMin := tlsVersions[t.GetMinProtocolVersion()]
	maxV, okMax := tlsVersions[t.GetMaxProtocolVersion()]
	if !okMin || !okMax {
		b.warnf(srv.gw, "servers[%d].tls: unknown protocol version; server skipped", srv.index)
		return nil, false
	}
	if minV != tlsv3.TlsParameters_TLS_AUTO && maxV != tlsv3.TlsParameters_TLS_AUTO && minV > maxV {
		b.warnf(srv.gw, "servers[%d].tls.minProtocolVersion: %s is above maxProtocolVersion %s; server skipped", srv.index, t.GetMinProtocolVersion(), t.GetMaxProtocolVersion())
		return nil, false
	}
	var ciphers []string
	for _, c := range t.GetCipherSuites() {
		if proxyCipherSuites[c] {
			ciphers = append(ciphers, c)
		} else {
			b.warnf(srv.gw, "servers[%d].tls.cipherSuites: %q is not supported by the amime proxy; left out", srv.index, c)
		}
	}
	if len(t.GetCipherSuites()) > 0 && len(ciphers) == 0 {
		b.warnf(srv.gw, "servers[%d].tls.cipherSuites: none is supported by the amime proxy; server skipped", srv.index)
		return nil, false
	}
	if minV == tlsv3.TlsParameters_TLS_AUTO && maxV == tlsv3.TlsParameters_TLS_AUTO && len(ciphers) == 0 {
		return nil, true
	}
	return &tlsv3.TlsParameters{TlsMinimumProtocolVersion: minV, TlsMaximumProtocolVersion: maxV, CipherSuites: ciphers}, true
}
