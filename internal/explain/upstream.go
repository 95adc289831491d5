package explain

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

const upstreamTLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

// forward is the router's part of a Forward route: each weighted cluster
// (every branch, with its share, none drawn at random), then the route's
// timeouts, retries and mirrors.
func (e *engine) forward(p *Proxy, hop int, rt *route.Route, r *request, conn connInfo, share float64, depth int) {
	branches := rt.WeightedClusters()
	if branches == nil {
		branches = []*route.Route{rt}
	}
	var total uint64
	for _, b := range branches {
		total += uint64(b.Weight())
	}
	origin := routeOrigin(rt.Proto())
	for _, b := range branches {
		s := share
		if len(branches) > 1 && total > 0 {
			s = share * float64(b.Weight()) / float64(total)
		}
		up := upstreamRequest(b, r, conn)
		st := e.clusterStep(p, hop, b.ClusterName(&r.m), b, up, s, depth)
		if len(branches) > 1 {
			st.Decision = fmt.Sprintf("weight %d of %d (%s of requests): %s", b.Weight(), total, formatPercent(roundPercent(float64(b.Weight())*100/float64(total))), st.Decision)
			st.Config = origin
		}
		e.step(hop, st)
	}
	e.step(hop, timeoutStep(rt, origin))
	e.step(hop, retryStep(rt, origin))
	for _, m := range rt.MirrorPolicies() {
		pct := 100.0
		if m.Denominator > 0 {
			pct = float64(m.Numerator) * 100 / float64(m.Denominator)
		}
		e.step(hop, Step{Kind: "mirror", Name: m.Cluster, Config: origin, Decision: fmt.Sprintf("mirror %s of requests to %s", formatPercent(roundPercent(pct)), m.Cluster),
			Why: "fire and forget: the mirror's responses and failures do not affect the request"})
	}
}

// upstreamRequest is the request as the next hop receives it: the
// route's path and host rewrites and header mutations applied, as the
// router does before sending.
func upstreamRequest(rt *route.Route, r *request, conn connInfo) *request {
	up := r.clone()
	if path, ok := rt.RewritePath(&r.m); ok {
		up.m.Path = path
		up.m.Headers.Set("x-envoy-original-path", r.m.Path)
	}
	if a, ok := rt.RewriteHost(&r.m); ok {
		up.m.Authority = a
	}
	up.m.Headers.SetIfAbsent("x-forwarded-proto", r.m.Scheme)
	env := &route.Env{Request: &r.m, DownstreamLocalAddress: conn.dst.String()}
	if conn.src.IsValid() {
		env.DownstreamRemoteAddressWithoutPort = conn.src.String()
	}
	rt.MutateRequest(&up.m.Headers, env)
	return up
}

func timeoutStep(rt *route.Route, origin string) Step {
	t := rt.Timeouts()
	s := Step{Kind: "timeout", Config: origin}
	if t.Request <= 0 {
		s.Decision = "no request timeout"
		s.Why = "the route's timeout is 0 (disabled), Istio's default when the VirtualService sets none"
	} else {
		s.Decision = "request timeout " + t.Request.String()
		s.Why = "the proxy answers 504 UT (upstream_response_timeout) when the whole exchange, retries included, takes longer"
	}
	return s
}

func retryStep(rt *route.Route, origin string) Step {
	rp, pol := rt.RetryPolicyCompiled(), rt.RetryPolicy()
	s := Step{Kind: "retry", Config: origin}
	if rp == nil || rp.NumRetries == 0 {
		s.Decision = "no retries"
		s.Why = "the route has no retry policy (retries.attempts 0)"
		return s
	}
	s.Decision = fmt.Sprintf("up to %d retries on %s", rp.NumRetries, pol.GetRetryOn())
	var why []string
	if len(rp.StatusCodes) > 0 {
		codes := make([]string, len(rp.StatusCodes))
		for i, c := range rp.StatusCodes {
			codes[i] = strconv.Itoa(c)
		}
		why = append(why, "retriable status codes "+strings.Join(codes, ","))
	}
	if rp.PerTryTimeout > 0 {
		why = append(why, "per-try timeout "+rp.PerTryTimeout.String())
	}
	if rp.PreviousHosts {
		why = append(why, "each retry picks another host than those tried")
	}
	if rp.BackOffBase > 0 {
		why = append(why, "back-off base "+rp.BackOffBase.String())
	}
	if pol.GetRetryOn() == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" && rp.NumRetries == 2 {
		why = append(why, "Istio's default retry policy (the VirtualService sets no retries)")
	}
	s.Why = strings.Join(why, "; ")
	return s
}

// clusterStep explains one cluster of a route (or tcp_proxy) and walks on
// to its endpoints. rt is nil for tcp_proxy.
func (e *engine) clusterStep(p *Proxy, hop int, name string, rt *route.Route, up *request, share float64, depth int) Step {
	notFound := 503
	if rt != nil {
		notFound = rt.ClusterNotFoundStatus()
	}
	s := Step{Kind: "cluster", Name: name, Decision: "cluster " + name}
	nc := func(why, fix string) Step {
		s.Why, s.Fix, s.Status, s.Flags, s.Details = why, fix, notFound, "NC", "cluster_not_found"
		if rt != nil {
			// The proxy's route warming (proxy.installRoutes).
			s.Why += "; a proxy that receives a route table naming an unknown cluster keeps serving its previous route table for up to 5s, then this one"
		}
		e.outcome(hop, share, Outcome{Status: notFound, Flags: "NC", Details: "cluster_not_found", Reason: why, Fix: fix, By: routeOriginOf(rt)})
		return s
	}
	if name == "" {
		return nc("the route names its cluster by a header the request does not carry", "")
	}
	i := slices.IndexFunc(p.Resources.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == name })
	if i < 0 {
		why, fix := missingCluster(p, name)
		return nc(why, fix)
	}
	cfg := p.Resources.Clusters[i]
	s.Config = configObject(cfg.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue())
	s.Why = describeCluster(cfg)
	c, err := cluster.NewWith(cfg, cluster.Options{Secrets: noSecrets{}})
	if err != nil {
		return nc("the proxy refuses cluster "+name+": "+err.Error(), "")
	}
	switch c.Discovery {
	case cluster.OriginalDst:
		e.originalDst(p, hop, &s, c, up, share)
		return s
	case cluster.StrictDNS, cluster.LogicalDNS:
		var hosts []string
		for _, le := range cfg.GetLoadAssignment().GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				hosts = append(hosts, sa.GetAddress()+":"+strconv.Itoa(int(sa.GetPortValue())))
			}
		}
		s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "resolved by DNS at the proxy: " + strings.Join(hosts, ", "),
			Why: tlsOf(cfg, nil).describe()})
		e.outcome(hop, share, Outcome{Reason: "forwarded to " + strings.Join(hosts, ", ") + " (DNS): the external endpoint answers", By: s.Config})
		return s
	}
	cla := cfg.GetLoadAssignment()
	if c.Discovery == cluster.EDS {
		cla = nil
		for _, x := range p.Resources.Endpoints {
			if x.GetClusterName() == c.EDSServiceName {
				cla = x
			}
		}
	}
	if cla != nil {
		if err := c.SetEndpoints(cla); err != nil {
			s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "the proxy refuses the endpoints", Why: err.Error()})
		}
	}
	hs := c.Hosts()
	if c.Pick(0) == nil {
		why := "cluster " + name + " has no endpoint"
		if len(hs.All) > 0 {
			why = fmt.Sprintf("none of the %d endpoints of %s can be picked", len(hs.All), name)
		}
		fix := "start (or register) a workload the service selects"
		if sub := clusterSubset(name); sub != "" {
			fix = "start a workload with the labels of subset " + sub + ", or fix the subset's labels in " + orNone(s.Config)
		}
		s.Status, s.Flags, s.Details, s.Fix = 503, "UH", "no_healthy_upstream", fix
		s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "no healthy upstream", Why: why})
		e.outcome(hop, share, Outcome{Status: 503, Flags: "UH", Details: "no_healthy_upstream", Reason: why, Fix: fix, By: s.Config})
		return s
	}
	e.endpoints(p, hop, &s, cfg, cla, hs, rt, up, share, depth)
	return s
}

func routeOriginOf(rt *route.Route) string {
	if rt == nil {
		return ""
	}
	return routeOrigin(rt.Proto())
}

// endpoints explains each endpoint and walks on through those the load
// balancer may pick: the healthy ones, or all of them when too few are
// healthy (Envoy's panic threshold, 50%).
func (e *engine) endpoints(p *Proxy, hop int, s *Step, cfg *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, hs *cluster.HostSet, rt *route.Route, up *request, share float64, depth int) {
	pickable := hs.Healthy
	panicMode := len(hs.Healthy)*100 < 50*len(hs.All)
	if panicMode {
		pickable = hs.All
		s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "panic mode: every endpoint may be picked",
			Why: fmt.Sprintf("only %d of %d endpoints are healthy, under the 50%% panic threshold", len(hs.Healthy), len(hs.All))})
	}
	var total uint64
	for _, h := range pickable {
		total += uint64(max(h.Weight, 1))
	}
	lbs := lbEndpoints(cla)
	for _, h := range hs.All {
		lb := lbs[h.Addr]
		t := tlsOf(cfg, lb.GetMetadata())
		if (h.TLS != nil) != t.on {
			// The proxy's own choice wins; the proto is only for details.
			t = tlsInfo{on: h.TLS != nil}
		}
		health := "healthy"
		switch {
		case h.Degraded:
			health = "degraded"
		case !h.Healthy:
			health = "unhealthy (" + lb.GetHealthStatus().String() + ")"
		}
		dst, l := e.proxyAt(h.Addr, p)
		es := Step{Kind: "endpoint", Name: h.Addr, Decision: "endpoint " + h.Addr + ", " + health + ", " + t.describe()}
		if dst != nil {
			es.Why = "sidecar " + dst.ID + labelText(dst.Labels)
		} else if strings.HasPrefix(cfg.GetName(), "inbound|") {
			es.Why = "the application of " + p.name()
		}
		if !slices.Contains(pickable, h) {
			es.Decision += ": not picked (unhealthy)"
			s.Steps = append(s.Steps, es)
			continue
		}
		hs := share * float64(max(h.Weight, 1)) / float64(total)
		if len(pickable) > 1 {
			es.Decision += fmt.Sprintf(" (weight %d of %d)", max(h.Weight, 1), total)
		}
		s.Steps = append(s.Steps, es)
		if dst == nil {
			reason := "forwarded to " + h.Addr + ", which no proxy of the mesh serves: the endpoint answers"
			if strings.HasPrefix(cfg.GetName(), "inbound|") {
				reason = "reaches " + p.name() + ": its application at " + h.Addr + " answers"
			}
			e.outcome(hop, hs, Outcome{Reason: reason})
			continue
		}
		if depth+1 >= maxHops {
			e.note("the walk stops after %d hops", maxHops)
			e.outcome(hop, hs, Outcome{Reason: "forwarded to " + dst.name() + " (the walk stops here: too many hops)"})
			continue
		}
		next := connInfo{src: appAddr(p), dst: listenerAddr(l), tls: h.TLS != nil, cert: t.cert, id: p.Identity, sni: t.sni, sans: t.sans}
		if len(p.IPs) == 0 {
			e.note("%s has no instance IP: its connections are taken to come from 127.0.0.1", p.name())
		}
		if rt != nil {
			if rp := rt.RetryPolicyCompiled(); rp != nil {
				next.retryReset = rp.RetriableReset
			}
		}
		side := "inbound"
		if dst.Gateway {
			side = "gateway"
		}
		h2 := e.addHop(Hop{Proxy: dst.ID, Workload: dst.name(), Side: side, Via: fmt.Sprintf("endpoint %s of cluster %s at %s", h.Addr, cfg.GetName(), p.name())})
		s.Steps[len(s.Steps)-1].Decision += fmt.Sprintf(" → hop %d (%s)", h2+1, dst.name())
		e.syncCaveat(h2, dst)
		e.listenerHop(dst, h2, l, up, next, "its listener for "+h.Addr, hs, depth+1)
	}
}

func labelText(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	keys := policyNames(l)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return ", labels " + strings.Join(parts, ",")
}

// proxyAt finds the proxy (other than from) with a listener on addr.
func (e *engine) proxyAt(addr string, from *Proxy) (*Proxy, *listenerv3.Listener) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, nil
	}
	for _, q := range e.proxies {
		for _, l := range q.Resources.Listeners {
			la := listenerAddr(l)
			if la.Port() != ap.Port() || !(la.Addr() == ap.Addr() || la.Addr().IsUnspecified() && ap.Addr().IsLoopback()) {
				continue
			}
			if q == from && l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
				continue
			}
			return q, l
		}
	}
	return nil, nil
}

func lbEndpoints(cla *endpointv3.ClusterLoadAssignment) map[string]*endpointv3.LbEndpoint {
	out := map[string]*endpointv3.LbEndpoint{}
	for _, le := range cla.GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if a, err := netip.ParseAddr(sa.GetAddress()); err == nil {
				out[netip.AddrPortFrom(a, uint16(sa.GetPortValue())).String()] = lb
			}
		}
	}
	return out
}

// originalDst explains PassthroughCluster (ALLOW_ANY).
func (e *engine) originalDst(p *Proxy, hop int, s *Step, c *cluster.Cluster, up *request, share float64) {
	if c.UseHTTPHeader() {
		if v, ok := up.m.Headers.Get("x-envoy-original-dst-host"); ok {
			s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "original destination " + v + " (x-envoy-original-dst-host)"})
			e.outcome(hop, share, Outcome{Reason: "forwarded to " + v + " outside the mesh (ALLOW_ANY)"})
			return
		}
	}
	why := "ORIGINAL_DST: the request goes to the address the application's connection was made to"
	if p.Gateway {
		s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "original destination of the connection", Why: why})
		e.outcome(hop, share, Outcome{Reason: "forwarded to the connection's original destination (PassthroughCluster)"})
		return
	}
	why += "; through the HTTP_PROXY (or bind IP) listener that is the sidecar itself, so the request cannot leave it"
	fix := "declare " + hostOnly(up.m.Authority) + " with a MESH_EXTERNAL ServiceEntry (resolution DNS), or leave it out of the proxy with NO_PROXY"
	s.Steps = append(s.Steps, Step{Kind: "endpoint", Decision: "original destination: the sidecar's own listener", Why: why, Status: 503, Fix: fix})
	e.outcome(hop, share, Outcome{Status: 503, Reason: "ALLOW_ANY: " + hostOnly(up.m.Authority) + " is not in the service registry; PassthroughCluster cannot reach it through HTTP_PROXY", By: translate.PassthroughCluster, Fix: fix})
}

// missingCluster says why a cluster the route names does not exist.
func missingCluster(p *Proxy, name string) (string, string) {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) != 4 || parts[0] != "outbound" {
		return "the proxy has no cluster " + name, ""
	}
	port, subset, host := parts[1], parts[2], parts[3]
	short := shortHost(host)
	hasHost, hasPort := false, false
	var ports []string
	for _, c := range p.Resources.Clusters {
		cp := strings.SplitN(c.GetName(), "|", 4)
		if len(cp) != 4 || cp[3] != host {
			continue
		}
		hasHost = true
		if cp[1] == port {
			hasPort = true
		}
		if !slices.Contains(ports, cp[1]) {
			ports = append(ports, cp[1])
		}
	}
	switch {
	case subset != "" && hasPort:
		return fmt.Sprintf("no cluster %s: subset %s of %s is not defined by any DestinationRule", name, subset, host),
			fmt.Sprintf("define subset %s in a DestinationRule for %s (host %s)", subset, short, host)
	case hasHost:
		return fmt.Sprintf("no cluster %s: service %s has no port %s (ports %s)", name, host, port, strings.Join(ports, ", ")),
			"route to one of the service's ports (destination.port), or add port " + port + " to the service"
	}
	return fmt.Sprintf("no cluster %s: %s is not a service known to the mesh (or not visible to %s)", name, host, p.name()),
		"declare " + host + " with a ServiceEntry (or a Kubernetes Service), or check exportTo"
}

func clusterSubset(name string) string {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) == 4 {
		return parts[2]
	}
	return ""
}

// shortHost is the name applications use for a Kubernetes-style host.
func shortHost(host string) string {
	if name, _, ok := strings.Cut(host, "."); ok && strings.Contains(host, ".svc.") {
		return name
	}
	return host
}

func describeCluster(c *clusterv3.Cluster) string {
	var parts []string
	t := c.GetType().String()
	if c.GetClusterType() != nil {
		t = c.GetClusterType().GetName()
	}
	parts = append(parts, "type "+t, "load balancing "+c.GetLbPolicy().String())
	if ct := c.GetConnectTimeout(); ct != nil {
		parts = append(parts, "connect timeout "+ct.AsDuration().String())
	}
	if sub := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["subset"].GetStringValue(); sub != "" {
		parts = append(parts, "subset "+sub)
	}
	if od := c.GetOutlierDetection(); od != nil {
		parts = append(parts, "outlier detection on")
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetMaxConnections() != nil || th.GetMaxPendingRequests() != nil || th.GetMaxRequests() != nil {
			parts = append(parts, "circuit breaker on")
			break
		}
	}
	if len(c.GetTransportSocketMatches()) > 0 {
		parts = append(parts, "auto mTLS: endpoints labelled security.istio.io/tlsMode=istio get mTLS, the others plaintext")
	}
	return strings.Join(parts, ", ")
}

// tlsInfo is the transport the proxy uses towards one endpoint.
type tlsInfo struct {
	on   bool
	mesh bool // the workload certificate (ISTIO_MUTUAL / auto mTLS)
	cert bool // a client certificate is presented
	sni  string
	sans []string
}

func (t tlsInfo) describe() string {
	switch {
	case !t.on:
		return "plaintext"
	case t.mesh:
		s := "mTLS (workload certificate)"
		if len(t.sans) > 0 {
			s += ", expects " + strings.Join(t.sans, " or ")
		}
		return s
	case t.cert:
		return "TLS with a client certificate, SNI " + t.sni
	}
	return "TLS, SNI " + t.sni
}

// tlsOf reads the transport socket the cluster uses for an endpoint with
// metadata md: the first transport_socket_match whose fields the
// endpoint's envoy.transport_socket_match metadata has, else the
// cluster's transport_socket.
func tlsOf(c *clusterv3.Cluster, md *corev3.Metadata) tlsInfo {
	ts := c.GetTransportSocket()
	em := md.GetFilterMetadata()["envoy.transport_socket_match"]
	for _, m := range c.GetTransportSocketMatches() {
		if structSubset(m.GetMatch(), em) {
			ts = m.GetTransportSocket()
			break
		}
	}
	if ts == nil || ts.GetTypedConfig().GetTypeUrl() != upstreamTLS {
		return tlsInfo{}
	}
	u := &tlsv3.UpstreamTlsContext{}
	if ts.GetTypedConfig().UnmarshalTo(u) != nil {
		return tlsInfo{on: true}
	}
	cc := u.GetCommonTlsContext()
	t := tlsInfo{on: true, sni: u.GetSni()}
	for _, sds := range cc.GetTlsCertificateSdsSecretConfigs() {
		t.cert = true
		t.mesh = t.mesh || sds.GetName() == "default"
	}
	t.cert = t.cert || len(cc.GetTlsCertificates()) > 0
	vc := cc.GetCombinedValidationContext().GetDefaultValidationContext()
	if vc == nil {
		vc = cc.GetValidationContext()
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_URI && m.GetMatcher().GetExact() != "" {
			t.sans = append(t.sans, m.GetMatcher().GetExact())
		}
	}
	return t
}

func structSubset(want, have *structpb.Struct) bool {
	for k, v := range want.GetFields() {
		hv, ok := have.GetFields()[k]
		if !ok || hv.GetStringValue() != v.GetStringValue() {
			return false
		}
	}
	return true
}

// noSecrets satisfies the cluster package: explain never handshakes, and
// SDS secrets are read only at handshakes.
type noSecrets struct{}

var errNoSecrets = errors.New("explain holds no secrets")

func (noSecrets) Certificate(string) (*tls.Certificate, error) { return nil, errNoSecrets }
func (noSecrets) Roots(string) (*x509.CertPool, error)         { return nil, errNoSecrets }
