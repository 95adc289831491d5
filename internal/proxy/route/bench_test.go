package route

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// benchConfig builds a route configuration shaped like Istio's sidecar
// outbound "8080" routes: n services, each a virtual host with the domains
// Istio generates (short and long names, with and without port, cluster IP),
// a header-matched canary route, a prefix route and a catch-all; plus the
// allow_any "*" virtual host.
func benchConfig(n int) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: "8080", ValidateClusters: wrapperspb.Bool(false)}
	meta, _ := structpb.NewStruct(map[string]any{"config": "/apis/networking.istio.io/v1/namespaces/ns/virtual-service/vs"})
	for i := range n {
		svc := fmt.Sprintf("svc-%d", i)
		fqdn := svc + ".ns.svc.cluster.local"
		ip := fmt.Sprintf("10.96.%d.%d", i/256, i%256)
		cluster := func(subset string) string { return fmt.Sprintf("outbound|8080|%s|%s", subset, fqdn) }
		istio := func(ra *routev3.RouteAction) *routev3.RouteAction {
			ra.Timeout = durationpb.New(0)
			ra.RetryPolicy = &routev3.RetryPolicy{
				RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
				NumRetries:                    wrapperspb.UInt32(2),
				HostSelectionRetryMaxAttempts: 5,
			}
			ra.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(0), GrpcTimeoutHeaderMax: durationpb.New(0)}
			return ra
		}
		action := func(c string) *routev3.RouteAction { return istio(toCluster(c)) }
		canary := prefixMatch("/")
		canary.Headers = []*routev3.HeaderMatcher{strMatch("end-user", exactStr("jason"))}
		api := action(cluster("v1"))
		if i%3 == 0 {
			api = istio(weights(cw(cluster("v1"), 90), cw(cluster("v2"), 10)))
		}
		routes := []*routev3.Route{
			fwdRoute("canary", canary, action(cluster("v2"))),
			fwdRoute("api", prefixMatch("/api/"), api),
			fwdRoute("default", prefixMatch("/"), action(cluster(""))),
		}
		for _, r := range routes {
			r.Decorator = &routev3.Decorator{Operation: fqdn + ":8080/*"}
			r.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": meta}}
		}
		vh := vhost(fqdn+":8080", []string{
			fqdn, fqdn + ":8080", svc, svc + ":8080", svc + ".ns", svc + ".ns:8080",
			svc + ".ns.svc", svc + ".ns.svc:8080", ip, ip + ":8080",
		}, routes...)
		vh.IncludeRequestAttemptCount = true
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	allowAny := vhost("allow_any", []string{"*"}, fwdRoute("allow_any", prefixMatch("/"), toCluster("PassthroughCluster")))
	allowAny.IncludeRequestAttemptCount = true
	rc.VirtualHosts = append(rc.VirtualHosts, allowAny)
	return rc
}

func benchRequests() []*Request {
	return []*Request{
		get("svc-42.ns.svc.cluster.local:8080", "/api/v1/items?id=7", "user-agent", "curl/8", "accept", "*/*", "x-request-id", "abc"),
		get("svc-7:8080", "/index.html", "user-agent", "curl/8", "accept", "*/*"),
		get("svc-99.ns:8080", "/", "end-user", "jason", "user-agent", "curl/8"),
		get("svc-3.ns.svc.cluster.local:8080", "/api/orders", "user-agent", "curl/8"),
		get("10.96.0.55:8080", "/healthz"),
		get("example.org", "/"),
	}
}

func BenchmarkSelect(b *testing.B) {
	tab, err := Compile(benchConfig(100))
	if err != nil {
		b.Fatal(err)
	}
	reqs := benchRequests()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if tab.Select(reqs[i%len(reqs)], uint64(i)) == nil {
			b.Fatal("no route")
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	rc := benchConfig(100)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Compile(rc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBenchConfigRouting(t *testing.T) {
	tab := mustCompile(t, benchConfig(100))
	want := []struct{ vhost, route, cluster string }{
		{"svc-42.ns.svc.cluster.local:8080", "api", "outbound|8080|v2|svc-42.ns.svc.cluster.local"},
		{"svc-7.ns.svc.cluster.local:8080", "default", "outbound|8080||svc-7.ns.svc.cluster.local"},
		{"svc-99.ns.svc.cluster.local:8080", "canary", "outbound|8080|v2|svc-99.ns.svc.cluster.local"},
		{"svc-3.ns.svc.cluster.local:8080", "api", "outbound|8080|v2|svc-3.ns.svc.cluster.local"},
		{"svc-55.ns.svc.cluster.local:8080", "default", "outbound|8080||svc-55.ns.svc.cluster.local"},
		{"allow_any", "allow_any", "PassthroughCluster"},
	}
	for i, req := range benchRequests() {
		r := tab.Select(req, 95) // 95 % 100 falls in v2's [90, 100) interval
		if r == nil || r.VirtualHost() != want[i].vhost || r.Name() != want[i].route || r.ClusterName(req) != want[i].cluster {
			t.Errorf("request %d: got %v", i, r)
			continue
		}
		if r.Timeouts().Request != 0 && r.Name() != "allow_any" {
			t.Errorf("request %d: timeout %v, want disabled", i, r.Timeouts().Request)
		}
	}
}

// TestSelectDoesNotAllocate pins the zero-allocation property of the common
// paths: exact domain, prefix and exact path, exact header match, weights.
func TestSelectDoesNotAllocate(t *testing.T) {
	tab := mustCompile(t, benchConfig(100))
	for i, req := range benchRequests() {
		if n := testing.AllocsPerRun(100, func() { tab.Select(req, uint64(i)) }); n != 0 {
			t.Errorf("request %d (%s%s): %v allocs", i, req.Authority, req.Path, n)
		}
	}
}

// matchersConfig exercises the matcher kinds benchConfig leaves out: exact
// and separated-prefix paths (case-insensitive), safe_regex, present, range
// and case-insensitive suffix header matchers, a pseudo-header matcher, a
// query parameter, and a catch-all routed by cluster_header.
func matchersConfig() *routev3.RouteConfiguration {
	fold := func(m *routev3.RouteMatch) *routev3.RouteMatch { m.CaseSensitive = wrapperspb.Bool(false); return m }
	withHeaders := func(m *routev3.RouteMatch, hs ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		m.Headers = hs
		return m
	}
	suffix := &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example"}}
	query := prefixMatch("/search")
	query.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exactStr("go")}}}
	byHeader := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}}
	return config(vhost("m", []string{"*"},
		fwdRoute("exact", fold(pathMatch("/Exact/Path")), toCluster("a")),
		fwdRoute("sep", fold(sepPrefixMatch("/Sep")), toCluster("a")),
		fwdRoute("regex", regexMatch(`/items/[0-9]+`), toCluster("a")),
		fwdRoute("present", withHeaders(prefixMatch("/p"), &routev3.HeaderMatcher{Name: "x-present"}), toCluster("a")),
		fwdRoute("range", withHeaders(prefixMatch("/r"), &routev3.HeaderMatcher{Name: "x-n",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 10, End: 20}}}), toCluster("a")),
		fwdRoute("suffix", withHeaders(prefixMatch("/s"), strMatch("origin", suffix)), toCluster("a")),
		fwdRoute("method", withHeaders(prefixMatch("/m"), strMatch(":method", exactStr("POST"))), toCluster("a")),
		fwdRoute("query", query, toCluster("a")),
		fwdRoute("header", prefixMatch("/"), byHeader),
	))
}

// matchersRequests are requests for matchersConfig, each with the route it
// selects.
func matchersRequests() ([]*Request, []string) {
	return []*Request{
			get("h", "/exact/PATH?x=1"),
			get("h", "/sep/more"),
			get("h", "/items/42"),
			get("h", "/search?a=b&q=go"),
			get("h", "/range", "x-n", " 15"),
			get("h", "/s", "origin", "https://A.EXAMPLE"),
			get("h", "/other", "x-cluster", "c", "origin", "https://A.EXAMPLE", "x-n", "25"),
		},
		[]string{"exact", "sep", "regex", "query", "range", "suffix", "header"}
}

func BenchmarkSelectMatchers(b *testing.B) {
	tab, err := Compile(matchersConfig())
	if err != nil {
		b.Fatal(err)
	}
	reqs, _ := matchersRequests()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := reqs[i%len(reqs)]
		r := tab.Select(req, 0)
		if r == nil || r.ClusterName(req) == "" {
			b.Fatal("no route")
		}
	}
}

func TestMatchersConfigRouting(t *testing.T) {
	tab := mustCompile(t, matchersConfig())
	reqs, want := matchersRequests()
	for i, req := range reqs {
		if r := tab.Select(req, 0); routeName(r) != want[i] {
			t.Errorf("%s: route %s, want %s", req.Path, routeName(r), want[i])
		}
		if n := testing.AllocsPerRun(100, func() { tab.Select(req, 0).ClusterName(req) }); n != 0 {
			t.Errorf("%s: %v allocs", req.Path, n)
		}
	}
}
