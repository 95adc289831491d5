package explain

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/fault"
	"github.com/amime-mesh/amime/internal/proxy/hcm"
	"github.com/amime-mesh/amime/internal/proxy/jwtauthn"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

const routerTypeURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// httpHop is the HTTP connection manager's part, in its order: route
// selection, the HTTP filters, then the router's answer or forward
// (hcm's stream.serve).
func (e *engine) httpHop(p *Proxy, hop int, m *hcmv3.HttpConnectionManager, in *request, conn connInfo, share float64, depth int) {
	r := in.clone()
	rc := m.GetRouteConfig()
	if rc == nil {
		name := m.GetRds().GetRouteConfigName()
		i := slices.IndexFunc(p.Resources.Routes, func(x *routev3.RouteConfiguration) bool { return x.GetName() == name })
		if i < 0 {
			e.step(hop, Step{Kind: "route_configuration", Name: name, Decision: "route configuration " + name + " is not served",
				Why: "the listener waits for it (warming): the proxy does not accept connections there yet"})
			e.outcome(hop, share, Outcome{Reason: "route configuration " + name + " of " + p.name() + " is missing: its listener is not serving"})
			return
		}
		rc = p.Resources.Routes[i]
	}
	table, err := route.CompileWithOptions(rc, hcm.RouteOptions())
	if err != nil {
		e.step(hop, Step{Kind: "route_configuration", Name: rc.GetName(), Decision: "the proxy refuses route configuration " + rc.GetName(), Why: err.Error()})
		e.outcome(hop, share, Outcome{Reason: "the proxy refuses route configuration " + rc.GetName() + ": " + err.Error()})
		return
	}
	rt := table.Select(&r.m, 0)
	vh := e.virtualHostStep(hop, rc, rt, r)
	e.routeStep(hop, rc, vh, rt, r)

	// HTTP filters run on the routed request, before the router acts.
	var meta map[string]*structpb.Struct
	for _, f := range m.GetHttpFilters() {
		tc := f.GetTypedConfig()
		switch tc.GetTypeUrl() {
		case routerTypeURL:
		case fault.TypeURL:
			if share = e.faultFilter(hop, f.GetName(), tc, rt, share); share <= 0 {
				return
			}
		case jwtauthn.TypeURL:
			md, ok := e.jwtFilter(hop, f.GetName(), tc, rt, r, share)
			if !ok {
				return
			}
			for k, v := range md {
				if meta == nil {
					meta = map[string]*structpb.Struct{}
				}
				meta[k] = v
			}
		case rbac.HTTPTypeURL:
			if !e.httpRBAC(p, hop, f.GetName(), tc, rt, r, conn, meta, share) {
				return
			}
		default:
			if strings.Contains(f.GetName(), "metadata_exchange") {
				continue // telemetry only: no decision
			}
			e.step(hop, Step{Kind: "filter", Name: f.GetName(), Decision: "HTTP filter not evaluated",
				Why: "type " + tc.GetTypeUrl() + " is not one explain evaluates"})
		}
	}
	if rt == nil {
		e.step(hop, Step{Kind: "verdict", Decision: "no route: the proxy answers 404", Status: 404, Flags: "NR", Details: "route_not_found"})
		e.outcome(hop, share, Outcome{Status: 404, Flags: "NR", Details: "route_not_found",
			Reason: "no route of " + p.name() + " matches " + r.m.Method + " " + r.m.Authority + r.m.Path})
		return
	}
	switch rt.Kind() {
	case route.DirectResponse:
		e.directResponse(p, hop, vh, rt, r, share)
		return
	case route.Redirect:
		loc := rt.Location(&r.m)
		e.step(hop, Step{Kind: "verdict", Decision: fmt.Sprintf("redirect %d to %s", rt.Status(), loc), Status: rt.Status(), Details: "via_redirect",
			Config: routeOrigin(rt.Proto())})
		e.outcome(hop, share, Outcome{Status: rt.Status(), Reason: "redirected to " + loc, By: routeOrigin(rt.Proto()), Details: "via_redirect"})
		return
	}
	e.forward(p, hop, rt, r, conn, share, depth)
}

// virtualHostStep explains the virtual host the table chose for the
// request's authority (or, when no route matched, the one whose domains
// match, as Envoy's search order finds it).
func (e *engine) virtualHostStep(hop int, rc *routev3.RouteConfiguration, rt *route.Route, r *request) *routev3.VirtualHost {
	host := r.m.Authority
	if rc.GetIgnorePortInHostMatching() {
		host = hostOnly(host)
	}
	var vh *routev3.VirtualHost
	var domain, kind string
	if rt != nil {
		for _, v := range rc.GetVirtualHosts() {
			if v.GetName() == rt.VirtualHost() {
				vh = v
				domain, kind = matchDomain([]*routev3.VirtualHost{v}, host)
			}
		}
	} else {
		var d string
		vh, d, kind = findVirtualHost(rc.GetVirtualHosts(), host)
		domain = d
	}
	s := Step{Kind: "virtual_host", Name: rc.GetName()}
	switch {
	case vh == nil:
		s.Decision = "no virtual host"
		s.Why = fmt.Sprintf("no domain of route configuration %s matches %q", rc.GetName(), host)
	default:
		s.Name = vh.GetName()
		s.Decision = "virtual host " + vh.GetName()
		s.Why = fmt.Sprintf("host %q matches domain %q (%s) of route configuration %s", host, domain, kind, rc.GetName())
		if rc.GetIgnorePortInHostMatching() && host != r.m.Authority {
			s.Why += "; the port is ignored in host matching"
		}
		switch vh.GetName() {
		case "allow_any":
			s.Why += ": no service in the registry has this host, and outboundTrafficPolicy is ALLOW_ANY"
		case "block_all":
			s.Why += ": no service in the registry has this host, and outboundTrafficPolicy is REGISTRY_ONLY"
		}
	}
	e.step(hop, s)
	return vh
}

// routeStep explains the chosen route and why the earlier ones of the
// virtual host did not match: each is compiled and matched alone with
// the proxy's route table.
func (e *engine) routeStep(hop int, rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, rt *route.Route, r *request) {
	if vh == nil {
		return
	}
	var skipped []Step
	chosen := -1
	for i, cand := range vh.GetRoutes() {
		if rt != nil && proto.Equal(cand, rt.Proto()) {
			chosen = i
			break
		}
		one := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: vh.GetName(), Domains: []string{"*"}, Routes: []*routev3.Route{cand}}}}
		if t, err := route.CompileWithOptions(one, hcm.RouteOptions()); err == nil && t.Select(&r.m, 0) == nil {
			skipped = append(skipped, Step{Kind: "route", Name: cand.GetName(), Decision: fmt.Sprintf("routes[%d] %s does not match", i, routeLabel(cand)),
				Why: "match: " + describeMatch(cand.GetMatch()), Config: routeOrigin(cand)})
		}
	}
	if rt == nil {
		e.step(hop, Step{Kind: "route", Decision: "no route matches", Why: fmt.Sprintf("none of the %d routes of virtual host %s matches", len(vh.GetRoutes()), vh.GetName()),
			Steps: skipped, Fix: "add a route (or a catch-all without match) for this request to the VirtualService"})
		return
	}
	rp := rt.Proto()
	s := Step{Kind: "route", Name: rt.Name(), Decision: "route " + routeLabel(rp), Config: routeOrigin(rp), Steps: skipped,
		Why: "match: " + describeMatch(rp.GetMatch())}
	if chosen >= 0 {
		s.Decision = fmt.Sprintf("routes[%d] %s", chosen, routeLabel(rp))
	}
	if s.Config == "" {
		switch {
		case strings.HasPrefix(rc.GetName(), "inbound|"):
			s.Why += "; the inbound route: every request to this port goes to the application"
		case rt.Name() == "default":
			s.Why += "; the service has no VirtualService (or none with a route for this port): Istio's default route"
		case vh.GetName() == "allow_any" || vh.GetName() == "block_all":
			s.Why += "; the catch-all route for hosts outside the registry"
		}
	}
	if len(skipped) > 0 {
		s.Why += fmt.Sprintf("; the %d route(s) before it do not match", len(skipped))
	}
	e.step(hop, s)
}

func routeLabel(r *routev3.Route) string {
	if r.GetName() != "" {
		return strconv.Quote(r.GetName())
	}
	return "(unnamed)"
}

// faultFilter explains envoy.filters.http.fault for the route: the
// route's (Istio's) configuration replaces the filter's whole. It returns
// the share of requests that go on.
func (e *engine) faultFilter(hop int, name string, tc *anypb.Any, rt *route.Route, share float64) float64 {
	cfg, err := fault.Parse(tc)
	if err != nil {
		e.step(hop, Step{Kind: "fault", Name: name, Decision: "the proxy refuses this fault configuration", Why: err.Error()})
		return share
	}
	origin := ""
	if rt != nil {
		if c, ok := rt.PerFilterConfig(name).(*fault.Config); ok {
			cfg = c
		} else if c, ok := rt.PerFilterConfig(fault.Name).(*fault.Config); ok {
			cfg = c
		}
		origin = routeOrigin(rt.Proto())
	}
	if cfg.Delay <= 0 && cfg.HTTPStatus == 0 {
		return share
	}
	if cfg.Delay > 0 {
		pct := percentOf(cfg.DelayOn)
		e.step(hop, Step{Kind: "fault", Name: name, Config: origin, Flags: "DI",
			Decision: fmt.Sprintf("delay %s for %s of requests", cfg.Delay, formatPercent(pct)),
			Why:      "fault.delay of the route: the proxy waits before forwarding (response flag DI); the route timeout starts after the delay"})
	}
	if cfg.HTTPStatus == 0 {
		return share
	}
	pct := percentOf(cfg.AbortOn)
	status, what := cfg.HTTPStatus, fmt.Sprintf("abort with HTTP %d", cfg.HTTPStatus)
	if cfg.GRPCStatus >= 0 {
		status, what = 200, fmt.Sprintf("abort with gRPC status %d (HTTP 200)", cfg.GRPCStatus)
	}
	e.step(hop, Step{Kind: "fault", Name: name, Config: origin, Decision: fmt.Sprintf("%s for %s of requests", what, formatPercent(pct)),
		Why: "fault.abort of the route: the proxy answers itself, the request never leaves", Status: status, Flags: "FI", Details: "fault_filter_abort"})
	e.outcome(hop, share*pct/100, Outcome{Status: status, Flags: "FI", Details: "fault_filter_abort", By: origin,
		Reason: fmt.Sprintf("fault injected: %s for %s of requests", what, formatPercent(pct)) + byText(origin)})
	return share * (100 - pct) / 100
}

func byText(origin string) string {
	if origin == "" {
		return ""
	}
	return " by " + origin
}

func percentOf(p fault.Percent) float64 {
	if p.Denominator == 0 || p.Numerator >= p.Denominator {
		return 100
	}
	return float64(p.Numerator) * 100 / float64(p.Denominator)
}

// jwtFilter verifies the request's token with the proxy's jwt_authn
// filter and its configured key sets.
func (e *engine) jwtFilter(hop int, name string, tc *anypb.Any, rt *route.Route, r *request, share float64) (map[string]*structpb.Struct, bool) {
	cfg, err := jwtauthn.Parse(tc)
	if err != nil {
		e.step(hop, Step{Kind: "jwt", Name: name, Decision: "the proxy refuses this jwt_authn configuration", Why: err.Error()})
		return nil, true
	}
	issuers := jwtIssuers(tc)
	f, err := jwtauthn.New(cfg, jwtauthn.Options{Now: e.opts.Now})
	if err != nil {
		e.step(hop, Step{Kind: "jwt", Name: name, Decision: "JWT authentication not evaluated", Why: err.Error()})
		return nil, true
	}
	defer f.Close()
	var pr *jwtauthn.PerRoute
	if rt != nil {
		if c, ok := rt.PerFilterConfig(name).(*jwtauthn.PerRoute); ok {
			pr = c
		} else if c, ok := rt.PerFilterConfig(jwtauthn.Name).(*jwtauthn.PerRoute); ok {
			pr = c
		}
	}
	scheme := r.m.Scheme
	if v, ok := r.m.Headers.Get("x-forwarded-proto"); ok {
		scheme = v
	}
	jr := jwtauthn.Request{Method: r.m.Method, Scheme: scheme, Host: r.m.Authority, Path: r.m.Path, Headers: &r.m.Headers}
	res := f.Authenticate(e.ctx, &jr, pr)
	if res.PathChanged {
		r.m.Path = jr.Path
	}
	by := "RequestAuthentication (issuers " + strings.Join(issuers, ", ") + ")"
	if !res.Passed() {
		why := res.Status.String()
		e.step(hop, Step{Kind: "jwt", Name: name, Config: by, Decision: fmt.Sprintf("token rejected: %d", res.Code), Why: why, Status: res.Code, Details: res.Details})
		e.outcome(hop, share, Outcome{Status: res.Code, Details: res.Details, By: by, Reason: "JWT authentication failed: " + why})
		return nil, false
	}
	md := res.Metadata()
	if md == nil {
		e.step(hop, Step{Kind: "jwt", Name: name, Config: by, Decision: "no token",
			Why: "the request carries no JWT: it passes without a request principal (a RequestAuthentication alone does not require one; an AuthorizationPolicy on requestPrincipals does)"})
		return nil, true
	}
	principal := md[jwtauthn.IstioAuthnFilter].GetFields()[jwtauthn.KeyPrincipal].GetStringValue()
	e.step(hop, Step{Kind: "jwt", Name: name, Config: by, Decision: "token verified", Why: "request principal " + orNone(principal)})
	return md, true
}

func jwtIssuers(tc *anypb.Any) []string {
	m := &jwtv3.JwtAuthentication{}
	if tc.UnmarshalTo(m) != nil {
		return nil
	}
	var out []string
	for _, p := range m.GetProviders() {
		if !slices.Contains(out, p.GetIssuer()) {
			out = append(out, p.GetIssuer())
		}
	}
	slices.Sort(out)
	return out
}

// httpRBAC evaluates one envoy.filters.http.rbac filter as hcm's
// rbacFilter does.
func (e *engine) httpRBAC(p *Proxy, hop int, name string, tc *anypb.Any, rt *route.Route, r *request, conn connInfo, meta map[string]*structpb.Struct, share float64) bool {
	f, err := rbac.Parse(tc)
	if err != nil {
		e.step(hop, Step{Kind: "rbac", Name: name, Decision: "the proxy refuses this RBAC configuration", Why: err.Error()})
		return true
	}
	cfg := &rbachttpv3.RBAC{}
	_ = tc.UnmarshalTo(cfg)
	policies := policyNames(cfg.GetRules().GetPolicies())
	if rt != nil {
		if c, ok := rt.PerFilterConfig(name).(*rbac.Filter); ok {
			f, policies = c, nil
		} else if c, ok := rt.PerFilterConfig(rbac.HTTPName).(*rbac.Filter); ok {
			f, policies = c, nil
		}
	}
	attrs := &rbac.Attributes{Request: r.m, DirectRemote: conn.src, Remote: conn.src, Destination: conn.dst, SNI: conn.sni, Peer: peerOf(conn), Metadata: meta}
	return e.rbacDecision(p, hop, name, f, attrs, policies, share, true)
}

func policyNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rbacDecision runs the proxy's RBAC filter and explains its decision in
// terms of AuthorizationPolicies.
func (e *engine) rbacDecision(p *Proxy, hop int, name string, f *rbac.Filter, attrs *rbac.Attributes, policies []string, share float64, http bool) bool {
	d := f.Decide(attrs)
	var objs []string
	for _, pol := range policies {
		if o := policyObject(pol); !slices.Contains(objs, o) {
			objs = append(objs, o)
		}
	}
	s := Step{Kind: "rbac", Name: name}
	if d.Shadow {
		verdict := "allow"
		if !d.ShadowAllowed {
			verdict = "deny"
		}
		e.step(hop, Step{Kind: "rbac", Name: name, Decision: "dry-run: would " + verdict,
			Config: policyObject(d.ShadowPolicy), Why: "istio.io/dry-run policies are evaluated and logged, not enforced"})
	}
	eng := f.Engine()
	if eng == nil {
		return true
	}
	who := describePeer(attrs)
	switch {
	case eng.Action() == rbac.Log:
		s.Decision = "audit: no effect on the request"
		if d.Policy != "" {
			s.Config = policyObject(d.Policy)
			s.Why = "AUDIT policy matches: the request is logged"
		} else {
			s.Why = "no AUDIT policy matches"
		}
	case !d.Deny && eng.Action() == rbac.Allow:
		s.Decision = "allowed"
		s.Config = policyObject(d.Policy)
		s.Why = fmt.Sprintf("ALLOW policy %s matches the request (%s)", policyRule(d.Policy), who)
	case !d.Deny:
		s.Decision = "not denied"
		s.Why = fmt.Sprintf("no %s rule matches the request (%s); checked: %s", actionName(name), who, strings.Join(objs, ", "))
	case d.Policy != "":
		s.Decision = "denied"
		s.Config = policyObject(d.Policy)
		s.Why = fmt.Sprintf("%s policy %s matches the request (%s)", actionName(name), policyRule(d.Policy), who)
		if strings.HasPrefix(d.Policy, "istio-ext-authz-") {
			s.Why += "; CUSTOM providers are not supported, so amime denies what their rules match (fail closed)"
		}
	default:
		s.Decision = "denied"
		s.Config = strings.Join(objs, ", ")
		s.Why = fmt.Sprintf("ALLOW policies apply to %s and none matches the request (%s): only what an ALLOW policy matches is allowed", p.name(), who)
	}
	if !d.Deny {
		e.step(hop, s)
		return true
	}
	if !http {
		s.Status, s.Flags, s.Details = 503, "UC", d.Details
		e.step(hop, s)
		e.outcome(hop, share, Outcome{Status: 503, Flags: "UC", Details: d.Details, By: s.Config,
			Reason: "RBAC: connection denied by " + s.Config + " at " + p.name()})
		return false
	}
	s.Status, s.Details = rbac.DeniedStatus, d.Details
	e.step(hop, s)
	reason := "RBAC: denied by " + s.Config
	if d.Policy == "" {
		reason = "RBAC: no ALLOW policy matches (policies: " + s.Config + ")"
	}
	e.outcome(hop, share, Outcome{Status: rbac.DeniedStatus, Details: d.Details, By: s.Config, Reason: reason,
		Fix: "change the AuthorizationPolicy if this request should be allowed"})
	return false
}

func actionName(filter string) string {
	switch {
	case strings.HasSuffix(filter, ".deny"):
		return "DENY"
	case strings.HasSuffix(filter, ".allow"):
		return "ALLOW"
	case strings.HasSuffix(filter, ".custom"):
		return "CUSTOM"
	case strings.HasSuffix(filter, ".audit"):
		return "AUDIT"
	}
	return "RBAC"
}

func describePeer(a *rbac.Attributes) string {
	var parts []string
	if a.Peer == nil {
		parts = append(parts, "plaintext: no peer identity")
	} else if len(a.Peer.URISANs) > 0 {
		parts = append(parts, "peer "+a.Peer.URISANs[0])
	}
	if pr := a.Metadata[jwtauthn.IstioAuthnFilter].GetFields()[jwtauthn.KeyPrincipal].GetStringValue(); pr != "" {
		parts = append(parts, "request principal "+pr)
	}
	if a.Request.Method != "" {
		parts = append(parts, "method "+a.Request.Method+", path "+a.Request.Path)
	}
	if a.Remote.IsValid() {
		parts = append(parts, "source "+a.Remote.String())
	}
	return strings.Join(parts, ", ")
}

// directResponse is a route that answers itself, e.g. REGISTRY_ONLY's
// block_all.
func (e *engine) directResponse(p *Proxy, hop int, vh *routev3.VirtualHost, rt *route.Route, r *request, share float64) {
	origin := routeOrigin(rt.Proto())
	s := Step{Kind: "verdict", Decision: fmt.Sprintf("direct response %d", rt.Status()), Status: rt.Status(), Details: "direct_response", Config: origin}
	o := Outcome{Status: rt.Status(), Details: "direct_response", By: origin, Reason: "the route answers " + strconv.Itoa(rt.Status()) + " itself" + byText(origin)}
	if vh != nil && vh.GetName() == "block_all" {
		host := hostOnly(r.m.Authority)
		s.Why = "outboundTrafficPolicy REGISTRY_ONLY: hosts outside the registry are blocked (Istio's BlackHole)"
		s.Fix = "declare " + host + " with a ServiceEntry (MESH_EXTERNAL for a host outside the mesh), or set outboundTrafficPolicy mode ALLOW_ANY"
		o.Reason = "REGISTRY_ONLY: " + host + " is not in the service registry, " + p.name() + " blocks it"
		o.By = "MeshConfig outboundTrafficPolicy REGISTRY_ONLY"
		o.Fix = s.Fix
	}
	e.step(hop, s)
	e.outcome(hop, share, o)
}

// routeOrigin names the VirtualService a route comes from (the
// translator's metadata istio.config).
func routeOrigin(r *routev3.Route) string {
	return configObject(r.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue())
}

// configObject turns the translator's config path
// /apis/<group>/<version>/namespaces/<ns>/<kind>/<name> into "Kind ns/name".
func configObject(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) != 7 || parts[0] != "apis" || parts[3] != "namespaces" {
		return ""
	}
	kind := parts[5]
	switch kind {
	case "virtual-service":
		kind = "VirtualService"
	case "destination-rule":
		kind = "DestinationRule"
	}
	return kind + " " + parts[4] + "/" + parts[6]
}

// policyObject names the AuthorizationPolicy of an RBAC policy name
// "ns[<ns>]-policy[<name>]-rule[<i>]" (istiod's, and the translator's).
func policyObject(policy string) string {
	ns, name, _, ok := parsePolicy(policy)
	if !ok {
		return policy
	}
	return "AuthorizationPolicy " + ns + "/" + name
}

func policyRule(policy string) string {
	ns, name, rule, ok := parsePolicy(policy)
	if !ok {
		return strconv.Quote(policy)
	}
	return ns + "/" + name + " rules[" + rule + "]"
}

func parsePolicy(p string) (ns, name, rule string, ok bool) {
	i := strings.Index(p, "ns[")
	if i < 0 {
		return "", "", "", false
	}
	rest := p[i+3:]
	ns, rest, ok1 := strings.Cut(rest, "]-policy[")
	j := strings.LastIndex(rest, "]-rule[")
	if !ok1 || j < 0 {
		return "", "", "", false
	}
	name = rest[:j]
	rule, _, _ = strings.Cut(rest[j+len("]-rule["):], "]")
	return ns, name, rule, true
}

// hostOnly drops a port from an authority.
func hostOnly(authority string) string {
	if strings.HasPrefix(authority, "[") {
		if i := strings.Index(authority, "]"); i > 0 {
			return authority[:i+1]
		}
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.Contains(authority[:i], ":") {
		return authority[:i]
	}
	return authority
}
