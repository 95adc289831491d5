package explain

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbactcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

const (
	hcmTypeURL      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyTypeURL = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	downstreamTLS   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)

// source starts the walk at the source proxy.
func (e *engine) source(src *Proxy, r *request) {
	side := "outbound"
	if src.Gateway {
		side = "gateway"
	}
	hop := e.addHop(Hop{Proxy: src.ID, Workload: src.name(), Side: side})
	e.syncCaveat(hop, src)
	l, why := pickSourceListener(src, r)
	if l == nil {
		e.step(hop, Step{Kind: "listener", Decision: "no listener takes the request", Why: why,
			Fix: "send the request through the sidecar: set HTTP_PROXY to its outbound listener, or give the proxy --outbound-bind-ip"})
		e.outcome(hop, 100, Outcome{Reason: "no listener of " + src.name() + " takes the request: it does not go through the mesh (" + why + ")"})
		return
	}
	// The application's own connection: plaintext (TLS only to a gateway
	// serving https).
	conn := connInfo{src: appAddr(src), dst: listenerAddr(l), tls: r.m.Scheme == "https" && src.Gateway}
	if conn.tls {
		conn.sni = hostOnly(r.m.Authority)
	}
	e.listenerHop(src, hop, l, r, conn, why, 100, 0)
}

// syncCaveat warns when the proxy does not run what the control plane
// serves it.
func (e *engine) syncCaveat(hop int, p *Proxy) {
	var bad []string
	for _, t := range []string{"LDS", "RDS", "CDS", "EDS"} {
		if s, ok := p.Sync[t]; ok && s != "SYNCED" && s != "NOT SENT" {
			bad = append(bad, t+" "+s)
		}
	}
	if len(bad) > 0 {
		e.step(hop, Step{Kind: "sync", Decision: "the proxy may not run this configuration yet",
			Why: strings.Join(bad, "; ") + ": the explanation uses what the control plane serves it, which it has not (all) accepted"})
	}
}

// appAddr is the address an application's connection to its own proxy
// comes from: the workload's, else loopback.
func appAddr(p *Proxy) netip.Addr {
	if len(p.IPs) > 0 {
		if a, err := netip.ParseAddr(p.IPs[0]); err == nil {
			return a
		}
	}
	return netip.MustParseAddr("127.0.0.1")
}

func listenerAddr(l *listenerv3.Listener) netip.AddrPort {
	sa := l.GetAddress().GetSocketAddress()
	a, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, uint16(sa.GetPortValue()))
}

// pickSourceListener finds where the application's request enters: a
// sidecar's HTTP_PROXY listener (route configuration "http_proxy") for
// HTTP, else the outbound (or gateway) listener on the request's port.
func pickSourceListener(p *Proxy, r *request) (*listenerv3.Listener, string) {
	if !p.Gateway && r.m.Scheme == "http" {
		for _, l := range p.Resources.Listeners {
			if m := listenerHCM(l); m != nil && m.GetRds().GetRouteConfigName() == translate.HTTPProxyRoute {
				return l, "the application uses it as its HTTP_PROXY (route configuration " + translate.HTTPProxyRoute + ")"
			}
		}
	}
	for _, l := range p.Resources.Listeners {
		if l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
			continue
		}
		if listenerAddr(l).Port() == uint16(r.port) {
			if p.Gateway {
				return l, "the gateway listens on port " + strconv.Itoa(int(r.port))
			}
			return l, "the outbound listener of port " + strconv.Itoa(int(r.port))
		}
	}
	if p.Gateway {
		return nil, fmt.Sprintf("the gateway has no listener on port %d (no Gateway server selecting it has that port)", r.port)
	}
	return nil, fmt.Sprintf("the sidecar has no HTTP_PROXY listener and no outbound listener on port %d", r.port)
}

func listenerHCM(l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetTypedConfig().GetTypeUrl() == hcmTypeURL {
				m := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(m) == nil {
					return m
				}
			}
		}
	}
	return nil
}

// listenerHop runs the request through one listener of p.
func (e *engine) listenerHop(p *Proxy, hop int, l *listenerv3.Listener, r *request, conn connInfo, why string, share float64, depth int) {
	e.step(hop, Step{Kind: "listener", Name: l.GetName(), Decision: "listener " + l.GetName() + " (" + listenerAddr(l).String() + ")", Why: why})
	fc, chainStep := pickChain(l, conn)
	if fc == nil {
		chainStep.Status, chainStep.Flags, chainStep.Details = 503, connFailFlags(conn, conn.tls), connFailDetails(conn.tls)
		e.step(hop, chainStep)
		e.outcome(hop, share, Outcome{Status: 503, Flags: chainStep.Flags, Details: chainStep.Details,
			Reason: "the destination closes the connection: " + chainStep.Why, Fix: chainStep.Fix, At: p.name()})
		return
	}
	if chainStep.Decision != "" {
		e.step(hop, chainStep)
	}
	if !e.transport(p, hop, fc, conn, share) {
		return
	}
	for i, f := range fc.GetFilters() {
		tc := f.GetTypedConfig()
		switch tc.GetTypeUrl() {
		case rbac.NetworkTypeURL:
			if !e.networkRBAC(p, hop, f.GetName(), tc, conn, share) {
				return
			}
		case hcmTypeURL:
			m := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(m); err != nil {
				e.step(hop, Step{Kind: "filter", Name: f.GetName(), Decision: "unreadable HTTP connection manager", Why: err.Error()})
				return
			}
			e.httpHop(p, hop, m, r, conn, share, depth)
			return
		case tcpProxyTypeURL:
			tp := &tcpv3.TcpProxy{}
			if err := tc.UnmarshalTo(tp); err != nil {
				e.step(hop, Step{Kind: "filter", Name: f.GetName(), Decision: "unreadable tcp_proxy", Why: err.Error()})
				return
			}
			e.tcpHop(p, hop, tp, r, conn, share, depth)
			return
		default:
			e.step(hop, Step{Kind: "filter", Name: f.GetName(), Decision: "network filter not evaluated",
				Why: fmt.Sprintf("filters[%d] has type %s, which explain does not evaluate", i, tc.GetTypeUrl())})
		}
	}
}

// pickChain chooses the filter chain a connection takes: Envoy's
// filter_chain_match on transport protocol and server names (what the
// translator sets: "tls" / "raw_buffer" chains of PeerAuthentication, SNI
// of Gateway servers), the most specific match winning, else the
// listener's default_filter_chain. The Step describes the choice ("" when
// there was nothing to choose).
func pickChain(l *listenerv3.Listener, conn connInfo) (*listenerv3.FilterChain, Step) {
	chains := l.GetFilterChains()
	transport := "raw_buffer"
	if conn.tls {
		transport = "tls"
	}
	var names []string
	var best *listenerv3.FilterChain
	bestScore := -1
	for i, fc := range chains {
		m := fc.GetFilterChainMatch()
		names = append(names, chainLabel(fc, i))
		if tp := m.GetTransportProtocol(); tp != "" && tp != transport {
			continue
		}
		score := 0
		if m.GetTransportProtocol() != "" {
			score++
		}
		if sn := m.GetServerNames(); len(sn) > 0 {
			if !slices.ContainsFunc(sn, func(n string) bool { return serverNameMatches(n, conn.sni) }) {
				continue
			}
			score += 2
		}
		if m.GetDestinationPort() != nil && m.GetDestinationPort().GetValue() != uint32(conn.dst.Port()) {
			continue
		}
		if score > bestScore {
			best, bestScore = fc, score
		}
	}
	if best == nil {
		best = l.GetDefaultFilterChain()
	}
	mode := "plaintext"
	if conn.tls {
		mode = "TLS"
	}
	if best == nil {
		s := Step{Kind: "filter_chain", Decision: "no filter chain accepts a " + mode + " connection",
			Why: "the listener's chains are " + strings.Join(names, ", ")}
		if !conn.tls && slices.ContainsFunc(chains, func(fc *listenerv3.FilterChain) bool {
			return fc.GetFilterChainMatch().GetTransportProtocol() == "tls"
		}) {
			s.Why += ": the port requires mutual TLS (PeerAuthentication STRICT) and the source sends plaintext"
			s.Fix = "give the source proxy a workload certificate (start it with a join token) so it originates mTLS, or set the port's PeerAuthentication to PERMISSIVE"
		} else if conn.tls {
			s.Why += ": the port accepts plaintext only (no workload certificate, or PeerAuthentication DISABLE) and the source originates TLS"
			s.Fix = "give the destination proxy a workload certificate, or disable TLS towards it (DestinationRule tls.mode DISABLE)"
		}
		return nil, s
	}
	if len(chains) <= 1 {
		return best, Step{}
	}
	return best, Step{Kind: "filter_chain", Name: best.GetName(), Decision: "filter chain " + chainLabel(best, slices.Index(chains, best)),
		Why: "the connection is " + mode + "; the listener's chains are " + strings.Join(names, ", ")}
}

func chainLabel(fc *listenerv3.FilterChain, i int) string {
	n := fc.GetName()
	if n == "" {
		n = "#" + strconv.Itoa(i)
	}
	var parts []string
	if tp := fc.GetFilterChainMatch().GetTransportProtocol(); tp != "" {
		parts = append(parts, tp)
	}
	if sn := fc.GetFilterChainMatch().GetServerNames(); len(sn) > 0 {
		parts = append(parts, "SNI "+strings.Join(sn, ","))
	}
	if ts := fc.GetTransportSocket(); ts != nil && ts.GetTypedConfig().GetTypeUrl() == downstreamTLS {
		d := &tlsv3.DownstreamTlsContext{}
		if ts.GetTypedConfig().UnmarshalTo(d) == nil && d.GetRequireClientCertificate().GetValue() {
			parts = append(parts, "client certificate required")
		}
	}
	if len(parts) == 0 {
		return n
	}
	return n + " (" + strings.Join(parts, ", ") + ")"
}

func serverNameMatches(pattern, sni string) bool {
	if sni == "" {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(sni, suffix) && len(sni) > len(suffix)
	}
	return strings.EqualFold(pattern, sni)
}

// transport checks that the client and the chosen chain speak the same
// transport and, for mutual TLS, that the handshake succeeds: a client
// certificate the chain requires, and the server identity the client
// accepts.
func (e *engine) transport(p *Proxy, hop int, fc *listenerv3.FilterChain, conn connInfo, share float64) bool {
	d := &tlsv3.DownstreamTlsContext{}
	ts := fc.GetTransportSocket()
	serverTLS := ts != nil && ts.GetTypedConfig().GetTypeUrl() == downstreamTLS && ts.GetTypedConfig().UnmarshalTo(d) == nil
	fail := func(why, fix string) bool {
		flags, details := connFailFlags(conn, conn.tls), connFailDetails(conn.tls)
		decision := "TLS handshake fails"
		if !conn.tls {
			decision = "the destination closes the connection"
		}
		e.step(hop, Step{Kind: "tls", Decision: decision, Why: why, Status: 503, Flags: flags, Details: details, Fix: fix})
		e.outcome(hop, share, Outcome{Status: 503, Flags: flags, Details: details, Reason: decision + ": " + why, Fix: fix, At: p.name()})
		return false
	}
	switch {
	case !conn.tls && !serverTLS:
		return true
	case !conn.tls:
		return fail("the chain expects TLS and the source sends plaintext",
			"give the source proxy a workload certificate (start it with a join token) so it originates mTLS")
	case !serverTLS:
		return fail("the port accepts plaintext only (PeerAuthentication DISABLE, or no workload certificate) and the source originates TLS",
			"make the destination's PeerAuthentication and the source's TLS agree: DestinationRule tls.mode DISABLE towards it, or remove the DISABLE")
	}
	if d.GetRequireClientCertificate().GetValue() && !conn.cert {
		return fail("the destination requires a client certificate and the source presents none", "use ISTIO_MUTUAL (or auto mTLS) towards mesh workloads, not SIMPLE TLS")
	}
	if len(conn.sans) > 0 {
		if p.Identity == "" {
			return fail("the source expects the identity "+strings.Join(conn.sans, " or ")+" and "+p.name()+" has no workload certificate", "")
		}
		if !slices.Contains(conn.sans, p.Identity) {
			return fail("the source expects the identity "+strings.Join(conn.sans, " or ")+", "+p.name()+" presents "+p.Identity,
				"check the service account of "+p.name()+" or the DestinationRule's subjectAltNames")
		}
	}
	who := "no client certificate"
	if conn.cert {
		who = "client identity " + conn.id
	}
	e.step(hop, Step{Kind: "tls", Decision: "mutual TLS", Why: who + "; server identity " + orNone(p.Identity)})
	return true
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// connFailFlags are the response flags of the previous hop when the
// connection fails: UF for a failed TLS handshake (connection failure),
// UC for a connection the destination closes, plus URX when the previous
// hop's retry policy retries it (every try then fails the same way).
func connFailFlags(conn connInfo, handshake bool) string {
	flag, kind := "UC", route.ResetOther
	if handshake {
		flag, kind = "UF", route.ResetConnectFailure
	}
	if conn.retryReset != nil && conn.retryReset(kind) {
		return flag + ",URX"
	}
	return flag
}

func connFailDetails(handshake bool) string {
	if handshake {
		return "upstream_reset_before_response_started{connection_failure}"
	}
	return "upstream_reset_before_response_started{connection_termination}"
}

// networkRBAC evaluates an envoy.filters.network.rbac filter.
func (e *engine) networkRBAC(p *Proxy, hop int, name string, tc *anypb.Any, conn connInfo, share float64) bool {
	f, err := rbac.ParseNetwork(tc)
	if err != nil {
		e.step(hop, Step{Kind: "rbac", Name: name, Decision: "the proxy refuses this RBAC configuration", Why: err.Error()})
		return true
	}
	cfg := &rbactcpv3.RBAC{}
	_ = tc.UnmarshalTo(cfg)
	attrs := &rbac.Attributes{DirectRemote: conn.src, Remote: conn.src, Destination: conn.dst, SNI: conn.sni, Peer: peerOf(conn)}
	return e.rbacDecision(p, hop, name, f, attrs, policyNames(cfg.GetRules().GetPolicies()), share, false)
}

func peerOf(conn connInfo) *rbac.Peer {
	if !conn.tls || !conn.cert {
		return nil
	}
	if conn.id == "" {
		return &rbac.Peer{}
	}
	return &rbac.Peer{URISANs: []string{conn.id}}
}

// tcpHop follows a tcp_proxy to its cluster(s).
func (e *engine) tcpHop(p *Proxy, hop int, tp *tcpv3.TcpProxy, r *request, conn connInfo, share float64, depth int) {
	type branch struct {
		name   string
		weight uint32
	}
	var branches []branch
	switch {
	case tp.GetCluster() != "":
		branches = []branch{{tp.GetCluster(), 1}}
	case tp.GetWeightedClusters() != nil:
		for _, c := range tp.GetWeightedClusters().GetClusters() {
			branches = append(branches, branch{c.GetName(), c.GetWeight()})
		}
	}
	var total uint64
	for _, b := range branches {
		total += uint64(b.weight)
	}
	e.step(hop, Step{Kind: "filter", Name: "envoy.filters.network.tcp_proxy", Decision: "TCP proxy: bytes are forwarded as they are, no HTTP routing at this hop",
		Why: "the port is not HTTP for this proxy (service port protocol TCP, or unknown outside HTTP_PROXY)"})
	for _, b := range branches {
		s := share
		if total > 0 {
			s = share * float64(b.weight) / float64(total)
		}
		st := e.clusterStep(p, hop, b.name, nil, r, s, depth)
		if len(branches) > 1 {
			st.Decision = fmt.Sprintf("weight %d of %d: %s", b.weight, total, st.Decision)
		}
		e.step(hop, st)
	}
}
