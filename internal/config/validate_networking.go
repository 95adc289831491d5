package config

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// ---- VirtualService ----

const meshGateway = "mesh"

func validateVirtualService(v *validator, vs *networking.VirtualService) {
	p := fpath("spec")
	delegate := len(vs.Hosts) == 0
	if delegate {
		// A VirtualService without hosts is a delegate: it is only reachable
		// through a root VirtualService's http[].delegate.
		if len(vs.Gateways) > 0 {
			v.add(p.f("gateways"), "must be empty in a delegate VirtualService (one without hosts)")
		}
		if len(vs.Tls) > 0 {
			v.add(p.f("tls"), "must be empty in a delegate VirtualService (one without hosts)")
		}
		if len(vs.Tcp) > 0 {
			v.add(p.f("tcp"), "must be empty in a delegate VirtualService (one without hosts)")
		}
	}
	toGateway := false
	for i, g := range vs.Gateways {
		v.gatewayName(p.f("gateways").i(i), g)
		toGateway = true
	}
	for _, g := range vs.Gateways {
		if g == meshGateway {
			toGateway = false
		}
	}
	toMesh := !toGateway

	allValid := true
	for i, h := range vs.Hosts {
		hp := p.f("hosts").i(i)
		if r := checkWildcardDomain(h); r != "" && !isIP(h) {
			v.add(hp, "%s", r)
			allValid = false
		} else if h == "*" && toMesh {
			v.add(hp, "wildcard host \"*\" is only allowed in a VirtualService bound to gateways (not the mesh)")
			allValid = false
		}
	}
	if allValid {
		for i := range vs.Hosts {
			for j := i + 1; j < len(vs.Hosts); j++ {
				if hostsOverlap(vs.Hosts[i], vs.Hosts[j]) {
					v.add(p.f("hosts").i(j), "duplicate host: %q overlaps %q", vs.Hosts[j], vs.Hosts[i])
				}
			}
		}
	}
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		v.add(p, "at least one of http, tcp or tls routes is required")
	}
	each(v, p, "http", vs.Http, func(rp fpath, r *networking.HTTPRoute) {
		validateHTTPRoute(v, rp, r, delegate, toGateway)
	})
	each(v, p, "tls", vs.Tls, func(rp fpath, r *networking.TLSRoute) {
		validateTLSRoute(v, rp, r, vs.Hosts)
	})
	each(v, p, "tcp", vs.Tcp, func(rp fpath, r *networking.TCPRoute) {
		validateTCPRoute(v, rp, r)
	})
	v.exportTo(p.f("exportTo"), "", vs.ExportTo, false, false)
}

// hostsOverlap: whether one host pattern matches the other (istiod rejects
// such duplicates in one VirtualService: "*" or "*.com" next to "a.com").
func hostsOverlap(a, b string) bool {
	if a == b {
		return true
	}
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	switch {
	case aw && bw:
		return strings.HasSuffix(a[1:], b[1:]) || strings.HasSuffix(b[1:], a[1:])
	case aw:
		return strings.HasSuffix(b, a[1:])
	case bw:
		return strings.HasSuffix(a, b[1:])
	}
	return false
}

// hostSubsetOf: every name matched by sub is matched by host.
func hostSubsetOf(sub, host string) bool {
	if sub == host {
		return true
	}
	if !strings.HasPrefix(host, "*") {
		return false
	}
	suffix := host[1:]
	if strings.HasPrefix(sub, "*") {
		return strings.HasSuffix(sub[1:], suffix)
	}
	return strings.HasSuffix(sub, suffix)
}

func (v *validator) gatewayName(p fpath, g string) {
	if g == meshGateway {
		return
	}
	ns, name, ok := strings.Cut(g, "/")
	if !ok {
		// Legacy form: a name, or name.namespace.svc.cluster.local.
		if r := checkFQDN(g); r != "" {
			v.add(p, "invalid gateway %q: %s", g, r)
		}
		return
	}
	if ns == "" || name == "" {
		v.add(p, "invalid gateway %q: namespace and name must not be empty", g)
		return
	}
	if !isDNSLabel(ns) {
		v.add(p, "invalid gateway %q: namespace %q is not a DNS-1123 label", g, ns)
	}
	if !isDNSLabel(name) {
		v.add(p, "invalid gateway %q: name %q is not a DNS-1123 label", g, name)
	}
}

func validateHTTPRoute(v *validator, p fpath, r *networking.HTTPRoute, delegate, toGateway bool) {
	if !delegate && r.Delegate != nil {
		// A root route hands the request to the delegate; it must not route itself.
		if len(r.Route) > 0 {
			v.add(p.f("route"), "must not be set together with delegate")
		}
		if r.Redirect != nil {
			v.add(p.f("redirect"), "must not be set together with delegate")
		}
		if r.DirectResponse != nil {
			v.add(p.f("directResponse"), "must not be set together with delegate")
		}
		dp := p.f("delegate")
		if r.Delegate.Name == "" {
			v.add(dp.f("name"), "is required")
		} else if !isK8sSubdomain(r.Delegate.Name) {
			v.add(dp.f("name"), "invalid name %q: must be a DNS-1123 subdomain", r.Delegate.Name)
		}
		if r.Delegate.Namespace != "" && !isK8sLabel(r.Delegate.Namespace) {
			v.add(dp.f("namespace"), "invalid namespace %q: must be a DNS-1123 label", r.Delegate.Namespace)
		}
	} else {
		if delegate && r.Delegate != nil {
			v.add(p.f("delegate"), "a delegate VirtualService cannot delegate again")
		}
		switch {
		case r.Redirect != nil:
			if len(r.Route) > 0 {
				v.add(p, "route and redirect are mutually exclusive")
			}
			if r.DirectResponse != nil {
				v.add(p, "redirect and directResponse are mutually exclusive")
			}
			if r.Fault != nil {
				v.add(p, "fault and redirect are mutually exclusive")
			}
			if r.Rewrite != nil {
				v.add(p, "rewrite and redirect are mutually exclusive")
			}
		case r.DirectResponse != nil:
			if len(r.Route) > 0 {
				v.add(p, "route and directResponse are mutually exclusive")
			}
			if r.Fault != nil {
				v.add(p, "fault and directResponse are mutually exclusive")
			}
			if r.Rewrite != nil {
				v.add(p, "rewrite and directResponse are mutually exclusive")
			}
		case len(r.Route) == 0:
			v.add(p, "one of route, redirect or directResponse is required")
		}
	}
	if r.Mirror != nil && len(r.Mirrors) > 0 {
		v.add(p, "mirror and mirrors are mutually exclusive")
	}

	each(v, p, "match", r.Match, func(mp fpath, m *networking.HTTPMatchRequest) {
		validateHTTPMatch(v, mp, m, toGateway)
	})

	v.headers(p.f("headers"), r.Headers)
	validateCORS(v, p.f("corsPolicy"), r.CorsPolicy)
	validateFault(v, p.f("fault"), r.Fault)
	if r.MirrorPercent != nil && r.MirrorPercent.GetValue() > 100 {
		v.add(p.f("mirrorPercent"), "must be in the range 0..100, got %d", r.MirrorPercent.GetValue())
	}
	if r.MirrorPercentage != nil {
		if val := r.MirrorPercentage.Value; val < 0 || val > 100 {
			v.add(p.f("mirrorPercentage").f("value"), "must be in the range 0..100, got %v", val)
		}
	}
	if r.Mirror != nil {
		v.destination(p.f("mirror"), r.Mirror)
	}
	each(v, p, "mirrors", r.Mirrors, func(mp fpath, m *networking.HTTPMirrorPolicy) {
		if m.Destination == nil {
			v.add(mp.f("destination"), "is required")
		} else {
			v.destination(mp.f("destination"), m.Destination)
		}
		if m.Percentage != nil && (m.Percentage.Value < 0 || m.Percentage.Value > 100) {
			v.add(mp.f("percentage").f("value"), "must be in the range 0..100, got %v", m.Percentage.Value)
		}
	})
	validateRedirect(v, p.f("redirect"), r.Redirect)
	validateDirectResponse(v, p.f("directResponse"), r.DirectResponse)
	validateRetries(v, p.f("retries"), r.Retries)
	validateRewrite(v, p.f("rewrite"), r.Rewrite)
	validateAuthorityRewrite(v, p, r)
	each(v, p, "route", r.Route, func(dp fpath, d *networking.HTTPRouteDestination) {
		if d.Destination == nil {
			v.add(dp.f("destination"), "is required")
		} else {
			v.destination(dp.f("destination"), d.Destination)
		}
		v.headers(dp.f("headers"), d.Headers)
	})
	v.weights(p.f("route"), len(r.Route), func(i int) int32 { return r.Route[i].GetWeight() })
	v.duration(p.f("timeout"), r.Timeout)
}

func validateHTTPMatch(v *validator, p fpath, m *networking.HTTPMatchRequest, toGateway bool) {
	// uri accepts prefix "" (match every path); Envoy rejects empty
	// prefixes for scheme, method and authority.
	if m.Uri != nil {
		v.stringMatch(p.f("uri"), m.Uri, false, true)
	}
	v.stringMatch(p.f("scheme"), m.Scheme, false, false)
	v.stringMatch(p.f("method"), m.Method, false, false)
	v.stringMatch(p.f("authority"), m.Authority, false, false)
	checkHeaderMatches := func(hp fpath, hs map[string]*networking.StringMatch, without bool) {
		for _, name := range sortedKeys(hs) {
			np := hp.k(name)
			switch {
			case isJWTClaimHeader(name):
				if !toGateway {
					v.add(np, "JWT claim based routing is only supported in VirtualServices bound to gateways")
				}
			default:
				v.addIf(np, checkHeaderName(name))
			}
			sm := hs[name]
			if without && sm.GetRegex() == "*" {
				continue // "*" means "header absent", not a regex
			}
			// An empty match checks the header's presence.
			v.stringMatch(np, sm, true, false)
		}
	}
	checkHeaderMatches(p.f("headers"), m.Headers, false)
	checkHeaderMatches(p.f("withoutHeaders"), m.WithoutHeaders, true)
	for _, name := range sortedKeys(m.QueryParams) {
		v.stringMatch(p.f("queryParams").k(name), m.QueryParams[name], true, false)
	}
	if m.Port != 0 {
		v.addIf(p.f("port"), checkPort(m.Port))
	}
	v.labels(p.f("sourceLabels"), m.SourceLabels)
	for i, g := range m.Gateways {
		v.gatewayName(p.f("gateways").i(i), g)
	}
	if m.SourceNamespace != "" && !isK8sLabel(m.SourceNamespace) {
		v.add(p.f("sourceNamespace"), "invalid namespace %q: must be a DNS-1123 label", m.SourceNamespace)
	}
}

// weights applies amime's rule: each weight 0..100 and, with more than one
// destination, a total of exactly 100 (a lone destination gets everything).
func (v *validator) weights(p fpath, n int, weight func(int) int32) {
	var total int64
	for i := 0; i < n; i++ {
		w := weight(i)
		if w < 0 || w > 100 {
			v.add(p.i(i).f("weight"), "weight %d must be in the range 0..100", w)
		}
		total += int64(w)
	}
	if n > 1 && total != 100 {
		v.add(p.i(n-1).f("weight"), "weights must sum to 100, got %d", total)
	}
}

func (v *validator) destination(p fpath, d *networking.Destination) {
	switch {
	case d.Host == "":
		v.add(p.f("host"), "is required")
	case d.Host == "*":
		v.add(p.f("host"), "wildcard host \"*\" is not a valid destination")
	default:
		v.addIf(p.f("host"), checkWildcardDomain(d.Host))
	}
	if d.Subset != "" && !isDNSLabel(d.Subset) {
		v.add(p.f("subset"), "invalid subset name %q: must be a DNS-1123 label", d.Subset)
	}
	if d.Port != nil {
		v.addIf(p.f("port").f("number"), checkPort(d.Port.Number))
	}
}

var corsMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodConnect: true,
	http.MethodOptions: true, http.MethodTrace: true,
}

func validateCORS(v *validator, p fpath, c *networking.CorsPolicy) {
	if c == nil {
		return
	}
	for i, o := range c.AllowOrigins {
		op := p.f("allowOrigins").i(i)
		switch t := o.GetMatchType().(type) {
		case nil:
			v.add(op, "one of exact, prefix or regex is required")
		case *networking.StringMatch_Exact:
			if t.Exact == "" {
				v.add(op.f("exact"), "must not be empty")
			}
		case *networking.StringMatch_Prefix:
			if t.Prefix == "" {
				v.add(op.f("prefix"), "must not be empty")
			}
		case *networking.StringMatch_Regex:
			v.addIf(op.f("regex"), checkRegex(t.Regex))
		}
	}
	for i, m := range c.AllowMethods {
		if !corsMethods[m] {
			v.add(p.f("allowMethods").i(i), "%q is not a supported HTTP method", m)
		}
	}
	for _, f := range []struct {
		name  string
		names []string
	}{{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
		for i, h := range f.names {
			if h != "*" {
				v.addIf(p.f(f.name).i(i), checkHeaderName(h))
			}
		}
	}
	if c.MaxAge != nil {
		v.duration(p.f("maxAge"), c.MaxAge)
		if c.MaxAge.Nanos != 0 {
			v.add(p.f("maxAge"), "must be a whole number of seconds")
		}
	}
}

// grpcStatuses are the names istiod accepts for abort.grpcStatus.
var grpcStatuses = map[string]bool{
	"OK": true, "CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true,
	"DEADLINE_EXCEEDED": true, "NOT_FOUND": true, "ALREADY_EXISTS": true,
	"PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true, "FAILED_PRECONDITION": true,
	"ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true, "INTERNAL": true,
	"UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

func validateFault(v *validator, p fpath, f *networking.HTTPFaultInjection) {
	if f == nil {
		return
	}
	if f.Abort == nil && f.Delay == nil {
		v.add(p, "at least one of delay or abort is required")
	}
	if a := f.Abort; a != nil {
		ap := p.f("abort")
		v.fractionalPercent(ap.f("percentage"), a.Percentage)
		switch t := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if t.HttpStatus < 200 || t.HttpStatus > 599 {
				v.add(ap.f("httpStatus"), "HTTP status %d is not in the range 200..599", t.HttpStatus)
			}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if !grpcStatuses[t.GrpcStatus] {
				v.add(ap.f("grpcStatus"), "unknown gRPC status %q (want a code name such as UNAVAILABLE or NOT_FOUND)", t.GrpcStatus)
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			v.add(ap.f("http2Error"), "HTTP/2 abort fault injection is not supported")
		}
	}
	if d := f.Delay; d != nil {
		dp := p.f("delay")
		v.fractionalPercent(dp.f("percentage"), d.Percentage)
		v.percent0to100(dp.f("percent"), d.Percent)
		switch t := d.HttpDelayType.(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			v.duration(dp.f("fixedDelay"), t.FixedDelay)
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			v.add(dp.f("exponentialDelay"), "exponentialDelay is not supported")
		}
	}
}

func validateRedirect(v *validator, p fpath, r *networking.HTTPRedirect) {
	if r == nil {
		return
	}
	if r.Uri == "" && r.Authority == "" && r.RedirectPort == nil && r.Scheme == "" && r.PrefixRewrite == "" {
		v.add(p, "at least one of uri, authority, port, derivePort, scheme or prefixRewrite is required")
	}
	if r.RedirectCode != 0 && (r.RedirectCode < 300 || r.RedirectCode > 399) {
		v.add(p.f("redirectCode"), "%d is not a redirect code (want 3xx)", r.RedirectCode)
	}
	if r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https" {
		v.add(p.f("scheme"), "invalid scheme %q (want http or https)", r.Scheme)
	}
	if pt, ok := r.RedirectPort.(*networking.HTTPRedirect_Port); ok {
		v.addIf(p.f("port"), checkPort(pt.Port))
	}
}

const maxDirectResponseBody = 1 << 20

func validateDirectResponse(v *validator, p fpath, d *networking.HTTPDirectResponse) {
	if d == nil {
		return
	}
	if d.Status < 200 || d.Status > 599 {
		v.add(p.f("status"), "HTTP status %d is not in the range 200..599", d.Status)
	}
	if b := d.Body; b != nil {
		size := len(b.GetString_()) + len(b.GetBytes())
		if size > maxDirectResponseBody {
			v.add(p.f("body"), "body is %d bytes, max %d", size, maxDirectResponseBody)
		}
	}
}

// retryOnPolicies are Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on
// conditions, the list istiod accepts.
var retryOnPolicies = setOf(
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
	"envoy-ratelimited", "http3-post-connect-failure",
	// gRPC (x-envoy-retry-grpc-on)
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
)

func setOf(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[it] = true
	}
	return m
}

func validateRetries(v *validator, p fpath, r *networking.HTTPRetry) {
	if r == nil {
		return
	}
	if r.Attempts < 0 {
		v.add(p.f("attempts"), "must not be negative, got %d", r.Attempts)
	}
	if r.Attempts == 0 && (r.PerTryTimeout != nil || r.RetryOn != "" || r.RetryRemoteLocalities != nil) {
		v.add(p.f("attempts"), "is 0 (retries disabled) but other retry settings are set")
	}
	v.duration(p.f("perTryTimeout"), r.PerTryTimeout)
	v.duration(p.f("backoff"), r.Backoff)
	if r.RetryOn != "" {
		for _, c := range strings.Split(r.RetryOn, ",") {
			if retryOnPolicies[c] {
				continue
			}
			if code, err := strconv.Atoi(c); err == nil && http.StatusText(code) != "" {
				continue
			}
			v.add(p.f("retryOn"), "%q is not a valid retryOn condition", c)
		}
	}
}

func validateRewrite(v *validator, p fpath, r *networking.HTTPRewrite) {
	if r == nil {
		return
	}
	if r.Uri != "" && r.UriRegexRewrite != nil {
		v.add(p, "uri and uriRegexRewrite are mutually exclusive")
	}
	if r.Uri == "" && r.UriRegexRewrite == nil && r.Authority == "" {
		v.add(p, "at least one of uri, uriRegexRewrite or authority is required")
	}
	if rr := r.UriRegexRewrite; rr != nil {
		rp := p.f("uriRegexRewrite")
		if rr.Match == "" {
			v.add(rp.f("match"), "is required")
		} else {
			v.addIf(rp.f("match"), checkRegex(rr.Match))
		}
		if rr.Rewrite == "" {
			v.add(rp.f("rewrite"), "is required")
		}
	}
}

// validateAuthorityRewrite: the authority may be rewritten in one place only.
func validateAuthorityRewrite(v *validator, p fpath, r *networking.HTTPRoute) {
	sources := 0
	if r.Rewrite.GetAuthority() != "" {
		sources++
	}
	req := r.Headers.GetRequest()
	for _, m := range []map[string]string{req.GetSet(), req.GetAdd()} {
		for k := range m {
			if isAuthorityHeader(k) {
				sources++
			}
		}
	}
	if sources > 1 {
		v.add(p, "the authority is rewritten more than once (rewrite.authority and headers.request :authority/host)")
	}
}

func validateTLSRoute(v *validator, p fpath, r *networking.TLSRoute, vsHosts []string) {
	if len(r.Match) == 0 {
		v.add(p.f("match"), "at least one match with sniHosts is required")
	}
	for j, m := range r.Match {
		mp := p.f("match").i(j)
		if m == nil {
			v.add(mp, "must not be null")
			continue
		}
		if len(m.SniHosts) == 0 {
			v.add(mp.f("sniHosts"), "at least one SNI host is required")
		}
		for k, sni := range m.SniHosts {
			sp := mp.f("sniHosts").i(k)
			if r := checkWildcardDomain(sni); r != "" {
				if !isIP(sni) { // istiod tolerates IPs here (with a warning)
					v.add(sp, "%s", r)
				}
				continue
			}
			ok := false
			for _, h := range vsHosts {
				if hostSubsetOf(sni, h) {
					ok = true
					break
				}
			}
			if !ok {
				v.add(sp, "SNI host %q is not a subset of any of the VirtualService hosts [%s]", sni, strings.Join(vsHosts, ", "))
			}
		}
		validateL4Match(v, mp, m.DestinationSubnets, m.Port, m.SourceLabels, m.Gateways, m.SourceNamespace)
	}
	validateRouteDestinations(v, p.f("route"), r.Route)
}

func validateTCPRoute(v *validator, p fpath, r *networking.TCPRoute) {
	each(v, p, "match", r.Match, func(mp fpath, m *networking.L4MatchAttributes) {
		validateL4Match(v, mp, m.DestinationSubnets, m.Port, m.SourceLabels, m.Gateways, m.SourceNamespace)
		if m.SourceSubnet != "" {
			v.addIf(mp.f("sourceSubnet"), checkIPOrCIDR(m.SourceSubnet))
		}
	})
	validateRouteDestinations(v, p.f("route"), r.Route)
}

func validateL4Match(v *validator, p fpath, subnets []string, port uint32, labels map[string]string, gateways []string, sourceNS string) {
	for i, s := range subnets {
		v.addIf(p.f("destinationSubnets").i(i), checkIPOrCIDR(s))
	}
	if port != 0 {
		v.addIf(p.f("port"), checkPort(port))
	}
	v.labels(p.f("sourceLabels"), labels)
	for i, g := range gateways {
		v.gatewayName(p.f("gateways").i(i), g)
	}
	if sourceNS != "" && !isK8sLabel(sourceNS) {
		v.add(p.f("sourceNamespace"), "invalid namespace %q: must be a DNS-1123 label", sourceNS)
	}
}

func validateRouteDestinations(v *validator, p fpath, ds []*networking.RouteDestination) {
	if len(ds) == 0 {
		v.add(p, "at least one route destination is required")
		return
	}
	for i, d := range ds {
		dp := p.i(i)
		if d == nil {
			v.add(dp, "must not be null")
			continue
		}
		if d.Destination == nil {
			v.add(dp.f("destination"), "is required")
		} else {
			v.destination(dp.f("destination"), d.Destination)
		}
	}
	v.weights(p, len(ds), func(i int) int32 { return ds[i].GetWeight() })
}

// ---- DestinationRule ----

func validateDestinationRule(v *validator, ns string, dr *networking.DestinationRule) {
	p := fpath("spec")
	if dr.Host == "" {
		v.add(p.f("host"), "is required")
	} else {
		v.addIf(p.f("host"), checkWildcardDomain(dr.Host))
	}
	validateTrafficPolicy(v, p.f("trafficPolicy"), dr.TrafficPolicy)
	seen := map[string]bool{}
	each(v, p, "subsets", dr.Subsets, func(sp fpath, s *networking.Subset) {
		switch {
		case s.Name == "":
			v.add(sp.f("name"), "is required")
		case !isDNSLabel(s.Name):
			v.add(sp.f("name"), "invalid subset name %q: must be a DNS-1123 label", s.Name)
		case seen[s.Name]:
			v.add(sp.f("name"), "duplicate subset name %q", s.Name)
		}
		seen[s.Name] = true
		v.labels(sp.f("labels"), s.Labels)
		validateTrafficPolicy(v, sp.f("trafficPolicy"), s.TrafficPolicy)
	})
	v.exportTo(p.f("exportTo"), ns, dr.ExportTo, false, dr.WorkloadSelector != nil)
	if dr.WorkloadSelector != nil {
		v.selector(p.f("workloadSelector").f("matchLabels"), dr.WorkloadSelector.MatchLabels)
	}
}

func validateTrafficPolicy(v *validator, p fpath, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	if tp.LoadBalancer == nil && tp.ConnectionPool == nil && tp.OutlierDetection == nil && tp.Tls == nil &&
		len(tp.PortLevelSettings) == 0 && tp.Tunnel == nil && tp.ProxyProtocol == nil && tp.RetryBudget == nil {
		v.add(p, "at least one field is required")
		return
	}
	if tp.Tunnel != nil && tp.ProxyProtocol != nil {
		v.add(p, "tunnel and proxyProtocol are mutually exclusive")
	}
	validateOutlier(v, p.f("outlierDetection"), tp.OutlierDetection)
	validateConnectionPool(v, p.f("connectionPool"), tp.ConnectionPool)
	validateLoadBalancer(v, p.f("loadBalancer"), tp.LoadBalancer)
	validateClientTLS(v, p.f("tls"), tp.Tls)
	seen := map[uint32]bool{}
	for i, pl := range tp.PortLevelSettings {
		pp := p.f("portLevelSettings").i(i)
		if pl == nil {
			v.add(pp, "must not be null")
			continue
		}
		if pl.Port == nil {
			v.add(pp.f("port"), "is required")
		} else if r := checkPort(pl.Port.Number); r != "" {
			v.add(pp.f("port").f("number"), "%s", r)
		} else if seen[pl.Port.Number] {
			v.add(pp.f("port").f("number"), "duplicate port %d", pl.Port.Number)
		} else {
			seen[pl.Port.Number] = true
		}
		if pl.LoadBalancer == nil && pl.ConnectionPool == nil && pl.OutlierDetection == nil && pl.Tls == nil {
			v.add(pp, "at least one of loadBalancer, connectionPool, outlierDetection or tls is required")
			continue
		}
		validateOutlier(v, pp.f("outlierDetection"), pl.OutlierDetection)
		validateConnectionPool(v, pp.f("connectionPool"), pl.ConnectionPool)
		validateLoadBalancer(v, pp.f("loadBalancer"), pl.LoadBalancer)
		validateClientTLS(v, pp.f("tls"), pl.Tls)
	}
	if t := tp.Tunnel; t != nil {
		tp := p.f("tunnel")
		if t.Protocol != "" && t.Protocol != "CONNECT" && t.Protocol != "POST" {
			v.add(tp.f("protocol"), "invalid protocol %q (want CONNECT or POST)", t.Protocol)
		}
		if checkFQDN(t.TargetHost) != "" && !isIP(t.TargetHost) {
			v.add(tp.f("targetHost"), "invalid host %q: must be a FQDN or an IP address", t.TargetHost)
		}
		v.addIf(tp.f("targetPort"), checkPort(t.TargetPort))
	}
	if rb := tp.RetryBudget; rb != nil {
		if val := rb.Percent.GetValue(); rb.Percent != nil && (val < 0 || val > 100) {
			v.add(p.f("retryBudget").f("percent"), "must be in the range 0..100, got %v", val)
		}
		v.duration(p.f("retryBudget").f("budgetInterval"), rb.BudgetInterval)
	}
}

func validateOutlier(v *validator, p fpath, o *networking.OutlierDetection) {
	if o == nil {
		return
	}
	v.nonNegative(p.f("consecutiveErrors"), o.ConsecutiveErrors) //nolint:staticcheck // deprecated, still accepted
	if o.ConsecutiveLocalOriginFailures.GetValue() > 0 && !o.SplitExternalLocalOriginErrors {
		v.add(p.f("consecutiveLocalOriginFailures"), "requires splitExternalLocalOriginErrors: true")
	}
	v.duration(p.f("interval"), o.Interval)
	v.duration(p.f("baseEjectionTime"), o.BaseEjectionTime)
	v.percent0to100(p.f("maxEjectionPercent"), o.MaxEjectionPercent)
	v.percent0to100(p.f("minHealthPercent"), o.MinHealthPercent)
	for i, c := range o.OutlierDetectionHttpErrorCodes {
		if c < 100 || c > 599 {
			v.add(p.f("outlierDetectionHttpErrorCodes").i(i), "HTTP status %d is not in the range 100..599", c)
		}
	}
}

func validateConnectionPool(v *validator, p fpath, c *networking.ConnectionPoolSettings) {
	if c == nil {
		return
	}
	if c.Http == nil && c.Tcp == nil {
		v.add(p, "at least one of tcp or http is required")
		return
	}
	if h := c.Http; h != nil {
		hp := p.f("http")
		v.nonNegative(hp.f("http1MaxPendingRequests"), h.Http1MaxPendingRequests)
		v.nonNegative(hp.f("http2MaxRequests"), h.Http2MaxRequests)
		v.nonNegative(hp.f("maxRequestsPerConnection"), h.MaxRequestsPerConnection)
		v.nonNegative(hp.f("maxRetries"), h.MaxRetries)
		v.nonNegative(hp.f("maxConcurrentStreams"), h.MaxConcurrentStreams)
		v.duration(hp.f("idleTimeout"), h.IdleTimeout)
		if h.H2UpgradePolicy == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && h.UseClientProtocol {
			v.add(hp.f("useClientProtocol"), "must not be true when h2UpgradePolicy is UPGRADE")
		}
		if ka := h.Http2KeepAlive; ka != nil {
			v.duration(hp.f("http2KeepAlive").f("interval"), ka.Interval)
			v.duration(hp.f("http2KeepAlive").f("timeout"), ka.Timeout)
		}
	}
	if t := c.Tcp; t != nil {
		tp := p.f("tcp")
		v.nonNegative(tp.f("maxConnections"), t.MaxConnections)
		v.duration(tp.f("connectTimeout"), t.ConnectTimeout)
		v.duration(tp.f("maxConnectionDuration"), t.MaxConnectionDuration)
		v.duration(tp.f("idleTimeout"), t.IdleTimeout)
		if ka := t.TcpKeepalive; ka != nil {
			v.duration(tp.f("tcpKeepalive").f("time"), ka.Time)
			v.duration(tp.f("tcpKeepalive").f("interval"), ka.Interval)
		}
	}
}

// Envoy's limits for consistent hashing.
const (
	maglevMaxTableSize = 5000011
	ringHashMaxSize    = 8388608
)

func validateLoadBalancer(v *validator, p fpath, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		cp := p.f("consistentHash")
		switch k := ch.HashKey.(type) {
		case nil:
			v.add(cp, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required")
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
			v.addIf(cp.f("httpHeaderName"), checkHeaderName(k.HttpHeaderName))
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
			if k.HttpCookie == nil || k.HttpCookie.Name == "" {
				v.add(cp.f("httpCookie").f("name"), "is required")
			}
			if ttl := k.HttpCookie.GetTtl(); ttl != nil && ttl.AsDuration() < 0 {
				v.add(cp.f("httpCookie").f("ttl"), "must not be negative")
			}
		case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
			if k.HttpQueryParameterName == "" {
				v.add(cp.f("httpQueryParameterName"), "must not be empty")
			}
		}
		if ch.MinimumRingSize != 0 && ch.HashAlgorithm != nil { //nolint:staticcheck // deprecated, still accepted
			v.add(cp, "minimumRingSize and ringHash/maglev are mutually exclusive")
		}
		if ch.MinimumRingSize > ringHashMaxSize { //nolint:staticcheck // deprecated, still accepted
			v.add(cp.f("minimumRingSize"), "must be at most %d", ringHashMaxSize)
		}
		switch a := ch.HashAlgorithm.(type) {
		case *networking.LoadBalancerSettings_ConsistentHashLB_Maglev:
			size := a.Maglev.GetTableSize()
			mp := cp.f("maglev").f("tableSize")
			switch {
			case size == 0:
				v.add(mp, "is required")
			case size >= maglevMaxTableSize:
				v.add(mp, "must be less than %d", maglevMaxTableSize)
			case !isPrime(size):
				v.add(mp, "%d is not a prime number", size)
			}
		case *networking.LoadBalancerSettings_ConsistentHashLB_RingHash_:
			if a.RingHash.GetMinimumRingSize() > ringHashMaxSize {
				v.add(cp.f("ringHash").f("minimumRingSize"), "must be at most %d", ringHashMaxSize)
			}
		}
	}
	validateLocalityLB(v, p.f("localityLbSetting"), lb.LocalityLbSetting)
	v.duration(p.f("warmupDurationSecs"), lb.WarmupDurationSecs)
	if w := lb.Warmup; w != nil {
		v.duration(p.f("warmup").f("duration"), w.Duration)
		if w.MinimumPercent != nil && (w.MinimumPercent.Value < 0 || w.MinimumPercent.Value > 100) {
			v.add(p.f("warmup").f("minimumPercent"), "must be in the range 0..100, got %v", w.MinimumPercent.Value)
		}
	}
}

func isPrime(x uint64) bool {
	if x < 2 {
		return false
	}
	if x < 4 {
		return true
	}
	if x%2 == 0 {
		return false
	}
	limit := uint64(math.Sqrt(float64(x)))
	for f := uint64(3); f <= limit; f += 2 {
		if x%f == 0 {
			return false
		}
	}
	return true
}

func validateLocalityLB(v *validator, p fpath, l *networking.LocalityLoadBalancerSetting) {
	if l == nil {
		return
	}
	if len(l.Distribute) > 0 && len(l.Failover) > 0 {
		v.add(p, "distribute and failover are mutually exclusive")
		return
	}
	if len(l.Failover) > 0 {
		for i, fp := range l.FailoverPriority {
			switch fp {
			case "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone":
				v.add(p.f("failoverPriority").i(i), "topology label %q cannot be combined with failover", fp)
			}
		}
	}
	each(v, p, "distribute", l.Distribute, func(dp fpath, d *networking.LocalityLoadBalancerSetting_Distribute) {
		v.addIf(dp.f("from"), checkLocality(d.From))
		var total uint64
		for _, loc := range sortedKeys(d.To) {
			w := d.To[loc]
			if w == 0 || w > 100 {
				v.add(dp.f("to").k(loc), "weight %d must be in the range 1..100", w)
			}
			v.addIf(dp.f("to").k(loc), checkLocality(loc))
			total += uint64(w)
		}
		if total != 100 {
			v.add(dp.f("to"), "weights must sum to 100, got %d", total)
		}
	})
	each(v, p, "failover", l.Failover, func(fp fpath, f *networking.LocalityLoadBalancerSetting_Failover) {
		if f.From == f.To {
			v.add(fp, "from and to must be different regions")
		}
		if strings.Contains(f.From, "/") || strings.Contains(f.To, "/") {
			v.add(fp, "failover only takes regions (no \"/\")")
		}
		if strings.Contains(f.From, "*") || strings.Contains(f.To, "*") {
			v.add(fp, "failover regions must not contain \"*\"")
		}
	})
}

// checkLocality: region[/zone[/subzone]], with at most one trailing "*".
func checkLocality(loc string) string {
	if n := strings.Count(loc, "*"); n > 1 || n == 1 && !strings.HasSuffix(loc, "*") {
		return fmt.Sprintf("locality %q: at most one \"*\" wildcard, at the end", loc)
	}
	parts := strings.SplitN(loc, "/", 3)
	for _, part := range parts {
		if part == "" {
			return fmt.Sprintf("locality %q: region, zone and subzone must not be empty", loc)
		}
	}
	return ""
}

func validateClientTLS(v *validator, p fpath, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	mustBeEmpty := func(field, val, why string) {
		if val != "" {
			v.add(p.f(field), "must not be set %s", why)
		}
	}
	if t.Mode == networking.ClientTLSSettings_ISTIO_MUTUAL {
		// Istio provisions the mesh certificates itself.
		mustBeEmpty("clientCertificate", t.ClientCertificate, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("privateKey", t.PrivateKey, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("caCertificates", t.CaCertificates, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("credentialName", t.CredentialName, "when mode is ISTIO_MUTUAL")
		return
	}
	if t.InsecureSkipVerify.GetValue() {
		switch t.Mode {
		case networking.ClientTLSSettings_SIMPLE:
			mustBeEmpty("caCertificates", t.CaCertificates, "when insecureSkipVerify is true")
			mustBeEmpty("credentialName", t.CredentialName, "when insecureSkipVerify is true")
			if len(t.SubjectAltNames) > 0 {
				v.add(p.f("subjectAltNames"), "must not be set when insecureSkipVerify is true")
			}
		case networking.ClientTLSSettings_MUTUAL:
			mustBeEmpty("caCertificates", t.CaCertificates, "when insecureSkipVerify is true")
			if len(t.SubjectAltNames) > 0 {
				v.add(p.f("subjectAltNames"), "must not be set when insecureSkipVerify is true")
			}
		}
	}
	if (t.Mode == networking.ClientTLSSettings_SIMPLE || t.Mode == networking.ClientTLSSettings_MUTUAL) && t.CredentialName != "" {
		// The credential (a Secret) carries the certificates.
		mustBeEmpty("clientCertificate", t.ClientCertificate, "when credentialName is set")
		mustBeEmpty("privateKey", t.PrivateKey, "when credentialName is set")
		mustBeEmpty("caCertificates", t.CaCertificates, "when credentialName is set")
		mustBeEmpty("caCrl", t.CaCrl, "when credentialName is set")
		return
	}
	if t.Mode == networking.ClientTLSSettings_MUTUAL {
		if t.ClientCertificate == "" {
			v.add(p.f("clientCertificate"), "is required when mode is MUTUAL (or set credentialName)")
		}
		if t.PrivateKey == "" {
			v.add(p.f("privateKey"), "is required when mode is MUTUAL (or set credentialName)")
		}
	}
}

// ---- Gateway ----

func validateGateway(v *validator, g *networking.Gateway) {
	p := fpath("spec")
	if len(g.Servers) == 0 {
		v.add(p.f("servers"), "at least one server is required")
	}
	portNames := map[string]int{}
	for i, s := range g.Servers {
		sp := p.f("servers").i(i)
		if s == nil {
			v.add(sp, "must not be null")
			continue
		}
		validateServer(v, sp, s)
		if s.Port != nil && s.Port.Name != "" {
			if j, dup := portNames[s.Port.Name]; dup {
				v.add(sp.f("port").f("name"), "duplicate port name %q (also used by servers[%d])", s.Port.Name, j)
			} else {
				portNames[s.Port.Name] = i
			}
		}
	}
	v.labels(p.f("selector"), g.Selector)
}

const unixPrefix = "unix://"

func validateServer(v *validator, p fpath, s *networking.Server) {
	if len(s.Hosts) == 0 {
		v.add(p.f("hosts"), "at least one host is required")
	}
	for i, h := range s.Hosts {
		for _, r := range checkNamespacedHost(h, true) {
			v.add(p.f("hosts").i(i), "%s", r)
		}
	}
	unixBind := strings.HasPrefix(s.Bind, unixPrefix)
	if unixBind {
		v.addIf(p.f("bind"), checkUnixPath(strings.TrimPrefix(s.Bind, unixPrefix)))
		if s.Port != nil && s.Port.Number != 0 {
			v.add(p.f("port").f("number"), "must be 0 when bind is a unix domain socket")
		}
	} else if s.Bind != "" && !isIP(s.Bind) {
		v.add(p.f("bind"), "%q is not a valid IP address", s.Bind)
	}
	var isHTTP, isTLS, protoOK bool
	if s.Port == nil {
		v.add(p.f("port"), "is required")
	} else {
		pp := p.f("port")
		isHTTP, isTLS, protoOK = lookupProtocol(s.Port.Protocol)
		if !protoOK {
			v.add(pp.f("protocol"), "unsupported protocol %q (want one of %s)", s.Port.Protocol, protocolList)
		}
		if !(unixBind && s.Port.Number == 0) {
			v.addIf(pp.f("number"), checkPort(s.Port.Number))
		}
		if s.Port.Name == "" {
			v.add(pp.f("name"), "is required")
		}
		if s.Port.TargetPort != 0 { //nolint:staticcheck // deprecated field, rejected as istiod does
			v.add(pp.f("targetPort"), "has no effect on Gateways")
		}
	}
	t := s.Tls
	if protoOK {
		switch {
		case isTLS && t == nil:
			v.add(p.f("tls"), "is required for HTTPS and TLS servers")
		case !isTLS && t != nil && isHTTP:
			if !t.HttpsRedirect || t.ServerCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
				v.add(p.f("tls"), "plain HTTP servers may only set httpsRedirect; TLS settings belong to HTTPS and TLS servers")
			}
		case !isTLS && t != nil:
			v.add(p.f("tls"), "TLS settings are only allowed on HTTPS and TLS servers")
		}
		if t.GetHttpsRedirect() && !isHTTP {
			v.add(p.f("tls").f("httpsRedirect"), "only allowed on HTTP servers")
		}
	}
	if t != nil && (isTLS || !protoOK) {
		validateServerTLS(v, p.f("tls"), t)
	}
}

func validateServerTLS(v *validator, p fpath, t *networking.ServerTLSSettings) {
	mustBeEmpty := func(field, val, why string) {
		if val != "" {
			v.add(p.f(field), "must not be set %s", why)
		}
	}
	switch t.Mode {
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		mustBeEmpty("serverCertificate", t.ServerCertificate, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("privateKey", t.PrivateKey, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("caCertificates", t.CaCertificates, "when mode is ISTIO_MUTUAL")
		mustBeEmpty("credentialName", t.CredentialName, "when mode is ISTIO_MUTUAL")
		return
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		return // certificates are ignored: the backend terminates TLS
	}
	hasCredential := t.CredentialName != "" || len(t.CredentialNames) > 0 || len(t.TlsCertificates) > 0
	if hasCredential {
		mustBeEmpty("caCrl", t.CaCrl, "when credentialName is set (put the CRL in the credential)")
		return
	}
	mode := t.Mode.String()
	if t.ServerCertificate == "" {
		v.add(p.f("serverCertificate"), "is required when mode is %s (or set credentialName)", mode)
	}
	if t.PrivateKey == "" {
		v.add(p.f("privateKey"), "is required when mode is %s (or set credentialName)", mode)
	}
	switch t.Mode {
	case networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if t.CaCertificates == "" {
			v.add(p.f("caCertificates"), "is required when mode is %s (or set credentialName)", mode)
		}
	case networking.ServerTLSSettings_SIMPLE:
		mustBeEmpty("caCrl", t.CaCrl, "when mode is SIMPLE")
	}
}

// ---- ServiceEntry ----

func validateServiceEntry(v *validator, ns string, se *networking.ServiceEntry) {
	p := fpath("spec")
	if se.WorkloadSelector != nil && len(se.Endpoints) > 0 {
		v.add(p, "endpoints and workloadSelector are mutually exclusive")
	}
	if len(se.Hosts) == 0 {
		v.add(p.f("hosts"), "at least one host is required")
	}
	for i, h := range se.Hosts {
		if h == "*" {
			v.add(p.f("hosts").i(i), "wildcard host \"*\" is not allowed in a ServiceEntry")
			continue
		}
		v.addIf(p.f("hosts").i(i), checkWildcardDomain(h))
	}
	cidr := false
	for i, a := range se.Addresses {
		cidr = cidr || strings.Contains(a, "/")
		v.addIf(p.f("addresses").i(i), checkIPOrCIDR(a))
	}
	if cidr && se.Resolution != networking.ServiceEntry_NONE && se.Resolution != networking.ServiceEntry_STATIC {
		v.add(p.f("addresses"), "CIDR addresses are only allowed with resolution NONE or STATIC")
	}
	portNames := map[string]bool{}
	portNumbers := map[uint32]bool{}
	each(v, p, "ports", se.Ports, func(pp fpath, port *networking.ServicePort) {
		if r := checkPort(port.Number); r != "" {
			v.add(pp.f("number"), "%s", r)
		} else if portNumbers[port.Number] {
			v.add(pp.f("number"), "duplicate port %d", port.Number)
		}
		portNumbers[port.Number] = true
		switch {
		case port.Name == "":
			v.add(pp.f("name"), "is required")
		case !isDNSLabel(port.Name):
			v.add(pp.f("name"), "invalid port name %q: must be a DNS-1123 label", port.Name)
		case portNames[port.Name]:
			v.add(pp.f("name"), "duplicate port name %q", port.Name)
		}
		portNames[port.Name] = true
		if _, _, ok := lookupProtocol(port.Protocol); port.Protocol != "" && !ok {
			v.add(pp.f("protocol"), "unsupported protocol %q (want one of %s)", port.Protocol, protocolList)
		}
		if port.TargetPort != 0 {
			v.addIf(pp.f("targetPort"), checkPort(port.TargetPort))
		}
	})

	switch se.Resolution {
	case networking.ServiceEntry_NONE:
		if len(se.Endpoints) > 0 {
			v.add(p.f("endpoints"), "must be empty when resolution is NONE")
		}
	case networking.ServiceEntry_STATIC:
		if len(se.Endpoints) == 0 && se.WorkloadSelector == nil {
			v.add(p, "resolution STATIC requires endpoints or a workloadSelector")
		}
		each(v, p, "endpoints", se.Endpoints, func(epp fpath, ep *networking.WorkloadEntry) {
			validateWorkloadEntry(v, epp, ep, portNames, false)
		})
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.Endpoints) == 0 {
			for i, h := range se.Hosts {
				if h != "*" && checkFQDN(h) != "" && checkWildcardDomain(h) == "" {
					v.add(p.f("hosts").i(i), "host %q must be a FQDN (not a wildcard) when resolution is %s and there are no endpoints", h, se.Resolution)
				}
			}
		}
		if se.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && len(se.Endpoints) > 1 {
			v.add(p.f("endpoints"), "at most one endpoint is allowed when resolution is DNS_ROUND_ROBIN")
		}
		each(v, p, "endpoints", se.Endpoints, func(epp fpath, ep *networking.WorkloadEntry) {
			validateWorkloadEntry(v, epp, ep, portNames, true)
		})
	}
	if se.Resolution != networking.ServiceEntry_NONE && len(se.Hosts) > 1 {
		// Plain TCP carries no host name, so several hosts cannot be told apart.
		for i, port := range se.Ports {
			if port == nil {
				continue
			}
			isHTTP, isTLS, _ := lookupProtocol(port.Protocol)
			if !isHTTP && !isTLS {
				v.add(p.f("ports").i(i).f("protocol"), "multiple hosts need HTTP or TLS ports (protocol %q cannot tell the hosts apart) unless resolution is NONE", port.Protocol)
				break
			}
		}
	}
	if se.WorkloadSelector != nil {
		v.selector(p.f("workloadSelector").f("labels"), se.WorkloadSelector.Labels)
	}
	v.exportTo(p.f("exportTo"), ns, se.ExportTo, true, false)
	for i, san := range se.SubjectAltNames {
		if san == "" {
			v.add(p.f("subjectAltNames").i(i), "must not be empty")
		}
	}
}

// ---- WorkloadEntry ----

// validateWorkloadEntry checks a WorkloadEntry or a ServiceEntry endpoint.
// servicePorts, when not nil, are the port names the endpoint may map;
// allowFQDN is false for STATIC endpoints, which must be IPs.
func validateWorkloadEntry(v *validator, p fpath, we *networking.WorkloadEntry, servicePorts map[string]bool, allowFQDN bool) {
	addr := we.Address
	switch {
	case addr == "":
		// A workload on another network is reached through that network's
		// gateway, so its address may be left out.
		if we.Network == "" {
			v.add(p.f("address"), "is required")
		}
	case strings.HasPrefix(addr, unixPrefix):
		v.addIf(p.f("address"), checkUnixPath(strings.TrimPrefix(addr, unixPrefix)))
		if len(we.Ports) > 0 {
			v.add(p.f("ports"), "must be empty for a unix domain socket address")
		}
	case isIP(addr):
	case !allowFQDN:
		v.add(p.f("address"), "%q is not a valid IP address", addr)
	default:
		if checkFQDN(addr) != "" {
			v.add(p.f("address"), "%q is not a valid IP address or hostname", addr)
		}
	}
	for _, name := range sortedKeys(we.Ports) {
		pp := p.f("ports").k(name)
		if !isDNSLabel(name) {
			v.add(pp, "invalid port name %q: must be a DNS-1123 label", name)
		} else if servicePorts != nil && !servicePorts[name] {
			v.add(pp, "port name %q is not declared in the ServiceEntry's ports", name)
		}
		v.addIf(pp, checkPort(we.Ports[name]))
	}
	v.labels(p.f("labels"), we.Labels)
	if we.ServiceAccount != "" && !isK8sSubdomain(we.ServiceAccount) {
		v.add(p.f("serviceAccount"), "invalid service account %q: must be a DNS-1123 subdomain", we.ServiceAccount)
	}
	if we.Locality != "" {
		v.addIf(p.f("locality"), checkLocality(we.Locality))
	}
}

func validateWorkloadGroup(v *validator, wg *networking.WorkloadGroup) {
	p := fpath("spec")
	if wg.Template == nil {
		v.add(p.f("template"), "is required")
	} else {
		// The address is filled in when a workload registers.
		v.labels(p.f("template").f("labels"), wg.Template.Labels)
		for _, name := range sortedKeys(wg.Template.Ports) {
			v.addIf(p.f("template").f("ports").k(name), checkPort(wg.Template.Ports[name]))
		}
	}
	if wg.Metadata != nil {
		v.labels(p.f("metadata").f("labels"), wg.Metadata.Labels)
	}
	pr := wg.Probe
	if pr == nil {
		return
	}
	pp := p.f("probe")
	v.nonNegative(pp.f("initialDelaySeconds"), pr.InitialDelaySeconds)
	v.nonNegative(pp.f("timeoutSeconds"), pr.TimeoutSeconds)
	v.nonNegative(pp.f("periodSeconds"), pr.PeriodSeconds)
	v.nonNegative(pp.f("successThreshold"), pr.SuccessThreshold)
	v.nonNegative(pp.f("failureThreshold"), pr.FailureThreshold)
	switch m := pr.HealthCheckMethod.(type) {
	case *networking.ReadinessProbe_HttpGet:
		v.addIf(pp.f("httpGet").f("port"), checkPort(m.HttpGet.GetPort()))
		if s := m.HttpGet.GetScheme(); s != "" && s != "HTTP" && s != "HTTPS" {
			v.add(pp.f("httpGet").f("scheme"), "invalid scheme %q (want HTTP or HTTPS)", s)
		}
		for i, h := range m.HttpGet.GetHttpHeaders() {
			v.addIf(pp.f("httpGet").f("httpHeaders").i(i).f("name"), checkHeaderName(h.GetName()))
		}
	case *networking.ReadinessProbe_TcpSocket:
		v.addIf(pp.f("tcpSocket").f("port"), checkPort(m.TcpSocket.GetPort()))
	case *networking.ReadinessProbe_Grpc:
		v.addIf(pp.f("grpc").f("port"), checkPort(m.Grpc.GetPort()))
	case *networking.ReadinessProbe_Exec:
		if len(m.Exec.GetCommand()) == 0 {
			v.add(pp.f("exec").f("command"), "is required")
		}
	case nil:
		v.add(pp, "one of httpGet, tcpSocket, grpc or exec is required")
	}
}

// ---- Sidecar ----

func validateSidecar(v *validator, sc *networking.Sidecar) {
	p := fpath("spec")
	if sc.WorkloadSelector != nil {
		v.selector(p.f("workloadSelector").f("labels"), sc.WorkloadSelector.Labels)
	}
	if len(sc.Egress) == 0 && len(sc.Ingress) == 0 && sc.OutboundTrafficPolicy == nil && sc.InboundConnectionPool == nil {
		v.add(p, "at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool is required")
		return
	}
	ports := map[uint32]bool{}
	for i, in := range sc.Ingress {
		ip := p.f("ingress").i(i)
		if in == nil {
			v.add(ip, "must not be null")
			continue
		}
		if in.Port == nil {
			v.add(ip.f("port"), "is required")
			continue
		}
		validateSidecarPort(v, ip.f("port"), in.Port, false)
		if ports[in.Port.Number] {
			v.add(ip.f("port").f("number"), "duplicate port %d", in.Port.Number)
		}
		ports[in.Port.Number] = true
		if in.Bind != "" && !isIP(in.Bind) {
			v.add(ip.f("bind"), "%q is not a valid IP address", in.Bind)
		}
		if e := in.DefaultEndpoint; e != "" {
			validateDefaultEndpoint(v, ip.f("defaultEndpoint"), e)
		}
		if t := in.Tls; t != nil {
			tp := ip.f("tls")
			if len(t.SubjectAltNames) > 0 {
				v.add(tp.f("subjectAltNames"), "not supported in sidecar ingress")
			}
			if t.HttpsRedirect {
				v.add(tp.f("httpsRedirect"), "not supported in sidecar ingress")
			}
			if t.CredentialName != "" {
				v.add(tp.f("credentialName"), "not supported in sidecar ingress")
			}
			if t.Mode == networking.ServerTLSSettings_ISTIO_MUTUAL || t.Mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH {
				v.add(tp.f("mode"), "mode %s is not supported in sidecar ingress", t.Mode)
			} else {
				validateServerTLS(v, tp, t)
			}
		}
		validateConnectionPool(v, ip.f("connectionPool"), in.ConnectionPool)
	}
	validateConnectionPool(v, p.f("inboundConnectionPool"), sc.InboundConnectionPool)

	ports = map[uint32]bool{}
	sockets := map[string]bool{}
	for i, eg := range sc.Egress {
		ep := p.f("egress").i(i)
		if eg == nil {
			v.add(ep, "must not be null")
			continue
		}
		if eg.Port == nil {
			// The catch-all listener must come last: listeners match in order.
			if i != len(sc.Egress)-1 {
				v.add(ep.f("port"), "only the last egress listener may omit the port")
			}
		} else {
			pp := ep.f("port")
			if eg.Port.Number == 0 {
				if !strings.HasPrefix(eg.Bind, unixPrefix) {
					v.add(pp.f("number"), "port 0 requires a unix domain socket bind (unix://...)")
				} else {
					v.addIf(ep.f("bind"), checkUnixPath(strings.TrimPrefix(eg.Bind, unixPrefix)))
					if sockets[eg.Bind] {
						v.add(ep.f("bind"), "duplicate unix domain socket %q", eg.Bind)
					}
					sockets[eg.Bind] = true
				}
				if eg.CaptureMode != networking.CaptureMode_DEFAULT && eg.CaptureMode != networking.CaptureMode_NONE {
					v.add(ep.f("captureMode"), "must be DEFAULT or NONE for unix domain socket listeners")
				}
				validateSidecarPort(v, pp, eg.Port, true)
			} else {
				validateSidecarPort(v, pp, eg.Port, false)
				if ports[eg.Port.Number] {
					v.add(pp.f("number"), "duplicate port %d", eg.Port.Number)
				}
				ports[eg.Port.Number] = true
				if eg.Bind != "" && !isIP(eg.Bind) {
					v.add(ep.f("bind"), "%q is not a valid IP address", eg.Bind)
				}
			}
		}
		if len(eg.Hosts) == 0 {
			v.add(ep.f("hosts"), "at least one host is required")
		}
		for j, h := range eg.Hosts {
			for _, r := range checkNamespacedHost(h, false) {
				v.add(ep.f("hosts").i(j), "%s", r)
			}
		}
	}
	if tp := sc.OutboundTrafficPolicy; tp != nil && tp.EgressProxy != nil {
		pp := p.f("outboundTrafficPolicy")
		if tp.Mode != networking.OutboundTrafficPolicy_ALLOW_ANY {
			v.add(pp.f("egressProxy"), "requires mode ALLOW_ANY")
		} else {
			v.addIf(pp.f("egressProxy").f("host"), checkFQDN(tp.EgressProxy.Host))
			if tp.EgressProxy.Port == nil {
				v.add(pp.f("egressProxy").f("port"), "is required")
			} else {
				v.destination(pp.f("egressProxy"), tp.EgressProxy)
			}
		}
	}
}

func validateSidecarPort(v *validator, p fpath, port *networking.SidecarPort, unix bool) {
	if port.Name != "" && !isDNSLabel(port.Name) {
		v.add(p.f("name"), "invalid port name %q: must be a DNS-1123 label", port.Name)
	}
	if _, _, ok := lookupProtocol(port.Protocol); port.Protocol != "" && !ok {
		v.add(p.f("protocol"), "unsupported protocol %q (want one of %s)", port.Protocol, protocolList)
	}
	if !unix {
		v.addIf(p.f("number"), checkPort(port.Number))
	}
	if port.TargetPort != 0 { //nolint:staticcheck // deprecated field, rejected as istiod does
		v.add(p.f("targetPort"), "has no effect on Sidecars")
	}
}

func validateDefaultEndpoint(v *validator, p fpath, e string) {
	if strings.HasPrefix(e, unixPrefix) {
		v.addIf(p, checkUnixPath(strings.TrimPrefix(e, unixPrefix)))
		return
	}
	host, port, err := net.SplitHostPort(e)
	if err != nil {
		v.add(p, "invalid endpoint %q: want 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix://<path>", e)
		return
	}
	switch host {
	case "", "127.0.0.1", "0.0.0.0", "::1", "::":
	default:
		v.add(p, "invalid endpoint %q: the host must be 127.0.0.1, 0.0.0.0, ::1 or ::", e)
	}
	n, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		v.add(p, "invalid endpoint %q: port %q is not a number", e, port)
		return
	}
	v.addIf(p, checkPort(uint32(n)))
}
