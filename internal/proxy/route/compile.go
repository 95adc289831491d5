package route

import (
	"errors"
	"fmt"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Error is a configuration Compile rejects; Path names the field the way
// Envoy-style config errors do, e.g.
// "virtual_hosts[1].routes[0].match.safe_regex.regex". It is the matcher
// package's error type, so that the matchers' errors need no conversion.
type Error = matcher.Error

func errf(path, format string, args ...any) error {
	return &Error{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// FilterConfigParser validates the typed_per_filter_config entry of one
// HTTP filter and returns the parsed form the filter reads back with
// (*Route).PerFilterConfig. It is called once per entry, at Compile.
type FilterConfigParser func(config *anypb.Any) (any, error)

// Options tune CompileWithOptions.
type Options struct {
	// FilterConfigParsers maps HTTP filter names, the keys of
	// typed_per_filter_config at every level, to their parsers. This is
	// the hook for filters with per-route configuration (fault, RBAC, …):
	// a key without a parser is a Compile error, because ignoring a
	// filter's per-route configuration would change its behaviour.
	FilterConfigParsers map[string]FilterConfigParser
}

// Compile is CompileWithOptions with no per-filter configuration parsers:
// any typed_per_filter_config entry is rejected.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	return CompileWithOptions(rc, Options{})
}

// CompileWithOptions validates rc and compiles it. It applies Envoy's proto
// validation rules (protoc-gen-validate) and its semantic checks (regexes,
// unique domains, non-zero weights, header mutation rules, …), rejects the
// fields this package does not implement even if another package's rules
// allowed them, and returns an *Error naming the field path.
func CompileWithOptions(in *routev3.RouteConfiguration, opts Options) (*Table, error) {
	if in == nil {
		return nil, &Error{Reason: "route configuration is nil"}
	}
	rc := proto.Clone(in).(*routev3.RouteConfiguration)
	if err := rc.Validate(); err != nil {
		return nil, fromPGV(err)
	}
	if err := checkImplemented(rc); err != nil {
		return nil, err
	}
	c := &compiler{opts: opts, clusters: map[string]struct{}{}, maxBody: 4096}
	return c.table(rc)
}

// checkImplemented runs this package's own Rules, so that a field another
// package allows on a shared message (say DataSource.filename) is not
// silently ignored here. Retry policies and per-filter configurations are
// left to their owners.
func checkImplemented(rc *routev3.RouteConfiguration) error {
	s := proto.Clone(rc).(*routev3.RouteConfiguration)
	s.TypedPerFilterConfig = nil
	for _, vh := range s.VirtualHosts {
		vh.TypedPerFilterConfig = nil
		vh.RetryPolicy = nil
		for _, r := range vh.Routes {
			r.TypedPerFilterConfig = nil
			if ra := r.GetRoute(); ra != nil {
				ra.RetryPolicy = nil
				for _, cw := range ra.GetWeightedClusters().GetClusters() {
					cw.TypedPerFilterConfig = nil
				}
			}
		}
	}
	if err := Rules().Check(s); err != nil {
		var fe *fieldcheck.Error
		if errors.As(err, &fe) {
			return &Error{Path: fe.Path, Reason: fe.Reason}
		}
		return err
	}
	return nil
}

type compiler struct {
	opts     Options
	clusters map[string]struct{}
	maxBody  int
}

func (c *compiler) table(rc *routev3.RouteConfiguration) (*Table, error) {
	t := &Table{
		name:             rc.Name,
		exact:            map[string]*virtualHost{},
		ignorePort:       rc.IgnorePortInHostMatching,
		ignorePathParams: rc.IgnorePathParametersInPathMatching,
		mostSpecificWins: rc.MostSpecificHeaderMutationsWins,
		validateClusters: rc.GetValidateClusters().GetValue(),
	}
	if rc.MaxDirectResponseBodySizeBytes != nil {
		c.maxBody = int(rc.MaxDirectResponseBodySizeBytes.Value)
	}
	var err error
	if t.req, err = c.mutation(rc.RequestHeadersToAdd, rc.RequestHeadersToRemove, "request_headers_to_add", "request_headers_to_remove"); err != nil {
		return nil, err
	}
	if t.resp, err = c.mutation(rc.ResponseHeadersToAdd, rc.ResponseHeadersToRemove, "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	if t.perFilter, err = c.perFilter(rc.TypedPerFilterConfig, "typed_per_filter_config"); err != nil {
		return nil, err
	}

	suffixes := map[int]map[string]*virtualHost{}
	prefixes := map[int]map[string]*virtualHost{}
	seen := map[string]string{} // lower-case domain -> path of its first use
	for i, vhc := range rc.VirtualHosts {
		vp := fmt.Sprintf("virtual_hosts[%d]", i)
		vh, err := c.virtualHost(vhc, t, vp)
		if err != nil {
			return nil, err
		}
		for j, d := range vhc.Domains {
			dp := fmt.Sprintf("%s.domains[%d]", vp, j)
			ld := header.Lower(d)
			if first, dup := seen[ld]; dup {
				if ld == "*" {
					return nil, errf(dp, `only a single wildcard domain "*" is permitted in a route configuration (also %s)`, first)
				}
				return nil, errf(dp, "duplicate domain %q (also %s): domains must be unique across virtual hosts", d, first)
			}
			seen[ld] = dp
			switch {
			case ld == "*":
				t.def = vh
			case ld != "" && ld[0] == '*':
				addWildcard(suffixes, ld[1:], vh)
			case ld != "" && ld[len(ld)-1] == '*':
				addWildcard(prefixes, ld[:len(ld)-1], vh)
			default:
				t.exact[ld] = vh
			}
		}
	}
	t.suffixes = sortWildcards(suffixes)
	t.prefixes = sortWildcards(prefixes)
	t.onlyDefault = len(t.exact) == 0 && len(t.suffixes) == 0 && len(t.prefixes) == 0
	for name := range c.clusters {
		t.clusters = append(t.clusters, name)
	}
	sort.Strings(t.clusters)
	return t, nil
}

func addWildcard(m map[int]map[string]*virtualHost, key string, vh *virtualHost) {
	if m[len(key)] == nil {
		m[len(key)] = map[string]*virtualHost{}
	}
	m[len(key)][key] = vh
}

// sortWildcards orders wildcard sets longest first: the longest wildcard
// wins ("*-bar.foo.com" before "*.foo.com").
func sortWildcards(m map[int]map[string]*virtualHost) []wildcards {
	var out []wildcards
	for n, set := range m {
		out = append(out, wildcards{n: n, m: set})
	}
	slices.SortFunc(out, func(a, b wildcards) int { return b.n - a.n })
	return out
}

func (c *compiler) virtualHost(vhc *routev3.VirtualHost, t *Table, vp string) (*virtualHost, error) {
	vh := &virtualHost{
		name:                   vhc.Name,
		table:                  t,
		attemptCountInRequest:  vhc.IncludeRequestAttemptCount,
		attemptCountInResponse: vhc.IncludeAttemptCountInResponse,
	}
	var err error
	if vh.req, err = c.mutation(vhc.RequestHeadersToAdd, vhc.RequestHeadersToRemove, vp+".request_headers_to_add", vp+".request_headers_to_remove"); err != nil {
		return nil, err
	}
	if vh.resp, err = c.mutation(vhc.ResponseHeadersToAdd, vhc.ResponseHeadersToRemove, vp+".response_headers_to_add", vp+".response_headers_to_remove"); err != nil {
		return nil, err
	}
	if vh.perFilter, err = c.perFilter(vhc.TypedPerFilterConfig, vp+".typed_per_filter_config"); err != nil {
		return nil, err
	}
	if err := compileRequireTLS(vh, vhc.RequireTls, vp+".require_tls"); err != nil {
		return nil, err
	}
	if vhc.RetryPolicy != nil {
		if err := checkRetry(vhc.RetryPolicy, vp+".retry_policy"); err != nil {
			return nil, err
		}
	}
	for j, r := range vhc.Routes {
		e, err := c.route(r, vh, vhc.RetryPolicy, fmt.Sprintf("%s.routes[%d]", vp, j))
		if err != nil {
			return nil, err
		}
		vh.routes = append(vh.routes, e)
	}
	return vh, nil
}

func (c *compiler) route(r *routev3.Route, vh *virtualHost, vhRetry *routev3.RetryPolicy, p string) (*entry, error) {
	e := &entry{name: r.Name, vh: vh, proto: r}
	if err := c.match(&e.match, r.Match, p+".match"); err != nil {
		return nil, err
	}
	if d := r.Decorator; d != nil {
		e.decorator = Decorator{Operation: d.Operation, Propagate: d.Propagate == nil || d.Propagate.Value}
		e.hasDecorator = true
	}
	if t := r.Tracing; t != nil {
		tags, err := tracing.CompileTags(t.CustomTags, p+".tracing.custom_tags")
		if err != nil {
			return nil, err
		}
		e.tracing = &Tracing{Tags: tags, Sampling: tracing.Sampling{
			Client:  tracing.FractionOf(t.ClientSampling),
			Random:  tracing.FractionOf(t.RandomSampling),
			Overall: tracing.FractionOf(t.OverallSampling),
		}}
	}
	var err error
	if e.req, err = c.mutation(r.RequestHeadersToAdd, r.RequestHeadersToRemove, p+".request_headers_to_add", p+".request_headers_to_remove"); err != nil {
		return nil, err
	}
	if e.resp, err = c.mutation(r.ResponseHeadersToAdd, r.ResponseHeadersToRemove, p+".response_headers_to_add", p+".response_headers_to_remove"); err != nil {
		return nil, err
	}
	if e.perFilter, err = c.perFilter(r.TypedPerFilterConfig, p+".typed_per_filter_config"); err != nil {
		return nil, err
	}
	switch a := r.Action.(type) {
	case *routev3.Route_Route:
		e.kind = Forward
		err = c.forward(e, a.Route, vhRetry, p+".route")
	case *routev3.Route_Redirect:
		e.kind = Redirect
		err = c.redirect(e, a.Redirect, p+".redirect")
	case *routev3.Route_DirectResponse:
		e.kind = DirectResponse
		err = c.direct(e, a.DirectResponse, p+".direct_response")
	default:
		err = errf(p, "route action is not supported by amime")
	}
	if err != nil {
		return nil, err
	}
	if e.weighted == nil {
		e.single = &Route{e: e}
	}
	return e, nil
}

func (c *compiler) match(m *routeMatch, rm *routev3.RouteMatch, p string) error {
	if _, ok := rm.PathSpecifier.(*routev3.RouteMatch_ConnectMatcher_); ok {
		m.connect = true
	} else {
		var err error
		if m.path, err = matcher.NewRoutePath(rm, p); err != nil {
			return err
		}
		s := &m.path.String
		m.plain = s.Kind == matcher.Prefix && !s.IgnoreCase && !m.path.Separated
	}
	m.grpc = rm.Grpc != nil
	for i, hm := range rm.Headers {
		h, err := matcher.NewHeader(hm, fmt.Sprintf("%s.headers[%d]", p, i))
		if err != nil {
			return err
		}
		m.headers = append(m.headers, h)
	}
	for i, qm := range rm.QueryParameters {
		q := queryMatcher{name: qm.Name}
		switch s := qm.QueryParameterMatchSpecifier.(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := matcher.NewString(s.StringMatch, fmt.Sprintf("%s.query_parameters[%d].string_match", p, i))
			if err != nil {
				return err
			}
			q.str = &sm
		case *routev3.QueryParameterMatcher_PresentMatch:
			q.hasPresent, q.present = true, s.PresentMatch
		}
		m.queries = append(m.queries, q)
	}
	return nil
}

func regexRewrite(rr *matcherv3.RegexMatchAndSubstitute, p string) (*regexp.Regexp, string, error) {
	re, err := matcher.CompileRegex(rr.GetPattern().GetRegex(), p+".pattern.regex", false)
	if err != nil {
		return nil, "", err
	}
	tmpl, err := substitution(rr.Substitution, re)
	if err != nil {
		return nil, "", errf(p+".substitution", "%v", err)
	}
	return re, tmpl, nil
}

func (c *compiler) forward(e *entry, ra *routev3.RouteAction, vhRetry *routev3.RetryPolicy, p string) error {
	switch cs := ra.ClusterSpecifier.(type) {
	case *routev3.RouteAction_Cluster:
		e.cluster = cs.Cluster
		c.clusters[cs.Cluster] = struct{}{}
	case *routev3.RouteAction_ClusterHeader:
		e.clusterHeader = matcher.NewHeaderName(cs.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		if err := c.weighted(e, cs.WeightedClusters, p+".weighted_clusters"); err != nil {
			return err
		}
	default:
		return errf(p, "cluster_specifier is not supported by amime")
	}
	switch ra.ClusterNotFoundResponseCode {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		e.clusterNotFound = 503
	case routev3.RouteAction_NOT_FOUND:
		e.clusterNotFound = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		e.clusterNotFound = 500
	default:
		return errf(p+".cluster_not_found_response_code", "unknown value %d", ra.ClusterNotFoundResponseCode)
	}
	if ra.PrefixRewrite != "" && ra.RegexRewrite != nil {
		return errf(p, "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy")
	}
	e.rewrite.prefix = ra.PrefixRewrite
	if ra.RegexRewrite != nil {
		var err error
		if e.rewrite.re, e.rewrite.tmpl, err = regexRewrite(ra.RegexRewrite, p+".regex_rewrite"); err != nil {
			return err
		}
	}
	switch h := ra.HostRewriteSpecifier.(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		e.hostLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		e.autoHost = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		if h.HostRewriteHeader != "" {
			e.hostHeader = matcher.NewHeaderName(h.HostRewriteHeader)
		}
	}
	if err := c.timeouts(&e.timeouts, ra, p); err != nil {
		return err
	}
	e.retry = vhRetry
	rp := p + ".retry_policy"
	if ra.RetryPolicy != nil {
		if err := checkRetry(ra.RetryPolicy, rp); err != nil {
			return err
		}
		e.retry = ra.RetryPolicy
	}
	if e.retry != nil {
		var err error
		// A virtual host's policy was checked at its own path already.
		if e.retryC, err = compileRetry(e.retry, rp); err != nil {
			return err
		}
	}
	// Mirror clusters are not added to c.clusters: a missing mirror
	// cluster must not hold back (or, with validate_clusters, reject) the
	// route; the mirror is skipped at request time instead.
	var err error
	if e.mirrors, err = compileMirrors(ra, p); err != nil {
		return err
	}
	if e.hashPolicies, err = compileHashPolicies(ra.HashPolicy, p); err != nil {
		return err
	}
	return nil
}

func (c *compiler) timeouts(t *Timeouts, ra *routev3.RouteAction, p string) error {
	t.Request = 15 * time.Second
	if ra.Timeout != nil {
		d, err := durationMS(ra.Timeout, p+".timeout")
		if err != nil {
			return err
		}
		t.Request = d
	}
	opts := []struct {
		d    *durationpb.Duration
		path string
		out  *OptionalDuration
	}{
		{ra.IdleTimeout, ".idle_timeout", &t.Idle},
		{ra.MaxGrpcTimeout, ".max_grpc_timeout", &t.MaxGrpcTimeout},
		{ra.GrpcTimeoutOffset, ".grpc_timeout_offset", &t.GrpcTimeoutOffset},
		{ra.GetMaxStreamDuration().GetMaxStreamDuration(), ".max_stream_duration.max_stream_duration", &t.MaxStreamDuration},
		{ra.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax(), ".max_stream_duration.grpc_timeout_header_max", &t.GrpcTimeoutHeaderMax},
		{ra.GetMaxStreamDuration().GetGrpcTimeoutHeaderOffset(), ".max_stream_duration.grpc_timeout_header_offset", &t.GrpcTimeoutHeaderOffset},
	}
	for _, o := range opts {
		if o.d == nil {
			continue
		}
		d, err := durationMS(o.d, p+o.path)
		if err != nil {
			return err
		}
		*o.out = OptionalDuration{D: d, Set: true}
	}
	return nil
}

// durationMS converts like Envoy's PROTOBUF_GET_MS: negative or
// out-of-range durations are rejected, precision is milliseconds.
func durationMS(d *durationpb.Duration, p string) (time.Duration, error) {
	if d.Seconds < 0 || d.Nanos < 0 {
		return 0, errf(p, "duration must not be negative")
	}
	if err := d.CheckValid(); err != nil || d.Seconds > math.MaxInt64/int64(time.Second)-1 {
		return 0, errf(p, "duration is out of range")
	}
	return d.AsDuration().Truncate(time.Millisecond), nil
}

// checkRetry applies Envoy's RetryPolicyImpl checks; the policy itself is
// executed by the proxy's resilience code.
func checkRetry(rp *routev3.RetryPolicy, p string) error {
	for _, d := range []struct {
		d    *durationpb.Duration
		path string
	}{{rp.PerTryTimeout, ".per_try_timeout"}, {rp.PerTryIdleTimeout, ".per_try_idle_timeout"}} {
		if d.d != nil {
			if _, err := durationMS(d.d, p+d.path); err != nil {
				return err
			}
		}
	}
	if _, err := compileRetry(rp, p); err != nil {
		return err
	}
	bo := rp.RetryBackOff
	if bo == nil {
		return nil
	}
	base, err := durationMS(bo.BaseInterval, p+".retry_back_off.base_interval")
	if err != nil {
		return err
	}
	base = max(base, time.Millisecond)
	if bo.MaxInterval != nil {
		mx, err := durationMS(bo.MaxInterval, p+".retry_back_off.max_interval")
		if err != nil {
			return err
		}
		if max(mx, time.Millisecond) < base {
			return errf(p+".retry_back_off.max_interval", "retry_policy.max_interval must greater than or equal to the base_interval")
		}
	}
	return nil
}

func (c *compiler) weighted(e *entry, wc *routev3.WeightedCluster, p string) error {
	var total uint64
	for i, cw := range wc.Clusters {
		cp := fmt.Sprintf("%s.clusters[%d]", p, i)
		switch {
		case cw.Name == "" && cw.ClusterHeader == "":
			return errf(cp, "At least one of name or cluster_header need to be specified")
		case cw.Name != "" && cw.ClusterHeader != "":
			return errf(cp, "Only one of name or cluster_header can be specified")
		}
		w := cw.GetWeight().GetValue()
		total += uint64(w)
		if total > math.MaxUint32 {
			return errf(p, "The sum of weights of all weighted clusters of route %q exceeds %d", e.name, uint32(math.MaxUint32))
		}
		x := &clusterWeight{name: cw.Name, weight: w, hostLiteral: cw.GetHostRewriteLiteral()}
		if cw.Name != "" {
			c.clusters[cw.Name] = struct{}{}
		} else {
			x.header = matcher.NewHeaderName(cw.ClusterHeader)
		}
		var err error
		if x.req, err = c.mutation(cw.RequestHeadersToAdd, cw.RequestHeadersToRemove, cp+".request_headers_to_add", cp+".request_headers_to_remove"); err != nil {
			return err
		}
		if x.resp, err = c.mutation(cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove, cp+".response_headers_to_add", cp+".response_headers_to_remove"); err != nil {
			return err
		}
		if x.perFilter, err = c.perFilter(cw.TypedPerFilterConfig, cp+".typed_per_filter_config"); err != nil {
			return err
		}
		e.weighted = append(e.weighted, &Route{e: e, wc: x})
		e.ends = append(e.ends, total)
	}
	// total_weight is deprecated and ignored: the sum of weights is the total.
	if total == 0 {
		return errf(p, "Sum of weights in the weighted_cluster must be greater than 0.")
	}
	e.total = total
	return nil
}

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

func (c *compiler) redirect(e *entry, ra *routev3.RedirectAction, p string) error {
	rd := &redirect{host: ra.HostRedirect, stripQuery: ra.StripQuery}
	switch s := ra.SchemeRewriteSpecifier.(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		rd.scheme = s.SchemeRedirect
	}
	if ra.PortRedirect != 0 {
		rd.port = ":" + strconv.FormatUint(uint64(ra.PortRedirect), 10)
	}
	switch s := ra.PathRewriteSpecifier.(type) {
	case *routev3.RedirectAction_PathRedirect:
		rd.path, rd.pathHasQuery = s.PathRedirect, strings.Contains(s.PathRedirect, "?")
	case *routev3.RedirectAction_PrefixRewrite:
		rd.prefix = s.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		var err error
		if rd.re, rd.tmpl, err = regexRewrite(s.RegexRewrite, p+".regex_rewrite"); err != nil {
			return err
		}
	}
	code, ok := redirectCodes[ra.ResponseCode]
	if !ok {
		return errf(p+".response_code", "invalid redirect response code %d", ra.ResponseCode)
	}
	rd.code = code
	e.redirect = rd
	return nil
}

func (c *compiler) direct(e *entry, dr *routev3.DirectResponseAction, p string) error {
	e.status = int(dr.Status)
	if b := dr.Body; b != nil {
		switch s := b.Specifier.(type) {
		case *corev3.DataSource_InlineString:
			e.body = s.InlineString
		case *corev3.DataSource_InlineBytes:
			e.body = string(s.InlineBytes)
		case *corev3.DataSource_Filename:
			return errf(p+".body.filename", "direct response bodies read from a file are not supported by amime")
		default:
			return errf(p+".body", "only inline_string and inline_bytes are supported by amime")
		}
	}
	if len(e.body) > c.maxBody {
		return errf(p+".body", "response body size is %d bytes; maximum is %d", len(e.body), c.maxBody)
	}
	return nil
}

func (c *compiler) mutation(add []*corev3.HeaderValueOption, remove []string, addPath, removePath string) (*mutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	m := &mutation{}
	for i, name := range remove {
		if !modifiable(name) {
			return nil, errf(fmt.Sprintf("%s[%d]", removePath, i), ":-prefixed or host headers may not be removed")
		}
		m.remove = append(m.remove, header.Lower(name))
	}
	for i, o := range add {
		p := fmt.Sprintf("%s[%d]", addPath, i)
		key := o.GetHeader().GetKey()
		if !modifiable(key) {
			return nil, errf(p+".header.key", ":-prefixed or host headers may not be modified")
		}
		action := o.AppendAction
		if o.Append != nil {
			if action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, errf(p, "Both append and append_action are set and it's not allowed")
			}
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if o.Append.Value {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		f, err := parseFormat(o.GetHeader().GetValue())
		if err != nil {
			return nil, errf(p+".header.value", "%v", err)
		}
		m.add = append(m.add, headerAdd{name: header.Lower(key), value: f, action: action, keepEmpty: o.KeepEmptyValue})
	}
	return m, nil
}

func (c *compiler) perFilter(cfg map[string]*anypb.Any, p string) (map[string]any, error) {
	if len(cfg) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(cfg))
	for name := range cfg {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make(map[string]any, len(cfg))
	for _, name := range names {
		ep := fmt.Sprintf("%s[%q]", p, name)
		parse, ok := c.opts.FilterConfigParsers[name]
		if !ok {
			return nil, errf(ep, "per-route configuration of HTTP filter %q is not supported by amime", name)
		}
		v, err := parse(cfg[name])
		if err != nil {
			return nil, errf(ep, "%v", err)
		}
		out[name] = v
	}
	return out, nil
}

// validationError is the shape of protoc-gen-validate errors.
type validationError interface {
	Field() string
	Reason() string
	Cause() error
}

// fromPGV turns a protoc-gen-validate error chain into an *Error with the
// proto field path ("VirtualHosts[0]" becomes "virtual_hosts[0]").
func fromPGV(err error) error {
	var path []string
	reason := err.Error()
	for e := err; e != nil; {
		v, ok := e.(validationError)
		if !ok {
			break
		}
		path = append(path, snakeField(v.Field()))
		cause := v.Cause()
		if _, nested := cause.(validationError); !nested {
			reason = v.Reason()
			if cause != nil {
				reason += ": " + cause.Error()
			}
			break
		}
		e = cause
	}
	return &Error{Path: strings.Join(path, "."), Reason: reason}
}

func snakeField(f string) string {
	name, idx, hasIdx := strings.Cut(f, "[")
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	if hasIdx {
		idx = strings.TrimSuffix(idx, "]")
		if _, err := strconv.Atoi(idx); err == nil {
			fmt.Fprintf(&b, "[%s]", idx)
		} else {
			fmt.Fprintf(&b, "[%q]", idx)
		}
	}
	return b.String()
}
