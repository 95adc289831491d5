package route

import (
	"sync"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// vhostTable has one "/" route per virtual host, named after the host.
func vhostTable(t *testing.T, ignorePort bool, hosts map[string][]string) *Table {
	rc := config()
	rc.IgnorePortInHostMatching = ignorePort
	for name, domains := range hosts {
		rc.VirtualHosts = append(rc.VirtualHosts, vhost(name, domains, fwdRoute(name, prefixMatch("/"), toCluster(name))))
	}
	return mustCompile(t, rc)
}

func TestVirtualHostSelection(t *testing.T) {
	hosts := map[string][]string{
		"exact":       {"foo.com", "Mixed.Example.com", "x.foo.com"},
		"exact-port":  {"foo.com:8080"},
		"suffix":      {"*.foo.com"},
		"suffix-long": {"*-bar.foo.com"},
		"prefix":      {"foo.*"},
		"prefix-long": {"foo.bar.*"},
		"ipv6":        {"[::1]", "[::1]:80"},
		"default":     {"*"},
	}
	tab := vhostTable(t, false, hosts)
	cases := []struct {
		name, authority, want string
	}{
		{"exact domain", "foo.com", "exact"},
		{"exact beats wildcards", "x.foo.com", "exact"},
		{"host is case-insensitive", "FOO.Com", "exact"},
		{"domain is case-insensitive", "mixed.example.com", "exact"},
		{"exact domain with port", "foo.com:8080", "exact-port"},
		{"domain without port does not match host with port", "foo.com:9090", "prefix"},
		{"suffix wildcard", "a.foo.com", "suffix"},
		{"longest suffix wins", "baz-bar.foo.com", "suffix-long"},
		{"wildcard must match one char", "-bar.foo.com", "suffix"},
		{"suffix wildcard needs a char before the dot", ".foo.com", "default"},
		{"suffix before prefix", "foo.bar.foo.com", "suffix"},
		{"prefix wildcard", "foo.org", "prefix"},
		{"longest prefix wins", "foo.bar.org", "prefix-long"},
		{"suffix does not match with port", "a.foo.com:80", "default"},
		{"ipv6 literal", "[::1]", "ipv6"},
		{"ipv6 literal with port", "[::1]:80", "ipv6"},
		{"ipv6 other port", "[::1]:81", "default"},
		{"default", "other.org", "default"},
		{"empty host goes to default", "", "default"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tab.Select(get(tc.authority, "/"), 0)
			if got == nil || got.VirtualHost() != tc.want {
				t.Fatalf("Select(%q) vhost = %v, want %s", tc.authority, got, tc.want)
			}
		})
	}
}

func TestVirtualHostIgnorePort(t *testing.T) {
	tab := vhostTable(t, true, map[string][]string{
		"exact":  {"foo.com"},
		"ipv6":   {"[::1]"},
		"suffix": {"*.bar.com"},
	})
	cases := []struct{ authority, want string }{
		{"foo.com:8080", "exact"},
		{"foo.com", "exact"},
		{"[::1]:80", "ipv6"},
		{"[::1]", "ipv6"},
		{"a.bar.com:443", "suffix"},
		{"other:80", "<nil>"},
	}
	for _, tc := range cases {
		got := tab.Select(get(tc.authority, "/"), 0)
		if routeName(got) != tc.want {
			t.Errorf("Select(%q) = %s, want %s", tc.authority, routeName(got), tc.want)
		}
	}
}

func TestNoVirtualHost(t *testing.T) {
	tab := vhostTable(t, false, map[string][]string{"a": {"a.com"}})
	if r := tab.Select(get("b.com", "/"), 0); r != nil {
		t.Fatalf("Select = %s, want nil", r.Name())
	}
	if r := mustCompile(t, config()).Select(get("b.com", "/"), 0); r != nil {
		t.Fatal("empty configuration matched")
	}
}

func TestRouteMatch(t *testing.T) {
	caseInsensitive := func(m *routev3.RouteMatch) *routev3.RouteMatch {
		m.CaseSensitive = wrapperspb.Bool(false)
		return m
	}
	withHeaders := func(m *routev3.RouteMatch, hs ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		m.Headers = hs
		return m
	}
	withQuery := func(qs ...*routev3.QueryParameterMatcher) *routev3.RouteMatch {
		m := prefixMatch("/")
		m.QueryParameters = qs
		return m
	}
	hm := func(name string, spec any) *routev3.HeaderMatcher {
		h := &routev3.HeaderMatcher{Name: name}
		switch s := spec.(type) {
		case *routev3.HeaderMatcher_ExactMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_SafeRegexMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_PrefixMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_SuffixMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_ContainsMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_PresentMatch:
			h.HeaderMatchSpecifier = s
		case *routev3.HeaderMatcher_RangeMatch:
			h.HeaderMatchSpecifier = s
		case *matcherv3.StringMatcher:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
		}
		return h
	}
	inverted := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.InvertMatch = true; return h }
	missingEmpty := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.TreatMissingHeaderAsEmpty = true; return h }
	rng := func(s, e int64) *routev3.HeaderMatcher_RangeMatch {
		return &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: s, End: e}}
	}
	sm := func(kind string, v string, ignoreCase bool) *matcherv3.StringMatcher {
		m := &matcherv3.StringMatcher{IgnoreCase: ignoreCase}
		switch kind {
		case "exact":
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: v}
		case "prefix":
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: v}
		case "suffix":
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v}
		case "contains":
			m.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: v}
		case "regex":
			m.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
		}
		return m
	}
	qp := func(name string, m *matcherv3.StringMatcher) *routev3.QueryParameterMatcher {
		return &routev3.QueryParameterMatcher{Name: name, QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: m}}
	}
	qpPresent := func(name string, present bool) *routev3.QueryParameterMatcher {
		return &routev3.QueryParameterMatcher{Name: name, QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: present}}
	}
	grpc := prefixMatch("/")
	grpc.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{}
	connect := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}}

	cases := []struct {
		name  string
		match *routev3.RouteMatch
		req   *Request
		want  bool
	}{
		// Path specifiers.
		{"prefix", prefixMatch("/api"), get("h", "/api/v1"), true},
		{"prefix mismatch", prefixMatch("/api"), get("h", "/ap"), false},
		{"prefix is matched without query", prefixMatch("/abc"), get("h", "/ab?c"), false},
		{"prefix is case sensitive by default", prefixMatch("/API"), get("h", "/api"), false},
		{"prefix case_sensitive false", caseInsensitive(prefixMatch("/API")), get("h", "/api/x"), true},
		{"path exact", pathMatch("/foo"), get("h", "/foo"), true},
		{"path ignores query", pathMatch("/foo"), get("h", "/foo?x=1"), true},
		{"path ignores fragment", pathMatch("/foo"), get("h", "/foo#frag"), true},
		{"path is exact", pathMatch("/foo"), get("h", "/foo/"), false},
		{"path case_sensitive false", caseInsensitive(pathMatch("/Foo")), get("h", "/fOO"), true},
		{"safe_regex", regexMatch(`/v[0-9]+/.*`), get("h", "/v12/x?q=1"), true},
		{"safe_regex matches the whole path", regexMatch(`/v1`), get("h", "/v1/x"), false},
		{"safe_regex excludes query", regexMatch(`/v1`), get("h", "/v1?x"), true},
		{"case_sensitive does not apply to safe_regex", caseInsensitive(regexMatch(`/v1`)), get("h", "/V1"), false},
		{"path_separated_prefix exact", sepPrefixMatch("/api/dev"), get("h", "/api/dev"), true},
		{"path_separated_prefix slash", sepPrefixMatch("/api/dev"), get("h", "/api/dev/"), true},
		{"path_separated_prefix segment", sepPrefixMatch("/api/dev"), get("h", "/api/dev/v1"), true},
		{"path_separated_prefix query", sepPrefixMatch("/api/dev"), get("h", "/api/dev?param=true"), true},
		{"path_separated_prefix longer segment", sepPrefixMatch("/api/dev"), get("h", "/api/developer"), false},
		{"path_separated_prefix case_sensitive false", caseInsensitive(sepPrefixMatch("/API")), get("h", "/api/x"), true},
		{"connect_matcher CONNECT", connect, &Request{Method: "CONNECT", Authority: "h:443"}, true},
		{"connect_matcher not GET", connect, get("h", "/"), false},
		{"prefix does not match pathless CONNECT", prefixMatch(""), &Request{Method: "CONNECT", Authority: "h:443"}, false},

		// gRPC.
		{"grpc", grpc, get("h", "/", "content-type", "application/grpc"), true},
		{"grpc+proto", grpc, get("h", "/", "content-type", "application/grpc+proto"), true},
		{"grpc-web is not grpc", grpc, get("h", "/", "content-type", "application/grpc-web"), false},
		{"grpc without content-type", grpc, get("h", "/"), false},

		// Headers.
		{"string_match exact", withHeaders(prefixMatch("/"), strMatch("x-a", exactStr("v"))), get("h", "/", "x-a", "v"), true},
		{"string_match exact mismatch", withHeaders(prefixMatch("/"), strMatch("x-a", exactStr("v"))), get("h", "/", "x-a", "V"), false},
		{"string_match exact ignore_case", withHeaders(prefixMatch("/"), hm("x-a", sm("exact", "v", true))), get("h", "/", "x-a", "V"), true},
		{"string_match empty exact only matches empty", withHeaders(prefixMatch("/"), strMatch("x-a", exactStr(""))), get("h", "/", "x-a", "v"), false},
		{"string_match prefix", withHeaders(prefixMatch("/"), hm("x-a", sm("prefix", "ab", false))), get("h", "/", "x-a", "abc"), true},
		{"string_match prefix ignore_case", withHeaders(prefixMatch("/"), hm("x-a", sm("prefix", "AB", true))), get("h", "/", "x-a", "abc"), true},
		{"string_match suffix", withHeaders(prefixMatch("/"), hm("x-a", sm("suffix", "bc", false))), get("h", "/", "x-a", "abc"), true},
		{"string_match suffix ignore_case", withHeaders(prefixMatch("/"), hm("x-a", sm("suffix", "BC", true))), get("h", "/", "x-a", "abc"), true},
		{"string_match contains", withHeaders(prefixMatch("/"), hm("x-a", sm("contains", "b", false))), get("h", "/", "x-a", "abc"), true},
		{"string_match contains ignore_case", withHeaders(prefixMatch("/"), hm("x-a", sm("contains", "B", true))), get("h", "/", "x-a", "aBc"), true},
		{"string_match safe_regex", withHeaders(prefixMatch("/"), hm("x-a", sm("regex", "a.c", false))), get("h", "/", "x-a", "abc"), true},
		{"string_match safe_regex full match", withHeaders(prefixMatch("/"), hm("x-a", sm("regex", "a", false))), get("h", "/", "x-a", "abc"), false},
		{"header name is case-insensitive", withHeaders(prefixMatch("/"), strMatch("X-A", exactStr("v"))), get("h", "/", "x-a", "v"), true},
		{"deprecated exact_match", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"})), get("h", "/", "x-a", "v"), true},
		{"deprecated empty exact_match matches any value", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_ExactMatch{})), get("h", "/", "x-a", "v"), true},
		{"deprecated safe_regex_match", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d+`}})), get("h", "/", "x-a", "123"), true},
		{"deprecated prefix_match", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "a"})), get("h", "/", "x-a", "abc"), true},
		{"deprecated suffix_match", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "c"})), get("h", "/", "x-a", "abc"), true},
		{"deprecated contains_match", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "b"})), get("h", "/", "x-a", "abc"), true},
		{"no specifier means present", withHeaders(prefixMatch("/"), &routev3.HeaderMatcher{Name: "x-a"}), get("h", "/", "x-a", ""), true},
		{"present_match true", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_PresentMatch{PresentMatch: true})), get("h", "/", "x-a", ""), true},
		{"present_match true absent", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_PresentMatch{PresentMatch: true})), get("h", "/"), false},
		{"present_match false absent", withHeaders(prefixMatch("/"), hm("x-a", &routev3.HeaderMatcher_PresentMatch{PresentMatch: false})), get("h", "/"), true},
		{"present_match inverted", withHeaders(prefixMatch("/"), inverted(hm("x-a", &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}))), get("h", "/"), true},
		{"range in", withHeaders(prefixMatch("/"), hm("x-n", rng(-10, 0))), get("h", "/", "x-n", "-1"), true},
		{"range end is exclusive", withHeaders(prefixMatch("/"), hm("x-n", rng(-10, 0))), get("h", "/", "x-n", "0"), false},
		{"range not a number", withHeaders(prefixMatch("/"), hm("x-n", rng(0, 10))), get("h", "/", "x-n", "1x"), false},
		{"range with spaces and sign", withHeaders(prefixMatch("/"), hm("x-n", rng(0, 10))), get("h", "/", "x-n", " +5 "), true},
		{"invert_match", withHeaders(prefixMatch("/"), inverted(hm("x-a", sm("regex", `\d{3}`, false)))), get("h", "/", "x-a", "1234"), true},
		{"invert_match range", withHeaders(prefixMatch("/"), inverted(hm("x-n", rng(-10, 0)))), get("h", "/", "x-n", "-1"), false},
		{"invert_match does not match a missing header", withHeaders(prefixMatch("/"), inverted(strMatch("x-a", exactStr("v")))), get("h", "/"), false},
		{"treat_missing_header_as_empty", withHeaders(prefixMatch("/"), missingEmpty(strMatch("x-a", exactStr("")))), get("h", "/"), true},
		{"treat_missing_header_as_empty inverted range", withHeaders(prefixMatch("/"), missingEmpty(inverted(hm("x-n", rng(0, 10))))), get("h", "/"), true},
		{"several values are joined with a comma", withHeaders(prefixMatch("/"), strMatch("x-a", exactStr("a,b"))), get("h", "/", "x-a", "a", "x-b", "z", "x-a", "b"), true},
		{"joined values do not match one value", withHeaders(prefixMatch("/"), strMatch("x-a", exactStr("a"))), get("h", "/", "x-a", "a", "x-a", "b"), false},
		{":method", withHeaders(prefixMatch("/"), strMatch(":method", exactStr("GET"))), get("h", "/"), true},
		{":authority", withHeaders(prefixMatch("/"), strMatch(":authority", exactStr("h:80"))), get("h:80", "/"), true},
		{"host is :authority", withHeaders(prefixMatch("/"), strMatch("host", exactStr("h"))), get("h", "/"), true},
		{":path keeps the query", withHeaders(prefixMatch("/"), strMatch(":path", exactStr("/a?b=1"))), get("h", "/a?b=1"), true},
		{":scheme", withHeaders(prefixMatch("/"), strMatch(":scheme", exactStr("http"))), get("h", "/"), true},

		// Query parameters.
		{"query exact", withQuery(qp("a", exactStr("1"))), get("h", "/p?a=1&b=2"), true},
		{"query first occurrence", withQuery(qp("a", exactStr("2"))), get("h", "/p?a=1&a=2"), false},
		{"query value is not decoded", withQuery(qp("a", exactStr("x%20y"))), get("h", "/p?a=x%20y"), true},
		{"query name is case sensitive", withQuery(qp("A", exactStr("1"))), get("h", "/p?a=1"), false},
		{"query without value", withQuery(qp("a", exactStr(""))), get("h", "/p?a&b=1"), true},
		{"query missing", withQuery(qp("a", exactStr(""))), get("h", "/p?b=1"), false},
		{"query present_match true", withQuery(qpPresent("a", true)), get("h", "/p?a=1"), true},
		{"query present_match true absent", withQuery(qpPresent("a", true)), get("h", "/p"), false},
		{"query present_match false absent", withQuery(qpPresent("a", false)), get("h", "/p?b"), true},
		{"query present_match false present", withQuery(qpPresent("a", false)), get("h", "/p?a=1"), false},
		{"query string_match ignore_case", withQuery(qp("a", sm("prefix", "X", true))), get("h", "/p?a=xy"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustCompile(t, config(vhost("vh", []string{"*"}, fwdRoute("r", tc.match, toCluster("c")))))
			got := tab.Select(tc.req, 0) != nil
			if got != tc.want {
				t.Fatalf("matched = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFirstMatchingRouteWins(t *testing.T) {
	tab := mustCompile(t, config(vhost("vh", []string{"*"},
		fwdRoute("v2", func() *routev3.RouteMatch {
			m := prefixMatch("/")
			m.Headers = []*routev3.HeaderMatcher{strMatch("end-user", exactStr("jason"))}
			return m
		}(), toCluster("v2")),
		fwdRoute("api", prefixMatch("/api"), toCluster("api")),
		fwdRoute("api-exact", pathMatch("/api"), toCluster("never")),
		fwdRoute("default", prefixMatch("/"), toCluster("v1")),
	)))
	cases := []struct {
		req  *Request
		want string
	}{
		{get("h", "/api", "end-user", "jason"), "v2"},
		{get("h", "/api"), "api"},
		{get("h", "/other"), "default"},
	}
	for _, tc := range cases {
		if got := routeName(tab.Select(tc.req, 0)); got != tc.want {
			t.Errorf("Select(%s) = %s, want %s", tc.req.Path, got, tc.want)
		}
	}
}

func TestIgnorePathParameters(t *testing.T) {
	rc := config(vhost("vh", []string{"*"}, fwdRoute("r", pathMatch("/a/b"), toCluster("c"))))
	if mustCompile(t, rc).Select(get("h", "/a/b;x=1?q"), 0) != nil {
		t.Fatal("path parameters matched without ignore_path_parameters_in_path_matching")
	}
	rc.IgnorePathParametersInPathMatching = true
	if mustCompile(t, rc).Select(get("h", "/a/b;x=1?q"), 0) == nil {
		t.Fatal("path parameters not ignored")
	}
}

func TestConcurrentSelect(t *testing.T) {
	tab := mustCompile(t, config(vhost("vh", []string{"*"},
		fwdRoute("w", regexMatch(`/w/.*`), weights(cw("a", 1), cw("b", 1))),
		fwdRoute("r", prefixMatch("/"), toCluster("c")))))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r := tab.Select(get("h", "/w/x"), uint64(g+i))
				if want := []string{"a", "b"}[(g+i)%2]; r.ClusterName(nil) != want {
					t.Errorf("cluster = %s, want %s", r.ClusterName(nil), want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
