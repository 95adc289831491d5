package explain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/xds/translate"
)

// want is one expected outcome: its share, status, flags, and text its
// reason (and by, fix) must contain.
type want struct {
	percent float64
	status  int
	flags   string
	reason  string
	by      string
	fix     string
}

func checkOutcomes(t *testing.T, tr *Trail, ws []want) {
	t.Helper()
	if len(tr.Outcomes) != len(ws) {
		t.Fatalf("%d outcomes %+v, want %d", len(tr.Outcomes), tr.Outcomes, len(ws))
	}
	for _, w := range ws {
		found := false
		for _, o := range tr.Outcomes {
			if o.Percent == w.percent && o.Status == w.status && o.Flags == w.flags && strings.Contains(o.Reason, w.reason) &&
				strings.Contains(o.By, w.by) && strings.Contains(o.Fix, w.fix) {
				found = true
			}
		}
		if !found {
			t.Errorf("no outcome %+v in %+v", w, tr.Outcomes)
		}
	}
}

func TestOutcomes(t *testing.T) {
	headerRoute := reviewsSubsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: everyone
    route: [{destination: {host: reviews, subset: v1}}]
`
	denyPost := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
`
	allowCustomer := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-customer}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/customer]}}]}]
`
	strict := `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
`
	cases := []struct {
		name string
		f    fixture
		req  Request
		want []want
	}{
		{"no VirtualService: both versions", fixture{}, Request{URL: "http://reviews:9080/r/1"}, []want{
			{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}},
		{"header match", fixture{config: headerRoute}, Request{URL: "http://reviews:9080/r/1", Headers: map[string][]string{"End-User": {"jason"}}}, []want{
			{percent: 100, reason: "reaches reviews-v2"}}},
		{"header absent", fixture{config: headerRoute}, Request{URL: "http://reviews:9080/r/1"}, []want{
			{percent: 100, reason: "reaches reviews-v1"}}},
		{"weighted split", fixture{config: reviewsSubsets + "---\n" + split(80, 20)}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 80, reason: "reaches reviews-v1"}, {percent: 20, reason: "reaches reviews-v2"}}},
		{"missing subset", fixture{config: split(100, 0)}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 100, status: 503, flags: "NC", reason: "subset v1 of reviews.default.svc.cluster.local is not defined",
				by: "VirtualService default/reviews", fix: "define subset v1 in a DestinationRule for reviews"}}},
		{"abort half, delay all", fixture{config: reviewsSubsets + "---\n" + split(100, 0) + `    fault:
      abort: {httpStatus: 503, percentage: {value: 50}}
      delay: {fixedDelay: 2s, percentage: {value: 100}}
`}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 50, status: 503, flags: "FI", reason: "fault injected: abort with HTTP 503 for 50%", by: "VirtualService default/reviews"},
			{percent: 50, reason: "reaches reviews-v1"}}},
		{"unknown host, REGISTRY_ONLY", fixture{mesh: translate.Mesh{OutboundTrafficPolicy: translate.RegistryOnly}},
			Request{URL: "http://httpbin.org/get"}, []want{
				{percent: 100, status: 502, reason: "REGISTRY_ONLY: httpbin.org is not in the service registry", by: "outboundTrafficPolicy REGISTRY_ONLY", fix: "ServiceEntry"}}},
		{"unknown host, ALLOW_ANY", fixture{}, Request{URL: "http://httpbin.org/get"}, []want{
			{percent: 100, status: 503, reason: "ALLOW_ANY: httpbin.org is not in the service registry", by: "PassthroughCluster", fix: "MESH_EXTERNAL ServiceEntry"}}},
		{"DENY POST", fixture{config: denyPost}, Request{Method: "POST", URL: "http://reviews:9080/r/1"}, []want{
			{percent: 100, status: 403, reason: "RBAC: denied by AuthorizationPolicy default/deny-post", by: "AuthorizationPolicy default/deny-post"}}},
		{"DENY POST lets GET through", fixture{config: denyPost + "---\n" + reviewsSubsets + "---\n" + split(100, 0)}, Request{URL: "http://reviews:9080/r/1"}, []want{
			{percent: 100, reason: "reaches reviews-v1"}}},
		{"ALLOW principal, mTLS source", fixture{config: allowCustomer, clientMTLS: true}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}},
		{"ALLOW principal, other source", fixture{config: allowCustomer, clientMTLS: true}, Request{From: "productpage-v1", URL: "http://reviews:9080/"}, []want{
			{percent: 100, status: 403, reason: "RBAC: no ALLOW policy matches", by: "AuthorizationPolicy default/allow-customer"}}},
		{"ALLOW principal, plaintext source", fixture{config: allowCustomer}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 100, status: 403, reason: "RBAC: no ALLOW policy matches", by: "AuthorizationPolicy default/allow-customer"}}},
		{"STRICT, plaintext source", fixture{config: strict}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 100, status: 503, flags: "UC", reason: "requires mutual TLS (PeerAuthentication STRICT) and the source sends plaintext", fix: "workload certificate"}}},
		{"STRICT, mTLS source", fixture{config: strict, clientMTLS: true}, Request{URL: "http://reviews:9080/"}, []want{
			{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}},
		{"no route", fixture{config: reviewsSubsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
`}, Request{URL: "http://reviews:9080/other"}, []want{
			{percent: 100, status: 404, flags: "NR", reason: "no route of customer-v1 matches GET reviews:9080/other"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.f.explain(t, tc.req)
			checkOutcomes(t, tr, tc.want)
			if !strings.Contains(tr.Summary, "from "+strings.TrimSuffix(or(tc.req.From, "customer-v1"), "")+" → ") {
				t.Errorf("summary %q does not name the source", tr.Summary)
			}
		})
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// split routes reviews to v1 and v2 with weights (0 leaves v2 out).
func split(w1, w2 int) string {
	s := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: ` + fmt.Sprint(w1) + "\n"
	if w2 > 0 {
		s += `    - destination: {host: reviews, subset: v2}
      weight: ` + fmt.Sprint(w2) + "\n"
	}
	return s
}

func TestTrailSteps(t *testing.T) {
	vs := reviewsSubsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: split
    timeout: 3s
    retries: {attempts: 4, perTryTimeout: 1s, retryOn: 5xx}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v2}
      weight: 25
`
	tr := fixture{config: vs, clientMTLS: true}.explain(t, Request{URL: "http://reviews:9080/r/1"})

	l := findStep(t, tr, "listener", "127.0.0.1_15001")
	if !strings.Contains(l.Why, "HTTP_PROXY") || l.hop != 0 {
		t.Errorf("listener step %+v: want the HTTP_PROXY listener of hop 1", l)
	}
	vh := findStep(t, tr, "virtual_host", "reviews.default.svc.cluster.local:9080")
	if !strings.Contains(vh.Why, `domain "reviews:9080" (exact)`) {
		t.Errorf("virtual host why %q: want the matching domain", vh.Why)
	}
	rt := findStep(t, tr, "route", `routes[1] "split"`)
	if rt.Config != "VirtualService default/reviews" {
		t.Errorf("route config %q", rt.Config)
	}
	skipped := findStep(t, tr, "route", `routes[0] "jason" does not match`)
	if !strings.Contains(skipped.Why, `header end-user = "jason"`) {
		t.Errorf("skipped route why %q: want its header match", skipped.Why)
	}
	// Both branches listed with their weights, neither drawn.
	for _, w := range []string{"weight 75 of 100 (75% of requests): cluster outbound|9080|v1|reviews", "weight 25 of 100 (25% of requests): cluster outbound|9080|v2|reviews"} {
		c := findStep(t, tr, "cluster", w)
		if c.Config != "VirtualService default/reviews" {
			t.Errorf("branch %q config %q", w, c.Config)
		}
	}
	ep := findStep(t, tr, "endpoint", "10.0.0.1:9080")
	if !strings.Contains(ep.Decision, "healthy, mTLS") || !strings.Contains(ep.Decision, "→ hop 2 (reviews-v1)") {
		t.Errorf("endpoint decision %q: want healthy, mTLS and the next hop", ep.Decision)
	}
	if to := findStep(t, tr, "timeout", "request timeout 3s"); to.Config != "VirtualService default/reviews" {
		t.Errorf("timeout config %q", to.Config)
	}
	re := findStep(t, tr, "retry", "up to 4 retries on 5xx")
	if !strings.Contains(re.Why, "per-try timeout 1s") {
		t.Errorf("retry why %q", re.Why)
	}
	// Hop 2: the inbound side of reviews-v1, reached over mTLS.
	if len(tr.Hops) != 3 || tr.Hops[1].Side != "inbound" || tr.Hops[1].Workload != "reviews-v1" {
		t.Fatalf("hops %+v: want the outbound hop and both reviews sidecars", tr.Hops)
	}
	fc := findStep(t, tr, "filter_chain", "tls")
	if fc.hop != 1 {
		t.Errorf("filter chain step on hop %d", fc.hop+1)
	}
	tls := findStep(t, tr, "tls", "mutual TLS")
	if !strings.Contains(tls.Why, "client identity spiffe://cluster.local/ns/default/sa/customer") {
		t.Errorf("tls why %q", tls.Why)
	}
	// The trail is JSON for the API.
	b, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	var back Trail
	if err := json.Unmarshal(b, &back); err != nil || back.Summary != tr.Summary || len(back.Hops) != len(tr.Hops) {
		t.Errorf("JSON round trip: %v, %q", err, back.Summary)
	}
}

func TestRetriedConnectionFailure(t *testing.T) {
	// The default retry policy retries connect failures: a TLS client
	// meeting a plaintext-only port fails its handshake on every try.
	disable := `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-plain}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: DISABLE}
`
	tr := fixture{config: disable, clientMTLS: true}.explain(t, Request{URL: "http://reviews:9080/"})
	checkOutcomes(t, tr, []want{{percent: 100, status: 503, flags: "UF,URX", reason: "the port accepts plaintext only"}})
}

func TestDenyNamesRule(t *testing.T) {
	deny := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
`
	tr := fixture{config: deny}.explain(t, Request{Method: "POST", URL: "http://reviews:9080/"})
	s := findStep(t, tr, "rbac", "denied")
	if s.Config != "AuthorizationPolicy default/deny-post" || !strings.Contains(s.Why, "default/deny-post rules[0]") || s.Status != 403 {
		t.Errorf("rbac step %+v", s.Step)
	}
	if s.Details != "rbac_access_denied_matched_policy[ns[default]-policy[deny-post]-rule[0]]" {
		t.Errorf("details %q: want the proxy's response_code_details", s.Details)
	}
	if want := "POST http://reviews:9080/ from customer-v1 → 403 RBAC: denied by AuthorizationPolicy default/deny-post"; tr.Summary != want {
		t.Errorf("summary %q, want %q", tr.Summary, want)
	}
}

func TestFindSource(t *testing.T) {
	ps := []*Proxy{
		{ID: "sidecar~10.0.0.1~reviews-v1.default", Labels: map[string]string{"app": "reviews"}},
		{ID: "sidecar~10.0.0.2~reviews-v2.default", Labels: map[string]string{"app": "reviews"}},
		{ID: "sidecar~10.0.0.9~client.default", Workload: "customer-v1", Labels: map[string]string{"app": "customer"}},
		{ID: "router~10.0.0.5~istio-ingressgateway-1.istio-system", Gateway: true},
	}
	cases := []struct {
		from, want string
		err        bool
	}{
		{"sidecar~10.0.0.1~reviews-v1.default", "sidecar~10.0.0.1~reviews-v1.default", false},
		{"reviews-v2", "sidecar~10.0.0.2~reviews-v2.default", false},
		{"customer-v1", "sidecar~10.0.0.9~client.default", false},
		{"client", "sidecar~10.0.0.9~client.default", false},
		{"customer", "sidecar~10.0.0.9~client.default", false},
		{"ingressgateway", "router~10.0.0.5~istio-ingressgateway-1.istio-system", false},
		{"reviews", "", true}, // two proxies
		{"ratings", "", true},
		{"", "", true},
	}
	for _, tc := range cases {
		p, err := FindSource(ps, tc.from)
		switch {
		case tc.err && (err == nil || !errors.Is(err, ErrSource)):
			t.Errorf("FindSource(%q) = %v, %v; want an ErrSource", tc.from, p, err)
		case !tc.err && (err != nil || p.ID != tc.want):
			t.Errorf("FindSource(%q) = %v, %v; want %s", tc.from, p, err, tc.want)
		}
	}
}

func TestBadRequest(t *testing.T) {
	ps := fixture{}.proxies(t)
	for _, req := range []Request{
		{From: "customer-v1", URL: "reviews:9080/"},
		{From: "customer-v1", URL: "ftp://reviews/"},
		{From: "customer-v1", URL: "http://reviews:0/"},
		{From: "customer-v1", URL: "http://reviews/", Method: "GE T"},
		{From: "customer-v1", URL: "http://reviews/", Headers: map[string][]string{":path": {"/x"}}},
	} {
		if _, err := Explain(context.Background(), ps, req, Options{}); err == nil {
			t.Errorf("Explain(%+v): no error", req)
		}
	}
}

// BenchmarkExplain is one explanation of a weighted route across two
// sidecars: explain runs per CLI call, not per request, so this only keeps
// its cost visible (route tables and clusters are compiled per call).
func BenchmarkExplain(b *testing.B) {
	ps := fixture{config: reviewsSubsets + "---\n" + split(80, 20), clientMTLS: true}.proxies(b)
	req := Request{From: "customer-v1", URL: "http://reviews:9080/r/1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Explain(context.Background(), ps, req, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
