package route

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestWeightedClusterDistribution(t *testing.T) {
	tab := mustCompile(t, config(vhost("vh", []string{"*"},
		fwdRoute("w", prefixMatch("/"), weights(cw("a", 10), cw("zero", 0), cw("b", 30), cw("c", 60))))))
	counts := map[string]int{}
	for random := range uint64(100) {
		counts[tab.Select(get("h", "/"), random).ClusterName(nil)]++
	}
	want := map[string]int{"a": 10, "b": 30, "c": 60}
	if len(counts) != len(want) {
		t.Fatalf("counts = %v, want %v", counts, want)
	}
	for k, v := range want {
		if counts[k] != v {
			t.Fatalf("counts = %v, want %v", counts, want)
		}
	}
	// Intervals are laid out in configuration order: [0,10) a, [10,40) b, [40,100) c.
	for _, tc := range []struct {
		random uint64
		want   string
		weight uint32
	}{{0, "a", 10}, {9, "a", 10}, {10, "b", 30}, {39, "b", 30}, {40, "c", 60}, {99, "c", 60}, {100, "a", 10}, {1<<64 - 1, "b", 30}} {
		r := tab.Select(get("h", "/"), tc.random)
		if r.ClusterName(nil) != tc.want || r.Weight() != tc.weight || r.Name() != "w" {
			t.Errorf("random %d: cluster %s weight %d, want %s %d", tc.random, r.ClusterName(nil), r.Weight(), tc.want, tc.weight)
		}
	}
	if n := len(tab.Select(get("h", "/"), 0).WeightedClusters()); n != 4 {
		t.Errorf("WeightedClusters() has %d entries, want 4", n)
	}
	if got := tab.Clusters(); len(got) != 4 || got[0] != "a" || got[3] != "zero" {
		t.Errorf("Clusters() = %v", got)
	}
}

func TestClusterChoice(t *testing.T) {
	byHeader := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "X-Cluster"},
		ClusterNotFoundResponseCode: routev3.RouteAction_NOT_FOUND}
	weightedHeader := weights(&routev3.WeightedCluster_ClusterWeight{ClusterHeader: "x-cluster", Weight: wrapperspb.UInt32(1)})
	cases := []struct {
		name     string
		action   *routev3.RouteAction
		req      *Request
		cluster  string
		notFound int
	}{
		{"cluster", toCluster("c"), get("h", "/"), "c", 503},
		{"cluster_header", byHeader, get("h", "/", "x-cluster", "from-header", "x-cluster", "second"), "from-header", 404},
		{"cluster_header missing means no cluster", byHeader, get("h", "/"), "", 404},
		{"weighted cluster_header", weightedHeader, get("h", "/", "x-cluster", "wh"), "wh", 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, config(vhost("vh", []string{"*"}, fwdRoute("r", prefixMatch("/"), tc.action)))).Select(tc.req, 0)
			if r.Kind() != Forward || r.ClusterName(tc.req) != tc.cluster || r.ClusterNotFoundStatus() != tc.notFound {
				t.Fatalf("kind %v cluster %q notFound %d, want forward %q %d", r.Kind(), r.ClusterName(tc.req), r.ClusterNotFoundStatus(), tc.cluster, tc.notFound)
			}
		})
	}
}

func TestRewritePath(t *testing.T) {
	regexRW := func(pattern, sub string) *routev3.RouteAction {
		ra := toCluster("c")
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: pattern}, Substitution: sub}
		return ra
	}
	prefixRW := func(p string) *routev3.RouteAction {
		ra := toCluster("c")
		ra.PrefixRewrite = p
		return ra
	}
	ci := prefixMatch("/API")
	ci.CaseSensitive = wrapperspb.Bool(false)
	cases := []struct {
		name   string
		match  *routev3.RouteMatch
		action *routev3.RouteAction
		path   string
		want   string
		ok     bool
	}{
		{"no rewrite", prefixMatch("/"), toCluster("c"), "/a?b", "/a?b", false},
		{"prefix_rewrite keeps the rest and query", prefixMatch("/api/"), prefixRW("/v2/"), "/api/x?q=1", "/v2/x?q=1", true},
		{"prefix_rewrite trailing slash caveat", prefixMatch("/prefix"), prefixRW("/"), "/prefix/etc", "//etc", true},
		{"prefix_rewrite with trailing slash prefix", prefixMatch("/prefix/"), prefixRW("/"), "/prefix/etc", "/etc", true},
		{"prefix_rewrite on exact path", pathMatch("/old"), prefixRW("/new"), "/old?x", "/new?x", true},
		{"prefix_rewrite case-insensitive prefix", ci, prefixRW("/v1"), "/api/x", "/v1/x", true},
		{"prefix_rewrite path_separated_prefix", sepPrefixMatch("/api"), prefixRW("/svc"), "/api/x", "/svc/x", true},
		{"prefix_rewrite on regex replaces the path", regexMatch(`/r/.*`), prefixRW("/fixed"), "/r/x?q", "/fixed?q", true},
		{"regex_rewrite groups", prefixMatch("/"), regexRW(`^/service/([^/]+)(/.*)$`, `\2/instance/\1`), "/service/foo/v1/api?x=1", "/v1/api/instance/foo?x=1", true},
		{"regex_rewrite replaces all", prefixMatch("/"), regexRW(`one`, `two`), "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz", true},
		{"regex_rewrite literal dollar and backslash", prefixMatch("/"), regexRW(`a`, `$\\`), "/a", `/$\`, true},
		{"regex_rewrite does not see the query", prefixMatch("/"), regexRW(`q`, `Q`), "/q?q=q", "/Q?q=q", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, config(vhost("vh", []string{"*"}, fwdRoute("r", tc.match, tc.action)))).Select(get("h", tc.path), 0)
			got, ok := r.RewritePath(get("h", tc.path))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("RewritePath = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRewriteHost(t *testing.T) {
	literal := toCluster("c")
	literal.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "lit.example"}
	fromHeader := toCluster("c")
	fromHeader.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteHeader{HostRewriteHeader: "X-Host"}
	auto := toCluster("c")
	auto.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
	wcw := cw("a", 1)
	wcw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "wc.example"}
	weighted := weights(wcw)
	weightedAndRoute := weights(wcw)
	weightedAndRoute.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "route.example"}
	cases := []struct {
		name   string
		action *routev3.RouteAction
		req    *Request
		want   string
		ok     bool
		auto   bool
	}{
		{"none", toCluster("c"), get("h", "/"), "", false, false},
		{"literal", literal, get("h", "/"), "lit.example", true, false},
		{"header", fromHeader, get("h", "/", "x-host", "hdr.example"), "hdr.example", true, false},
		{"header missing leaves host", fromHeader, get("h", "/"), "", false, false},
		{"header empty leaves host", fromHeader, get("h", "/", "x-host", ""), "", false, false},
		{"auto", auto, get("h", "/"), "", false, true},
		{"weighted cluster literal", weighted, get("h", "/"), "wc.example", true, false},
		{"route literal wins over weighted cluster", weightedAndRoute, get("h", "/"), "route.example", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, config(vhost("vh", []string{"*"}, fwdRoute("r", prefixMatch("/"), tc.action)))).Select(tc.req, 0)
			got, ok := r.RewriteHost(tc.req)
			if got != tc.want || ok != tc.ok || r.AutoHostRewrite() != tc.auto {
				t.Fatalf("RewriteHost = %q, %v, auto %v; want %q, %v, %v", got, ok, r.AutoHostRewrite(), tc.want, tc.ok, tc.auto)
			}
		})
	}
}

func TestRedirect(t *testing.T) {
	https := func(ra *routev3.RedirectAction) *routev3.RedirectAction {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}
		return ra
	}
	pathRedirect := func(p string, strip bool) *routev3.RedirectAction {
		return &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: p}, StripQuery: strip}
	}
	code := func(c routev3.RedirectAction_RedirectResponseCode) *routev3.RedirectAction {
		return &routev3.RedirectAction{HostRedirect: "new.example", ResponseCode: c}
	}
	req := func(scheme, host, path string, kv ...string) *Request {
		r := get(host, path, kv...)
		r.Scheme = scheme
		return r
	}
	cases := []struct {
		name     string
		match    *routev3.RouteMatch
		action   *routev3.RedirectAction
		req      *Request
		location string
		status   int
	}{
		{"https_redirect", prefixMatch("/"), https(&routev3.RedirectAction{}), req("http", "foo.com", "/a?b=1"), "https://foo.com/a?b=1", 301},
		{"https_redirect drops :80", prefixMatch("/"), https(&routev3.RedirectAction{}), req("http", "foo.com:80", "/a"), "https://foo.com/a", 301},
		{"https_redirect keeps other port", prefixMatch("/"), https(&routev3.RedirectAction{}), req("http", "foo.com:8080", "/a"), "https://foo.com:8080/a", 301},
		{"https_redirect ipv6 drops :80", prefixMatch("/"), https(&routev3.RedirectAction{}), req("http", "[::1]:80", "/a"), "https://[::1]/a", 301},
		{"x-forwarded-proto decides the default port", prefixMatch("/"), https(&routev3.RedirectAction{}), req("http", "foo.com:443", "/a", "x-forwarded-proto", "https"), "https://foo.com:443/a", 301},
		{"scheme_redirect drops :443", prefixMatch("/"), &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "http"}}, req("https", "foo.com:443", "/a"), "http://foo.com/a", 301},
		{"same scheme keeps a default port", prefixMatch("/"), pathRedirect("/new", false), req("http", "foo.com:80", "/old"), "http://foo.com:80/new", 301},
		{"host_redirect", prefixMatch("/"), &routev3.RedirectAction{HostRedirect: "bar.com"}, req("http", "foo.com:8080", "/a"), "http://bar.com/a", 301},
		{"port_redirect replaces the port", prefixMatch("/"), &routev3.RedirectAction{PortRedirect: 8443}, req("http", "foo.com:80", "/a"), "http://foo.com:8443/a", 301},
		{"port_redirect adds a port", prefixMatch("/"), https(&routev3.RedirectAction{PortRedirect: 8443}), req("http", "foo.com", "/a"), "https://foo.com:8443/a", 301},
		{"path_redirect keeps the query", prefixMatch("/"), pathRedirect("/new", false), req("http", "foo.com", "/old?x=1"), "http://foo.com/new?x=1", 301},
		{"path_redirect strip_query", prefixMatch("/"), pathRedirect("/new", true), req("http", "foo.com", "/old?x=1"), "http://foo.com/new", 301},
		{"path_redirect query wins and is kept", prefixMatch("/"), pathRedirect("/new?foo=1", true), req("http", "foo.com", "/old?bar=1"), "http://foo.com/new?foo=1", 301},
		{"strip_query alone", prefixMatch("/"), &routev3.RedirectAction{StripQuery: true, HostRedirect: "h2"}, req("http", "foo.com", "/a?b"), "http://h2/a", 301},
		{"prefix_rewrite", prefixMatch("/old/"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"}}, req("http", "foo.com", "/old/x?q"), "http://foo.com/new/x?q", 301},
		{"regex_rewrite", prefixMatch("/"), &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
			Pattern: &matcherv3.RegexMatcher{Regex: `^/(\w+)/(\w+)$`}, Substitution: `/\2/\1`}}}, req("http", "foo.com", "/a/b?q"), "http://foo.com/b/a?q", 301},
		{"FOUND", prefixMatch("/"), code(routev3.RedirectAction_FOUND), req("http", "foo.com", "/"), "http://new.example/", 302},
		{"SEE_OTHER", prefixMatch("/"), code(routev3.RedirectAction_SEE_OTHER), req("http", "foo.com", "/"), "http://new.example/", 303},
		{"TEMPORARY_REDIRECT", prefixMatch("/"), code(routev3.RedirectAction_TEMPORARY_REDIRECT), req("http", "foo.com", "/"), "http://new.example/", 307},
		{"PERMANENT_REDIRECT", prefixMatch("/"), code(routev3.RedirectAction_PERMANENT_REDIRECT), req("http", "foo.com", "/"), "http://new.example/", 308},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, config(vhost("vh", []string{"*"}, redirectRoute("r", tc.match, tc.action)))).Select(tc.req, 0)
			if r.Kind() != Redirect || r.Location(tc.req) != tc.location || r.Status() != tc.status {
				t.Fatalf("%v Location %q status %d, want %q %d", r.Kind(), r.Location(tc.req), r.Status(), tc.location, tc.status)
			}
		})
	}
}

func TestDirectResponse(t *testing.T) {
	direct := func(status uint32, body *corev3.DataSource) *routev3.Route {
		return &routev3.Route{Name: "d", Match: prefixMatch("/"),
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status, Body: body}}}
	}
	cases := []struct {
		name     string
		route    *routev3.Route
		status   int
		body     string
		location string
	}{
		{"inline_string", direct(503, &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "down"}}), 503, "down", ""},
		{"inline_bytes", direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("ok")}}), 200, "ok", ""},
		{"no body", direct(404, nil), 404, "", ""},
		{"3xx carries the request URL", direct(301, nil), 301, "", "http://h/p?q"},
		{"201 carries the request URL", direct(201, nil), 201, "", "http://h/p?q"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := get("h", "/p?q")
			r := mustCompile(t, config(vhost("vh", []string{"*"}, tc.route))).Select(req, 0)
			if r.Kind() != DirectResponse || r.Status() != tc.status || r.Body() != tc.body || r.Location(req) != tc.location {
				t.Fatalf("%v %d %q %q, want %d %q %q", r.Kind(), r.Status(), r.Body(), r.Location(req), tc.status, tc.body, tc.location)
			}
		})
	}
}

func TestTimeoutsAndPolicies(t *testing.T) {
	ms := func(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
	set := func(d time.Duration) OptionalDuration { return OptionalDuration{D: d, Set: true} }
	withTimeouts := toCluster("c")
	withTimeouts.Timeout = ms(1500*time.Microsecond + 3*time.Second)
	withTimeouts.IdleTimeout = ms(0)
	withTimeouts.MaxGrpcTimeout = ms(0)
	withTimeouts.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: ms(time.Minute), GrpcTimeoutHeaderMax: ms(time.Second)}
	withTimeouts.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"}
	disabled := toCluster("c")
	disabled.Timeout = ms(0)

	vh := vhost("vh", []string{"*"},
		fwdRoute("default", pathMatch("/default"), toCluster("c")),
		fwdRoute("set", pathMatch("/set"), withTimeouts),
		fwdRoute("disabled", pathMatch("/disabled"), disabled))
	vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(2)}
	vh.IncludeRequestAttemptCount = true
	vh.Routes[0].Decorator = &routev3.Decorator{Operation: "op"}
	vh.Routes[1].Decorator = &routev3.Decorator{Operation: "op2", Propagate: wrapperspb.Bool(false)}
	tab := mustCompile(t, config(vh))

	r := tab.Select(get("h", "/default"), 0)
	if got := r.Timeouts(); got != (Timeouts{Request: 15 * time.Second}) {
		t.Errorf("default timeouts = %+v", got)
	}
	if r.RetryPolicy().GetRetryOn() != "connect-failure" || !r.IncludeRequestAttemptCount() || r.IncludeAttemptCountInResponse() {
		t.Errorf("vhost retry policy not inherited: %v", r.RetryPolicy())
	}
	if d, ok := r.Decorator(); !ok || d != (Decorator{Operation: "op", Propagate: true}) {
		t.Errorf("Decorator = %+v %v", d, ok)
	}

	r = tab.Select(get("h", "/set"), 0)
	want := Timeouts{Request: 3001 * time.Millisecond, Idle: set(0), MaxGrpcTimeout: set(0),
		MaxStreamDuration: set(time.Minute), GrpcTimeoutHeaderMax: set(time.Second)}
	if got := r.Timeouts(); got != want {
		t.Errorf("timeouts = %+v, want %+v", got, want)
	}
	if r.RetryPolicy().GetRetryOn() != "5xx" || r.RetryPolicy().GetNumRetries() != nil {
		t.Errorf("route retry policy must replace the vhost one whole: %v", r.RetryPolicy())
	}
	if d, _ := r.Decorator(); d.Propagate {
		t.Error("propagate false ignored")
	}

	if got := tab.Select(get("h", "/disabled"), 0).Timeouts().Request; got != 0 {
		t.Errorf("timeout 0s = %v, want disabled (0)", got)
	}
	if _, ok := tab.Select(get("h", "/disabled"), 0).Decorator(); ok {
		t.Error("Decorator set without config")
	}
}
