package translate

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/proxy/hcm"
	proxyroute "github.com/amime-mesh/amime/internal/proxy/route"
)

// Istio's defaults.
var (
	noTimeout = durationpb.New(0)
	// 1 MiB, the limit Istio validates direct response bodies against
	// (Envoy's default is 4 KiB).
	maxDirectResponseBody = wrapperspb.UInt32(1 << 20)
)

const defaultRetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

// httpRoutes translates a VirtualService's http section for one port and
// one set of gateway names ("mesh" for sidecars), Istio's
// BuildHTTPRoutesForVirtualService: every route × match in order, stopping
// after a catch-all. Results are cached per call of Translate.
func (b *builder) httpRoutes(vs *vsEntry, port uint32, gws []string) []*routev3.Route {
	key := routeKey{vs, port, strings.Join(gws, ",")}
	if r, ok := b.routes[key]; ok {
		return r
	}
	var out []*routev3.Route
loop:
	for i, h := range vs.spec.GetHttp() {
		if h.GetDelegate() != nil {
			b.warnf(vs.obj, "http[%d].delegate: not translated yet (delegate VirtualServices); route skipped", i)
			continue
		}
		if len(h.GetMatch()) == 0 {
			if r := b.translateRoute(vs, i, h, nil, -1, port, gws); r != nil {
				out = append(out, r)
			}
			break
		}
		for j, m := range h.GetMatch() {
			r := b.translateRoute(vs, i, h, m, j, port, gws)
			if r == nil {
				continue
			}
			out = append(out, r)
			if isCatchAll(r.GetMatch()) {
				break loop
			}
		}
	}
	out = b.checkRoutes(vs, out)
	b.routes[key] = out
	return out
}

// checkRoutes drops the routes the proxy would refuse: one bad regex or
// header format would otherwise make it refuse the whole route table.
// One compile checks them all; only on failure is each route compiled
// alone to find the culprits.
func (b *builder) checkRoutes(vs *vsEntry, routes []*routev3.Route) []*routev3.Route {
	if len(routes) == 0 || b.in.Shared.checkRoutes(routes) == nil {
		return routes
	}
	var ok []*routev3.Route
	for _, r := range routes {
		if err := checkRoute(r); err != nil {
			b.warnf(vs.obj, "%s: refused by the proxy: %v; route skipped", b.origin[r], err)
			continue
		}
		ok = append(ok, r)
	}
	return ok
}

func isCatchAll(m *routev3.RouteMatch) bool {
	catchAll := false
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		catchAll = p.Prefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		catchAll = p.SafeRegex.GetRegex() == ".*"
	}
	return catchAll && len(m.GetHeaders()) == 0 && len(m.GetQueryParameters()) == 0
}

// sourceMatches decides at translate time the match conditions about the
// requesting proxy (Istio's sourceMatchHTTP).
func (b *builder) sourceMatches(gateways []string, sourceLabels map[string]string, sourceNS, vsNS string, gws []string) bool {
	if len(gateways) > 0 {
		for _, g := range b.resolveGateways(gateways, vsNS) {
			if slices.Contains(gws, g) {
				return true
			}
		}
		return false
	}
	if !hasLabels(b.proxy.Labels, sourceLabels) {
		return false
	}
	return sourceNS == "" || sourceNS == b.proxy.Namespace
}

func (b *builder) translateRoute(vs *vsEntry, i int, in *networking.HTTPRoute, m *networking.HTTPMatchRequest, j int, port uint32, gws []string) *routev3.Route {
	path := fmt.Sprintf("http[%d]", i)
	if m != nil {
		if m.GetPort() != 0 && m.GetPort() != port {
			return nil
		}
		if !b.sourceMatches(m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), vs.obj.Meta.Namespace, gws) {
			return nil
		}
	}
	match, err := translateMatch(m)
	if err != nil {
		b.warnf(vs.obj, "%s.match[%d]: %v; route skipped", path, j, err)
		return nil
	}
	name := in.GetName()
	if m.GetName() != "" {
		name += "." + m.GetName()
	}
	out := &routev3.Route{
		Name:  name,
		Match: match,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
			"config": structpb.NewStringValue(configPath(vs.obj.Meta.Namespace, "virtual-service", vs.obj.Meta.Name)),
		}}}},
	}
	if m.GetStatPrefix() != "" {
		b.warnf(vs.obj, "%s.match[%d].statPrefix: not translated: the proxy has no per-route stats yet", path, j)
	}
	ops := translateHeaders(in.GetHeaders())
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = ops.reqAdd, ops.reqRemove
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = ops.respAdd, ops.respRemove

	switch {
	case in.GetRedirect() != nil:
		if err := applyRedirect(out, in.GetRedirect(), port); err != nil {
			b.warnf(vs.obj, "%s.redirect: %v; route skipped", path, err)
			return nil
		}
	case in.GetDirectResponse() != nil:
		applyDirectResponse(out, in.GetDirectResponse())
	case len(in.GetRoute()) > 0:
		b.applyDestinations(out, vs, path, in, ops.authority, port)
	default:
		b.warnf(vs.obj, "%s: no route, redirect or directResponse; route skipped", path)
		return nil
	}
	out.Decorator = &routev3.Decorator{Operation: routeOperation(out, vs.obj.Meta.Name, port)}

	if in.GetFault() != nil {
		b.applyFault(out, vs, path, in.GetFault())
	}
	if in.GetCorsPolicy() != nil {
		b.warnf(vs.obj, "%s.corsPolicy: not translated: the proxy has no CORS filter yet", path)
	}
	b.origin[out] = path
	return out
}

// checkRoute compiles routes with the proxy's route compiler, which
// applies Envoy's validation (protoc-gen-validate constraints, RE2 syntax,
// rewrite substitutions, header formatters) and the proxy's own.
func checkRoute(routes ...*routev3.Route) error {
	_, err := proxyroute.CompileWithOptions(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{
		Name: "check", Domains: []string{"*"}, Routes: routes,
	}}}, hcm.RouteOptions())
	if err != nil {
		// Drop the synthetic prefix from the field path.
		return errors.New(strings.TrimPrefix(err.Error(), "virtual_hosts[0].routes[0]."))
	}
	return nil
}

// translateMatch is Istio's TranslateRouteMatch.
func translateMatch(in *networking.HTTPMatchRequest) (*routev3.RouteMatch, error) {
	out := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if in == nil {
		return out, nil
	}
	for _, name := range sortedKeys(in.GetHeaders()) {
		h, err := headerMatcher(name, in.GetHeaders()[name])
		if err != nil {
			return nil, err
		}
		out.Headers = append(out.Headers, h)
	}
	for _, name := range sortedKeys(in.GetWithoutHeaders()) {
		sm := in.GetWithoutHeaders()[name]
		h, err := headerMatcher(name, sm)
		if err != nil {
			return nil, err
		}
		h.InvertMatch = true
		// A missing header does not match the value, so it must pass
		// (treat_missing_header_as_empty conflicts with present_match).
		if !presentMatch(sm) {
			h.TreatMissingHeaderAsEmpty = true
		}
		out.Headers = append(out.Headers, h)
	}
	sort.SliceStable(out.Headers, func(i, j int) bool { return out.Headers[i].GetName() < out.Headers[j].GetName() })
	if u := in.GetUri(); u != nil {
		switch mt := u.GetMatchType().(type) {
		case *networking.StringMatch_Exact:
			out.PathSpecifier = &routev3.RouteMatch_Path{Path: mt.Exact}
		case *networking.StringMatch_Prefix:
			out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: mt.Prefix}
		case *networking.StringMatch_Regex:
			out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: mt.Regex}}
		}
	}
	out.CaseSensitive = wrapperspb.Bool(!in.GetIgnoreUriCase())
	for _, pseudo := range []struct {
		name string
		sm   *networking.StringMatch
	}{{":method", in.GetMethod()}, {":authority", in.GetAuthority()}, {":scheme", in.GetScheme()}} {
		if pseudo.sm == nil {
			continue
		}
		h, err := headerMatcher(pseudo.name, pseudo.sm)
		if err != nil {
			return nil, err
		}
		out.Headers = append(out.Headers, h)
	}
	for _, name := range sortedKeys(in.GetQueryParams()) {
		sm := in.GetQueryParams()[name]
		q := &routev3.QueryParameterMatcher{Name: name}
		if presentMatch(sm) {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			s, err := stringMatcher(sm)
			if err != nil {
				return nil, fmt.Errorf("queryParams[%s]: %v", name, err)
			}
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: s}
		}
		out.QueryParameters = append(out.QueryParameters, q)
	}
	return out, nil
}

func headerMatcher(name string, sm *networking.StringMatch) (*routev3.HeaderMatcher, error) {
	if strings.HasPrefix(name, "@request.auth.claims") {
		return nil, fmt.Errorf("headers[%s]: not translated: routing on JWT claims needs the proxy's JWT filter", name)
	}
	out := &routev3.HeaderMatcher{Name: name}
	if presentMatch(sm) {
		out.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return out, nil
	}
	s, err := stringMatcher(sm)
	if err != nil {
		return nil, fmt.Errorf("headers[%s]: %v", name, err)
	}
	out.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
	return out, nil
}

// presentMatch: an empty match, or Istio's regex "*", means "present".
func presentMatch(sm *networking.StringMatch) bool {
	if sm == nil || sm.GetMatchType() == nil {
		return true
	}
	return sm.GetRegex() == "*"
}

func stringMatcher(sm *networking.StringMatch) (*matcherv3.StringMatcher, error) {
	switch mt := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: mt.Exact}}, nil
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: mt.Prefix}}, nil
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: mt.Regex}}}, nil
	}
	return nil, fmt.Errorf("empty string match")
}

type headerOps struct {
	reqAdd, respAdd       []*corev3.HeaderValueOption
	reqRemove, respRemove []string
	authority             string
}

// translateHeaders is Istio's TranslateHeadersOperations: set overwrites,
// add appends, keys sorted; Host/:authority in request headers becomes a
// host rewrite, other pseudo-headers are dropped (Envoy refuses them).
func translateHeaders(h *networking.Headers) headerOps {
	var ops headerOps
	if h == nil {
		return ops
	}
	setAuth := ""
	ops.reqAdd, setAuth = headerValues(h.GetRequest().GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	add, addAuth := headerValues(h.GetRequest().GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	ops.reqAdd = append(ops.reqAdd, add...)
	ops.authority = addAuth
	if setAuth != "" {
		ops.authority = setAuth
	}
	ops.respAdd, _ = headerValues(h.GetResponse().GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	add, _ = headerValues(h.GetResponse().GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	ops.respAdd = append(ops.respAdd, add...)
	ops.reqRemove = dropInternal(h.GetRequest().GetRemove())
	ops.respRemove = dropInternal(h.GetResponse().GetRemove())
	return ops
}

func headerValues(m map[string]string, action corev3.HeaderValueOption_HeaderAppendAction) ([]*corev3.HeaderValueOption, string) {
	var out []*corev3.HeaderValueOption
	authority := ""
	for _, k := range sortedKeys(m) {
		if strings.EqualFold(k, ":authority") || strings.EqualFold(k, "host") {
			authority = m[k]
		}
		if internalHeader(k) {
			continue
		}
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: m[k]}, AppendAction: action})
	}
	return out, authority
}

func internalHeader(k string) bool { return strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") }

func dropInternal(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !internalHeader(k) {
			out = append(out, k)
		}
	}
	return out
}

// applyDestinations is Istio's applyHTTPRouteDestination: one destination
// is a plain cluster, several are weighted_clusters (weight 0 skipped; the
// proxy, like Envoy, divides by the sum, which normalizes the weights).
func (b *builder) applyDestinations(out *routev3.Route, vs *vsEntry, path string, in *networking.HTTPRoute, authority string, port uint32) {
	action := &routev3.RouteAction{Timeout: noTimeout}
	if in.GetTimeout() != nil {
		action.Timeout = in.GetTimeout()
	}
	b.boundGRPCTimeout(action)
	if rw := in.GetRewrite(); rw != nil {
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			action.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: rr.GetMatch()}, Substitution: rr.GetRewrite()}
		} else if rw.GetUri() != "" {
			action.PrefixRewrite = rw.GetUri()
		}
		if rw.GetAuthority() != "" {
			authority = rw.GetAuthority()
		}
	}
	if authority != "" {
		action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: authority}
	}
	dsts := in.GetRoute()
	if len(dsts) == 1 {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: b.destinationCluster(vs, path+".route[0]", dsts[0].GetDestination(), port)}
		ops := translateHeaders(dsts[0].GetHeaders())
		out.RequestHeadersToAdd = append(out.RequestHeadersToAdd, ops.reqAdd...)
		out.RequestHeadersToRemove = append(out.RequestHeadersToRemove, ops.reqRemove...)
		out.ResponseHeadersToAdd = append(out.ResponseHeadersToAdd, ops.respAdd...)
		out.ResponseHeadersToRemove = append(out.ResponseHeadersToRemove, ops.respRemove...)
		if ops.authority != "" && action.HostRewriteSpecifier == nil {
			action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
		}
	} else {
		allZero := true
		for _, d := range dsts {
			allZero = allZero && d.GetWeight() == 0
		}
		if allZero {
			b.warnf(vs.obj, "%s.route: no destination has a weight; traffic is split evenly", path)
		}
		wc := &routev3.WeightedCluster{}
		for k, d := range dsts {
			w := uint32(max(d.GetWeight(), 0))
			if allZero {
				w = 1
			}
			if w == 0 {
				continue
			}
			cw := &routev3.WeightedCluster_ClusterWeight{
				Name:   b.destinationCluster(vs, fmt.Sprintf("%s.route[%d]", path, k), d.GetDestination(), port),
				Weight: wrapperspb.UInt32(w),
			}
			ops := translateHeaders(d.GetHeaders())
			cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = ops.reqAdd, ops.reqRemove
			cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = ops.respAdd, ops.respRemove
			if ops.authority != "" {
				cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	// consistentHash of the destinations' DestinationRules: Envoy has one
	// hash policy per route, so the first destination with one gives it
	// (Istio's hashByDestination).
	for _, d := range dsts {
		if hp := b.hashPolicy(vs, d.GetDestination(), port); hp != nil {
			action.HashPolicy = hp
			break
		}
	}
	retries := in.GetRetries()
	if retries == nil {
		retries = b.mesh.DefaultHTTPRetry
	}
	action.RetryPolicy = b.retryPolicy(vs, path, retries)
	b.applyMirrors(action, vs, path, in, port)
	out.Action = &routev3.Route_Route{Route: action}
}

// applyMirrors is Istio's request mirroring translation: mirror (with
// mirrorPercentage, or the deprecated mirrorPercent) and each of mirrors
// become a request_mirror_policies entry; an explicit 0% mirrors nothing,
// no percentage mirrors everything.
func (b *builder) applyMirrors(action *routev3.RouteAction, vs *vsEntry, path string, in *networking.HTTPRoute, port uint32) {
	if m := in.GetMirror(); m != nil {
		var frac *corev3.RuntimeFractionalPercent
		switch {
		case in.GetMirrorPercentage() != nil:
			frac = mirrorFraction(in.GetMirrorPercentage().GetValue())
		case in.GetMirrorPercent() != nil:
			frac = mirrorFraction(float64(in.GetMirrorPercent().GetValue()))
		default:
			frac = mirrorFraction(100)
		}
		if frac != nil {
			action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
				Cluster:         b.destinationCluster(vs, path+".mirror", m, port),
				RuntimeFraction: frac,
				TraceSampled:    wrapperspb.Bool(false),
			})
		}
	}
	for k, mp := range in.GetMirrors() {
		if mp.GetDestination() == nil {
			continue
		}
		frac := mirrorFraction(100)
		if mp.GetPercentage() != nil {
			frac = mirrorFraction(mp.GetPercentage().GetValue())
		}
		if frac == nil {
			continue
		}
		action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         b.destinationCluster(vs, fmt.Sprintf("%s.mirrors[%d]", path, k), mp.GetDestination(), port),
			RuntimeFraction: frac,
			TraceSampled:    wrapperspb.Bool(false),
		})
	}
}

// mirrorFraction is Istio's percent to FractionalPercent (numerator
// percent*10000 of a MILLION); nil for 0% or less.
func mirrorFraction(percent float64) *corev3.RuntimeFractionalPercent {
	if percent <= 0 {
		return nil
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator:   uint32(percent * 10000),
		Denominator: typev3.FractionalPercent_MILLION,
	}}
}

// destinationCluster names the cluster of a destination (Istio's
// GetDestinationCluster): the port is the destination's, else the
// service's only port, else the port the route serves.
func (b *builder) destinationCluster(vs *vsEntry, path string, d *networking.Destination, port uint32) string {
	host := b.resolveHost(d.GetHost(), vs.obj.Meta.Namespace)
	svc := b.reg.Lookup(host, b.proxy.Namespace)
	switch {
	case d.GetPort() != nil:
		port = d.GetPort().GetNumber()
	case svc != nil && len(svc.Ports) == 1:
		port = svc.Ports[0].Number
	}
	if svc == nil {
		b.warnf(vs.obj, "%s: host %q is not a known service: requests get 503 (NC)", path, host)
	} else if d.GetSubset() != "" && !b.hasSubset(host, svc.Namespace, d.GetSubset()) {
		b.warnf(vs.obj, "%s: subset %q of %q is not defined by a DestinationRule: requests get 503 (NC)", path, d.GetSubset(), host)
	}
	return OutboundCluster(port, d.GetSubset(), host)
}

// retryPolicy is Istio's ConvertPolicy. retry_priority (for
// retryRemoteLocalities) is left out: the proxy has no locality-aware
// balancing yet.
func (b *builder) retryPolicy(vs *vsEntry, path string, in *networking.HTTPRetry) *routev3.RetryPolicy {
	out := &routev3.RetryPolicy{
		NumRetries:                    wrapperspb.UInt32(2),
		RetryOn:                       defaultRetryOn,
		RetriableStatusCodes:          []uint32{http.StatusServiceUnavailable},
		HostSelectionRetryMaxAttempts: 5,
		// Retry on another host than the one that just failed.
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: copyAny(previousHostsPredicate)},
		}},
	}
	if in == nil {
		return out
	}
	if in.GetAttempts() <= 0 {
		// Explicitly disabled.
		return nil
	}
	out.NumRetries = wrapperspb.UInt32(uint32(in.GetAttempts()))
	if in.GetRetryOn() != "" {
		var on []string
		var codes []uint32
		for _, part := range strings.Split(in.GetRetryOn(), ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if n, err := strconv.Atoi(part); err == nil && http.StatusText(n) != "" {
				codes = append(codes, uint32(n))
			} else {
				on = append(on, part)
			}
		}
		out.RetryOn, out.RetriableStatusCodes = strings.Join(on, ","), codes
		if len(codes) > 0 && !strings.Contains(out.RetryOn, "retriable-status-codes") {
			if out.RetryOn != "" {
				out.RetryOn += ","
			}
			out.RetryOn += "retriable-status-codes"
		}
	}
	if in.GetPerTryTimeout() != nil {
		out.PerTryTimeout = in.GetPerTryTimeout()
	}
	if in.GetBackoff() != nil {
		out.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: in.GetBackoff()}
	}
	if in.GetRetryRemoteLocalities().GetValue() && vs != nil {
		b.warnf(vs.obj, "%s.retries.retryRemoteLocalities: not translated: the proxy has no retry priorities yet", path)
	}
	return out
}

func applyRedirect(out *routev3.Route, r *networking.HTTPRedirect, port uint32) error {
	rd := &routev3.RedirectAction{HostRedirect: r.GetAuthority()}
	switch {
	case r.GetUri() != "":
		rd.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.GetUri()}
	case r.GetPrefixRewrite() != "":
		rd.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.GetPrefixRewrite()}
	}
	if r.GetScheme() != "" {
		rd.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.GetScheme()}
	}
	if r.GetRedirectPort() != nil {
		switch p := r.GetRedirectPort().(type) {
		case *networking.HTTPRedirect_DerivePort:
			// Envoy cannot derive the port per request, but the routes are
			// built per port: use it (Istio does the same).
			if p.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				rd.PortRedirect = port
			}
		case *networking.HTTPRedirect_Port:
			rd.PortRedirect = p.Port
		}
		scheme := r.GetScheme()
		if scheme == "" {
			scheme = "http"
		}
		// No explicit :80 or :443 for their own schemes.
		if (rd.PortRedirect == 80 && scheme == "http") || (rd.PortRedirect == 443 && scheme == "https") {
			rd.PortRedirect = 0
		}
	}
	switch r.GetRedirectCode() {
	case 0, 301:
		rd.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 302:
		rd.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		rd.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		rd.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		rd.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		return fmt.Errorf("redirectCode %d is not supported by Envoy", r.GetRedirectCode())
	}
	out.Action = &routev3.Route_Redirect{Redirect: rd}
	return nil
}

func applyDirectResponse(out *routev3.Route, d *networking.HTTPDirectResponse) {
	dr := &routev3.DirectResponseAction{Status: d.GetStatus()}
	switch body := d.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body.String_}}
	case *networking.HTTPBody_Bytes:
		dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: body.Bytes}}
	}
	out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
}

// routeOperation is Istio's GetRouteOperation, the trace span name.
func routeOperation(r *routev3.Route, vsName string, port uint32) string {
	path := "/*"
	switch p := r.GetMatch().GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		path = p.Prefix + "*"
	case *routev3.RouteMatch_Path:
		path = p.Path
	case *routev3.RouteMatch_SafeRegex:
		path = p.SafeRegex.GetRegex()
	}
	if c := r.GetRoute().GetCluster(); c != "" {
		if parts := strings.SplitN(c, "|", 4); len(parts) == 4 {
			return parts[3] + ":" + parts[1] + path
		}
	}
	return vsName + ":" + strconv.FormatUint(uint64(port), 10) + path
}

// defaultRetry is the mesh's default policy, built once per Translate and
// shared by the default routes (read-only).
func (b *builder) defaultRetry() *routev3.RetryPolicy {
	if !b.defaultRetrySet {
		b.defaultRetrySet = true
		b.defaultRetryPolicy = b.retryPolicy(nil, "", b.mesh.DefaultHTTPRetry)
	}
	return b.defaultRetryPolicy
}

// defaultRoute is the route of a service without VirtualService (Istio's
// BuildDefaultHTTPOutboundRoute).
func (b *builder) defaultRoute(cluster, host string, port uint32) *routev3.Route {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		Timeout:          noTimeout,
		RetryPolicy:      b.defaultRetry(),
	}
	b.boundGRPCTimeout(action)
	return &routev3.Route{
		Name:      "default",
		Match:     &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action:    &routev3.Route_Route{Route: action},
		Decorator: &routev3.Decorator{Operation: host + ":" + strconv.FormatUint(uint64(port), 10) + "/*"},
	}
}

// boundGRPCTimeout makes the route timeout bound gRPC deadlines too, as
// Istio does: proxies read max_grpc_timeout (the grpc-timeout header is
// capped by it), gRPC clients only max_stream_duration (gRFC A31), 0
// meaning no limit in both.
func (b *builder) boundGRPCTimeout(a *routev3.RouteAction) {
	if b.proxy.Type == GRPC {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: a.Timeout}
		return
	}
	a.MaxGrpcTimeout = a.Timeout
}

// catchAllVirtualHost handles hosts outside the registry: PassthroughCluster
// for ALLOW_ANY, a 502 for REGISTRY_ONLY (Istio's allow_any / block_all).
func (b *builder) catchAllVirtualHost() *routev3.VirtualHost {
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if b.mesh.OutboundTrafficPolicy == RegistryOnly {
		return &routev3.VirtualHost{Name: "block_all", Domains: []string{"*"}, IncludeRequestAttemptCount: true, Routes: []*routev3.Route{{
			Name: "block_all", Match: match,
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
		}}}
	}
	return &routev3.VirtualHost{Name: "allow_any", Domains: []string{"*"}, IncludeRequestAttemptCount: true, Routes: []*routev3.Route{{
		Name: "allow_any", Match: match,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: PassthroughCluster},
			Timeout:          noTimeout,
			MaxGrpcTimeout:   noTimeout,
		}},
	}}}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
