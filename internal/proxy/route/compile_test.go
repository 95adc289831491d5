package route

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
)

func TestCompileErrors(t *testing.T) {
	ok := func() *routev3.Route { return fwdRoute("ok", prefixMatch("/"), toCluster("c")) }
	// one puts r as the first route of the second virtual host.
	one := func(r *routev3.Route) *routev3.RouteConfiguration {
		return config(vhost("a", []string{"a.com"}, ok()), vhost("b", []string{"b.com"}, r))
	}
	withAction := func(f func(ra *routev3.RouteAction)) *routev3.RouteConfiguration {
		ra := toCluster("c")
		f(ra)
		return one(fwdRoute("r", prefixMatch("/"), ra))
	}
	withMatch := func(f func(m *routev3.RouteMatch)) *routev3.RouteConfiguration {
		m := prefixMatch("/")
		f(m)
		return one(fwdRoute("r", m, toCluster("c")))
	}
	withRequestHeaders := func(add []*corev3.HeaderValueOption, remove ...string) *routev3.RouteConfiguration {
		r := ok()
		r.RequestHeadersToAdd, r.RequestHeadersToRemove = add, remove
		return one(r)
	}
	direct := func(status uint32, body *corev3.DataSource) *routev3.RouteConfiguration {
		return one(&routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{
			DirectResponse: &routev3.DirectResponseAction{Status: status, Body: body}}})
	}
	cases := []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string
	}{
		{"bad regex", one(fwdRoute("r", regexMatch("(a"), toCluster("c"))),
			"virtual_hosts[1].routes[0].match.safe_regex.regex: invalid RE2: error parsing regexp: missing closing ): `(a`"},
		{"empty regex", one(fwdRoute("r", regexMatch(""), toCluster("c"))),
			"virtual_hosts[1].routes[0].match.safe_regex.regex: value length must be at least 1 runes"},
		{"no domains", config(vhost("a", nil, ok())),
			"virtual_hosts[0].domains: value must contain at least 1 item(s)"},
		{"duplicate domain across virtual hosts", config(vhost("a", []string{"x.com", "a.com"}, ok()), vhost("b", []string{"A.com"}, ok())),
			`virtual_hosts[1].domains[0]: duplicate domain "A.com" (also virtual_hosts[0].domains[1]): domains must be unique across virtual hosts`},
		{"duplicate wildcard domain", config(vhost("a", []string{"*.a.com"}, ok()), vhost("b", []string{"*.a.com"}, ok())),
			`virtual_hosts[1].domains[0]: duplicate domain "*.a.com" (also virtual_hosts[0].domains[0]): domains must be unique across virtual hosts`},
		{"second catch-all domain", config(vhost("a", []string{"*"}, ok()), vhost("b", []string{"*"}, ok())),
			`virtual_hosts[1].domains[0]: only a single wildcard domain "*" is permitted in a route configuration (also virtual_hosts[0].domains[0])`},
		{"weights all zero", one(fwdRoute("r", prefixMatch("/"), weights(cw("a", 0), cw("b", 0)))),
			"virtual_hosts[1].routes[0].route.weighted_clusters: Sum of weights in the weighted_cluster must be greater than 0."},
		{"weights overflow", one(fwdRoute("r", prefixMatch("/"), weights(cw("a", 1<<31), cw("b", 1<<31)))),
			`virtual_hosts[1].routes[0].route.weighted_clusters: The sum of weights of all weighted clusters of route "r" exceeds 4294967295`},
		{"cluster weight without cluster", one(fwdRoute("r", prefixMatch("/"), weights(cw("", 1)))),
			"virtual_hosts[1].routes[0].route.weighted_clusters.clusters[0]: At least one of name or cluster_header need to be specified"},
		{"cluster weight with both", one(fwdRoute("r", prefixMatch("/"), weights(&routev3.WeightedCluster_ClusterWeight{Name: "a", ClusterHeader: "x", Weight: wrapperspb.UInt32(1)}))),
			"virtual_hosts[1].routes[0].route.weighted_clusters.clusters[0]: Only one of name or cluster_header can be specified"},
		{"invalid redirect code", one(redirectRoute("r", prefixMatch("/"), &routev3.RedirectAction{ResponseCode: 9})),
			"virtual_hosts[1].routes[0].redirect.response_code: value must be one of the defined enum values"},
		{"direct response status", direct(600, nil),
			"virtual_hosts[1].routes[0].direct_response.status: value must be inside range [200, 600)"},
		{"direct response from a file", direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/body"}}),
			"virtual_hosts[1].routes[0].direct_response.body.filename: field is not supported by amime"},
		{"direct response body too large", direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("x", 4097)}}),
			"virtual_hosts[1].routes[0].direct_response.body: response body size is 4097 bytes; maximum is 4096"},
		{"runtime_fraction", withMatch(func(m *routev3.RouteMatch) {
			m.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 50}}
		}), "virtual_hosts[1].routes[0].match.runtime_fraction: field is not supported by amime"},
		{"dynamic_metadata", withMatch(func(m *routev3.RouteMatch) {
			m.DynamicMetadata = []*matcherv3.MetadataMatcher{{Filter: "f", Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "k"}}},
				Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}}}
		}), "virtual_hosts[1].routes[0].match.dynamic_metadata: field is not supported by amime"},
		{"path_separated_prefix with trailing slash", one(fwdRoute("r", sepPrefixMatch("/api/"), toCluster("c"))),
			`virtual_hosts[1].routes[0].match.path_separated_prefix: value does not match regex pattern "^[^?#]+[^?#/]$"`},
		{"ignore_case with safe_regex", withMatch(func(m *routev3.RouteMatch) {
			m.Headers = []*routev3.HeaderMatcher{strMatch("x", &matcherv3.StringMatcher{IgnoreCase: true,
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}})}
		}), "virtual_hosts[1].routes[0].match.headers[0].string_match: ignore_case has no effect for safe_regex."},
		{"bad header regex", withMatch(func(m *routev3.RouteMatch) {
			m.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a**"}}}}
		}), "virtual_hosts[1].routes[0].match.headers[0].safe_regex_match.regex: invalid RE2: error parsing regexp: invalid nested repetition operator: `**`"},
		{"unknown pseudo-header", withMatch(func(m *routev3.RouteMatch) {
			m.Headers = []*routev3.HeaderMatcher{strMatch(":protocol", exactStr("websocket"))}
		}), `virtual_hosts[1].routes[0].match.headers[0].name: pseudo-header ":protocol" cannot be matched: only :method, :authority, :path and :scheme are available`},
		{"both rewrites", withAction(func(ra *routev3.RouteAction) {
			ra.PrefixRewrite = "/x"
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "a"}}
		}), "virtual_hosts[1].routes[0].route: Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy"},
		{"regex_rewrite unknown group", withAction(func(ra *routev3.RouteAction) {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "(a)"}, Substitution: `\2`}
		}), `virtual_hosts[1].routes[0].route.regex_rewrite.substitution: invalid rewrite pattern "\\2": requests 2 matches, but the regexp only has 1 parenthesized subexpressions`},
		{"regex_rewrite bad escape", withAction(func(ra *routev3.RouteAction) {
			ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "a"}, Substitution: `\n`}
		}), `virtual_hosts[1].routes[0].route.regex_rewrite.substitution: invalid rewrite pattern "\\n": '\' must be followed by a digit or '\'`},
		{"negative timeout", withAction(func(ra *routev3.RouteAction) { ra.Timeout = durationpb.New(-time.Second) }),
			"virtual_hosts[1].routes[0].route.timeout: duration must not be negative"},
		{"unsupported route action field", withAction(func(ra *routev3.RouteAction) {
			ra.AppendXForwardedHost = true
		}),
			"virtual_hosts[1].routes[0].route.append_x_forwarded_host: field is not supported by amime"},
		{"hash policy without header name", withAction(func(ra *routev3.RouteAction) {
			ra.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{}}}}
		}),
			"virtual_hosts[1].routes[0].route.hash_policy[0].header.header_name: value length must be at least 1 runes"},
		{"retry back-off max below base", withAction(func(ra *routev3.RouteAction) {
			ra.RetryPolicy = &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}
		}), "virtual_hosts[1].routes[0].route.retry_policy.retry_back_off.max_interval: retry_policy.max_interval must greater than or equal to the base_interval"},
		{"typed_per_filter_config", func() *routev3.RouteConfiguration {
			r := ok()
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(t)}
			return one(r)
		}(), `virtual_hosts[1].routes[0].typed_per_filter_config["envoy.filters.http.rbac"]: per-route configuration of HTTP filter "envoy.filters.http.rbac" is not supported by amime`},
		{"unknown substitution command", withRequestHeaders([]*corev3.HeaderValueOption{hvo("x-a", "%START_TIME%", appendOrAdd)}),
			`virtual_hosts[1].routes[0].request_headers_to_add[0].header.value: unsupported substitution command %START_TIME% in "%START_TIME%"`},
		{"lone percent", withRequestHeaders([]*corev3.HeaderValueOption{hvo("x-a", "50%", appendOrAdd)}),
			`virtual_hosts[1].routes[0].request_headers_to_add[0].header.value: invalid substitution format "50%": no valid command at position 2 (write %% for a literal %)`},
		{"REQ without name", withRequestHeaders([]*corev3.HeaderValueOption{hvo("x-a", "%REQ%", appendOrAdd)}),
			`virtual_hosts[1].routes[0].request_headers_to_add[0].header.value: %REQ% needs a header name: %REQ(name)% in "%REQ%"`},
		{"argument to a command without one", withRequestHeaders([]*corev3.HeaderValueOption{hvo("x-a", "%HOSTNAME(x)%", appendOrAdd)}),
			`virtual_hosts[1].routes[0].request_headers_to_add[0].header.value: %HOSTNAME% takes no argument in "%HOSTNAME(x)%"`},
		{"modify a pseudo-header", withRequestHeaders([]*corev3.HeaderValueOption{hvo(":path", "/x", appendOrAdd)}),
			"virtual_hosts[1].routes[0].request_headers_to_add[0].header.key: :-prefixed or host headers may not be modified"},
		{"modify host", withRequestHeaders([]*corev3.HeaderValueOption{hvo("Host", "x", appendOrAdd)}),
			"virtual_hosts[1].routes[0].request_headers_to_add[0].header.key: :-prefixed or host headers may not be modified"},
		{"remove host", withRequestHeaders(nil, "x-a", "host"),
			"virtual_hosts[1].routes[0].request_headers_to_remove[1]: :-prefixed or host headers may not be removed"},
		{"append and append_action", withRequestHeaders([]*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "v"},
			Append: wrapperspb.Bool(true), AppendAction: addIfAbsent}}),
			"virtual_hosts[1].routes[0].request_headers_to_add[0]: Both append and append_action are set and it's not allowed"},
		{"route configuration level mutation", func() *routev3.RouteConfiguration {
			rc := one(ok())
			rc.ResponseHeadersToRemove = []string{":status"}
			return rc
		}(), "response_headers_to_remove[0]: :-prefixed or host headers may not be removed"},
		{"virtual host level mutation", func() *routev3.RouteConfiguration {
			rc := one(ok())
			rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hvo("x", "%BAD", appendOrAdd)}
			return rc
		}(), `virtual_hosts[0].request_headers_to_add[0].header.value: invalid substitution format "%BAD": no valid command at position 0 (write %% for a literal %)`},
		{"cluster weight mutation", one(fwdRoute("r", prefixMatch("/"), weights(func() *routev3.WeightedCluster_ClusterWeight {
			w := cw("a", 1)
			w.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo(":x", "y", appendOrAdd)}
			return w
		}()))), "virtual_hosts[1].routes[0].route.weighted_clusters.clusters[0].response_headers_to_add[0].header.key: :-prefixed or host headers may not be modified"},
		{"nil", nil, "route configuration is nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.rc)
			if err == nil {
				t.Fatalf("Compile succeeded, want %s", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got %s\nwant %s", err, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error type %T, want *Error", err)
			}
		})
	}
}

// TestCompileCopiesInput checks the table does not see later changes to
// the configuration it was compiled from.
func TestCompileCopiesInput(t *testing.T) {
	rc := config(vhost("vh", []string{"*"}, fwdRoute("r", prefixMatch("/"), toCluster("c"))))
	tab := mustCompile(t, rc)
	rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "changed"}
	r := tab.Select(get("h", "/"), 0)
	if r.ClusterName(nil) != "c" || r.Proto().GetRoute().GetCluster() != "c" {
		t.Fatal("compiled table shares the input configuration")
	}
}

// TestRulesNameRealFields catches typos in the allow-list.
func TestRulesNameRealFields(t *testing.T) {
	for msg, fields := range Rules() {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(msg)
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		for _, f := range fields {
			if f == fieldcheck.All {
				continue
			}
			if mt.Descriptor().Fields().ByName(protoreflect.Name(f)) == nil {
				t.Errorf("%s has no field %s", msg, f)
			}
		}
	}
}

// TestRulesAcceptIstioStyleConfig checks a typical Istio sidecar route passes
// both the proxy's field check and Compile.
func TestRulesAcceptIstioStyleConfig(t *testing.T) {
	rc := benchConfig(3)
	if err := Rules().Check(rc); err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(rc); err != nil {
		t.Fatal(err)
	}
}
