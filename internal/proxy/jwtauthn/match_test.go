package jwtauthn

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// TestRuleMatch pins the RouteMatch semantics of requirement rules, which
// are the router's: path without query and fragment, case_sensitive for all
// but safe_regex, safe_regex a full match, headers joined with ",".
func TestRuleMatch(t *testing.T) {
	prefix := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
	}
	fold := func(m *routev3.RouteMatch) *routev3.RouteMatch { m.CaseSensitive = wrapperspb.Bool(false); return m }
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	withHeader := func(m *routev3.RouteMatch, hm *routev3.HeaderMatcher) *routev3.RouteMatch {
		m.Headers = append(m.Headers, hm)
		return m
	}
	str := func(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	req := func(path string, kv ...string) *Request {
		var h header.List
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return &Request{Method: "GET", Scheme: "https", Host: "api.example.com", Path: path, Headers: &h}
	}
	cases := []struct {
		name string
		m    *routev3.RouteMatch
		req  *Request
		want bool
	}{
		{"prefix", prefix("/api"), req("/api/v1"), true},
		{"prefix is case sensitive", prefix("/api"), req("/API/v1"), false},
		{"prefix case insensitive", fold(prefix("/api")), req("/API/v1"), true},
		{"path ignores the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, req("/a?x=1"), true},
		{"path ignores the fragment", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, req("/a#f"), true},
		{"path is exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, req("/ab"), false},
		{"path case insensitive", fold(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/A"}}), req("/a"), true},
		{"separated prefix at a segment end", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v1"}}, req("/v1/x"), true},
		{"separated prefix alone", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v1"}}, req("/v1?q"), true},
		{"separated prefix mid-segment", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v1"}}, req("/v10"), false},
		{"regex is a full match", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/[0-9]+"}}}, req("/re/42/x"), false},
		{"regex without the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/[0-9]+"}}}, req("/re/42?a"), true},
		{"header", withHeader(prefix("/"), str("x-env", exact("prod"))), req("/", "x-env", "prod"), true},
		{"header values joined", withHeader(prefix("/"), str("x-env", exact("a,b"))), req("/", "x-env", "a", "x-env", "b"), true},
		{"header name case-insensitive", withHeader(prefix("/"), str("X-Env", exact("prod"))), req("/", "x-env", "prod"), true},
		{"absent header fails inverted", withHeader(prefix("/"), func() *routev3.HeaderMatcher {
			h := str("x-env", exact("prod"))
			h.InvertMatch = true
			return h
		}()), req("/"), false},
		{"no specifier is presence", withHeader(prefix("/"), &routev3.HeaderMatcher{Name: "x-env"}), req("/"), false},
		{"present_match false", withHeader(prefix("/"), &routev3.HeaderMatcher{Name: "x-env",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}), req("/"), true},
		{"legacy empty exact_match matches any value", withHeader(prefix("/"), &routev3.HeaderMatcher{Name: "x-env",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{}}), req("/", "x-env", "prod"), true},
		{":method reads the request", withHeader(prefix("/"), str(":method", exact("GET"))), req("/"), true},
		{"host is :authority", withHeader(prefix("/"), str("host", exact("api.example.com"))), req("/"), true},
		{"nil headers", withHeader(prefix("/"), &routev3.HeaderMatcher{Name: "x-env"}), &Request{Path: "/"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := compileMatch(tc.m, "rules[0].match")
			if err != nil {
				t.Fatal(err)
			}
			if got := m.matches(tc.req); got != tc.want {
				t.Errorf("matches(%q) = %v, want %v", tc.req.Path, got, tc.want)
			}
		})
	}
}

func TestRuleMatchErrors(t *testing.T) {
	regex := func(re string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: re} }
	cases := []struct {
		name string
		m    *routev3.RouteMatch
		want string
	}{
		{"bad path regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("(")}},
			"rules[0].match.safe_regex.regex: invalid RE2"},
		{"bad header regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: regex("[")}}}},
			"rules[0].match.headers[0].safe_regex_match.regex: invalid RE2"},
		{"ignore_case with safe_regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{IgnoreCase: true,
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex("a")}}}}}},
			"rules[0].match.headers[0].string_match: ignore_case has no effect for safe_regex"},
		{"pseudo-header the request does not carry", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: ":protocol"}}},
			`rules[0].match.headers[0].name: pseudo-header ":protocol" cannot be matched`},
		{"no path specifier", &routev3.RouteMatch{}, "rules[0].match: path_specifier is not supported by amime"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileMatch(tc.m, "rules[0].match")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error = %v, want prefix %q", err, tc.want)
			}
		})
	}
}
