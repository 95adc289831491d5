package dashboard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amime-mesh/amime/internal/tracestore"
)

// envoyBuckets are the bucket bounds the proxies use (Envoy's defaults).
var envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// fx is one fixture series: its labels, a request count and the one
// latency every request took.
type fx struct {
	labels map[string]string
	count  float64
	ms     float64
}

// istio fills every standard label, as a proxy would, from a short form:
// reporter, source "ns/workload/app/version" (or "unknown"), destination
// likewise, destination service host, response code, security policy.
func istio(reporter, src, dst, host, code, security string) map[string]string {
	m := map[string]string{"reporter": reporter, "request_protocol": "http", "response_code": code,
		"grpc_response_status": "", "response_flags": "-", "connection_security_policy": security,
		"destination_service": host}
	side := func(prefix, s string) {
		p := strings.Split(s, "/")
		if len(p) != 4 {
			p = []string{"unknown", "unknown", "unknown", "unknown"}
		}
		m[prefix+"_workload_namespace"], m[prefix+"_workload"], m[prefix+"_app"], m[prefix+"_version"] = p[0], p[1], p[2], p[3]
		m[prefix+"_canonical_service"] = p[2]
	}
	side("source", src)
	side("destination", dst)
	name, ns := host, "unknown"
	if i := strings.Index(host, ".svc."); i > 0 {
		name, ns, _ = strings.Cut(host[:i], ".")
	}
	m["destination_service_name"], m["destination_service_namespace"] = name, ns
	return m
}

func labelString(m map[string]string, extra ...string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	parts = append(parts, extra...)
	return "{" + strings.Join(parts, ",") + "}"
}

// promText renders series as a proxy's /stats/prometheus would.
func promText(series []fx) string {
	var b strings.Builder
	b.WriteString("# TYPE istio_requests_total counter\n")
	for _, s := range series {
		fmt.Fprintf(&b, "istio_requests_total%s %g\n", labelString(s.labels), s.count)
	}
	b.WriteString("# TYPE istio_request_duration_milliseconds histogram\n")
	for _, s := range series {
		for _, le := range envoyBuckets {
			n := 0.0
			if s.ms <= le {
				n = s.count
			}
			fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket%s %g\n", labelString(s.labels, fmt.Sprintf("le=%q", fmt.Sprint(le))), n)
		}
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket%s %g\n", labelString(s.labels, `le="+Inf"`), s.count)
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_sum%s %g\n", labelString(s.labels), s.count*s.ms)
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_count%s %g\n", labelString(s.labels), s.count)
	}
	// Something else a proxy exposes, which the console skips.
	b.WriteString("# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 12\n")
	return b.String()
}

// Hosts and workloads of the seed example.
const (
	hostCustomer = "customer.default.svc.cluster.local"
	hostPref     = "preference.default.svc.cluster.local"
	hostRec      = "recommendation.default.svc.cluster.local"
	wGateway     = "default/istio-ingressgateway/istio-ingressgateway/unknown"
	wCustomer    = "default/customer-v1/customer/v1"
	wPref        = "default/preference-v1/preference/v1"
	wRecV1       = "default/recommendation-v1/recommendation/v1"
	wRecV2       = "default/recommendation-v2/recommendation/v2"
)

// flow is steady traffic: rate requests per second of latency ms.
type flow struct {
	labels map[string]string
	rate   float64
	ms     float64
}

// meshProxy is a fake proxy serving counters that grow with time at its
// flows' rates, so that the console must find those rates.
type meshProxy struct {
	Proxy
	mu     sync.Mutex
	flows  []flow
	counts []float64
	last   time.Time
	srv    *httptest.Server
}

// advance grows the counters to now and renders them.
func (p *meshProxy) advance(now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := now.Sub(p.last).Seconds()
	p.last = now
	series := make([]fx, 0, len(p.flows))
	for i, f := range p.flows {
		p.counts[i] += f.rate * el
		series = append(series, fx{labels: f.labels, count: math.Floor(p.counts[i]), ms: f.ms})
	}
	return promText(series)
}

// setRate changes a flow's rate from now on.
func (p *meshProxy) setRate(i int, rate float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flows[i].rate = rate
}

// fakeMesh is the seed example (customer → preference → recommendation v1
// 90% / v2 10%, behind the ingress gateway) as five fake proxies.
type fakeMesh struct {
	start   time.Time
	proxies []*meshProxy
	mu      sync.Mutex
	removed map[string]bool
}

func seedFlows() map[string][]flow {
	return map[string][]flow{
		"gateway": {
			{istio("source", wGateway, wCustomer, hostCustomer, "200", "unknown"), 10, 42},
		},
		"customer": {
			{istio("destination", wGateway, wCustomer, hostCustomer, "200", "mutual_tls"), 10, 40},
			{istio("source", wCustomer, wPref, hostPref, "200", "unknown"), 10, 30},
			// Callers from outside the mesh straight to customer: none
			// until a test turns them on.
			{istio("destination", "unknown", wCustomer, hostCustomer, "200", "none"), 0, 35},
		},
		"preference": {
			{istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), 10, 28},
			{istio("source", wPref, wRecV1, hostRec, "200", "unknown"), 9, 12},
			{istio("source", wPref, wRecV2, hostRec, "200", "unknown"), 0.9, 20},
			{istio("source", wPref, wRecV2, hostRec, "503", "unknown"), 0.1, 3},
		},
		"recommendation-v1": {
			{istio("destination", wPref, wRecV1, hostRec, "200", "mutual_tls"), 9, 10},
		},
		"recommendation-v2": {
			{istio("destination", wPref, wRecV2, hostRec, "200", "mutual_tls"), 0.9, 18},
			{istio("destination", wPref, wRecV2, hostRec, "503", "mutual_tls"), 0.1, 2},
		},
	}
}

func newFakeMesh(t *testing.T) *fakeMesh {
	t.Helper()
	m := &fakeMesh{start: time.Now(), removed: map[string]bool{}}
	flows := seedFlows()
	add := func(name, ns, workload, app, version string, gateway bool, types map[string]string) {
		p := &meshProxy{flows: flows[name], counts: make([]float64, len(flows[name])), last: m.start}
		p.Proxy = Proxy{
			ID: "sidecar~127.0.0.1~" + workload + "." + ns + "~" + ns + ".svc.cluster.local", Namespace: ns,
			Workload: workload, App: app, Version: version, Gateway: gateway, ConnectedAt: m.start, Types: types,
		}
		if gateway {
			p.ID = "router~127.0.0.1~" + workload + "." + ns + "~" + ns + ".svc.cluster.local"
		}
		p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			fmt.Fprint(w, p.advance(time.Now()))
		}))
		t.Cleanup(p.srv.Close)
		p.StatsURL = p.srv.URL + "/stats/prometheus"
		m.proxies = append(m.proxies, p)
	}
	synced := func() map[string]string {
		return map[string]string{"CDS": "SYNCED", "LDS": "SYNCED", "RDS": "SYNCED", "EDS": "SYNCED"}
	}
	add("gateway", "default", "istio-ingressgateway", "istio-ingressgateway", "", true, synced())
	add("customer", "default", "customer-v1", "customer", "v1", false, synced())
	nack := synced()
	nack["LDS"] = "NACK: listener virtualInbound: unknown field \"foo\" in envoy.config.listener.v3.Listener"
	nack["RDS"] = "STALE"
	add("preference", "default", "preference-v1", "preference", "v1", false, nack)
	add("recommendation-v1", "default", "recommendation-v1", "recommendation", "v1", false, synced())
	add("recommendation-v2", "default", "recommendation-v2", "recommendation", "v2", false, synced())
	return m
}

func (m *fakeMesh) list() []Proxy {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Proxy, 0, len(m.proxies))
	for _, p := range m.proxies {
		if !m.removed[p.ID] {
			out = append(out, p.Proxy)
		}
	}
	return out
}

func (m *fakeMesh) sources() Sources {
	return Sources{
		Proxies: m.list,
		ConfigDump: func(ctx context.Context, id string) ([]byte, error) {
			for _, p := range m.list() {
				if p.ID == id {
					return []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.ListenersConfigDump","dynamic_listeners":[{"name":"virtualInbound <b>"}]}]}`), nil
				}
			}
			return nil, errors.New("no such proxy")
		},
		ServiceConfig: func(host string) ([]ConfigObject, []string) {
			if host != hostRec {
				return nil, nil
			}
			return []ConfigObject{
				{Kind: "VirtualService", Namespace: "default", Name: "recommendation", YAML: "spec:\n  hosts: [recommendation]\n  http:\n  - route:\n    - destination: {host: recommendation, subset: v1}\n      weight: 90\n    - destination: {host: recommendation, subset: v2}\n      weight: 10\n# <script>alert(1)</script>\n"},
				{Kind: "DestinationRule", Namespace: "default", Name: "recommendation", YAML: "spec:\n  host: recommendation\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"},
			}, []string{"VirtualService default/recommendation: subset v3 <img src=x> is not defined"}
		},
		Traces: fakeTraces{},
	}
}

// fakeTraces holds one trace of the seed example, its last span failed.
type fakeTraces struct{}

var traceStart = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func seedTrace() tracestore.Trace {
	at := func(ms int) time.Time { return traceStart.Add(time.Duration(ms) * time.Millisecond) }
	return tracestore.Trace{ID: "4bf92f3577b34da6a3ce929d0e0e4736", Spans: []tracestore.Span{
		{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "0000000000000001", Name: "GET /", Service: "istio-ingressgateway", Kind: "SERVER", Start: at(0), Duration: 50 * time.Millisecond},
		{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "0000000000000002", ParentID: "0000000000000001", Name: "GET /", Service: "customer", Kind: "SERVER", Start: at(2), Duration: 45 * time.Millisecond},
		{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "0000000000000003", ParentID: "0000000000000002", Name: "GET /", Service: "preference", Kind: "SERVER", Start: at(5), Duration: 35 * time.Millisecond},
		{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "0000000000000004", ParentID: "0000000000000003", Name: "GET /", Service: "recommendation", Kind: "SERVER", Start: at(10), Duration: 20 * time.Millisecond, Error: true, Tags: map[string]string{"http.status_code": "503"}},
	}}
}

func (fakeTraces) Search(q tracestore.Query) []tracestore.Summary {
	t := seedTrace()
	if q.MinDuration > 50*time.Millisecond {
		return nil
	}
	if q.Service != "" && q.Service != "customer" && q.Service != "preference" && q.Service != "recommendation" && q.Service != "istio-ingressgateway" {
		return nil
	}
	return []tracestore.Summary{{ID: t.ID, Root: "istio-ingressgateway: GET /", Start: traceStart, Duration: 50 * time.Millisecond, Spans: 4,
		Services: []string{"customer", "istio-ingressgateway", "preference", "recommendation"}, HasErrors: true}}
}

func (fakeTraces) Trace(id string) (tracestore.Trace, bool) {
	t := seedTrace()
	return t, id == t.ID
}

func (fakeTraces) Services() []string {
	return []string{"customer", "istio-ingressgateway", "preference", "recommendation"}
}
