package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// eventually polls f until it succeeds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll period, not a readiness wait
	}
}

func get(t *testing.T, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// startConsole runs a console over src on 127.0.0.1.
func startConsole(t *testing.T, src Sources, opts Options) (*Dashboard, string) {
	t.Helper()
	if opts.ScrapeInterval == 0 {
		opts.ScrapeInterval = 100 * time.Millisecond
	}
	d := New(src, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d, srv.URL
}

// seedEdges are the seed example's edges and their rates in req/s.
var seedEdges = map[string]float64{
	"unknown -> g:default/istio-ingressgateway":               10,
	"g:default/istio-ingressgateway -> v:default/customer/v1": 10,
	"v:default/customer/v1 -> v:default/preference/v1":        10,
	"v:default/preference/v1 -> v:default/recommendation/v1":  9,
	"v:default/preference/v1 -> v:default/recommendation/v2":  1,
}

// checkSeedGraph reports how g differs from the seed example's traffic.
func checkSeedGraph(g Graph) error {
	got := map[string]GraphEdge{}
	for _, e := range g.Edges {
		got[e.ID] = e
	}
	for id, rate := range seedEdges {
		e, ok := got[id]
		if !ok {
			return fmt.Errorf("no edge %s in %v", id, edgeIDs(g))
		}
		if math.Abs(e.Rate-rate) > 0.3*rate {
			return fmt.Errorf("%s: rate %.2f, want about %v", id, e.Rate, rate)
		}
	}
	if len(got) != len(seedEdges) {
		return fmt.Errorf("edges %v, want %d", edgeIDs(g), len(seedEdges))
	}
	return nil
}

func TestAPIGraphFromLiveProxies(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{Window: time.Minute})
	var g Graph
	eventually(t, 20*time.Second, func() error {
		if err := getJSON(base+"/api/graph?window=3s", &g); err != nil {
			return err
		}
		return checkSeedGraph(g)
	})
	byID := map[string]GraphEdge{}
	for _, e := range g.Edges {
		byID[e.ID] = e
	}
	if e := byID["v:default/customer/v1 -> v:default/preference/v1"]; e.Reporter != "destination" || !e.Lock || e.Health != Healthy {
		t.Errorf("customer -> preference: %+v", e)
	}
	if e := byID["unknown -> g:default/istio-ingressgateway"]; e.Lock {
		t.Errorf("traffic from outside the mesh is locked: %+v", e)
	}
	for _, n := range g.Nodes {
		if n.ID == "v:default/recommendation/v2" && n.Parent != "s:"+hostRec {
			t.Errorf("recommendation v2 sits in %q", n.Parent)
		}
	}

	// recommendation-v2's proxy leaves: its destination reports stop, and
	// the edge is read from preference's source reports instead.
	m.mu.Lock()
	m.removed[m.proxies[4].ID] = true
	m.mu.Unlock()
	eventually(t, 20*time.Second, func() error {
		if err := getJSON(base+"/api/graph?window=1s", &g); err != nil {
			return err
		}
		for _, e := range g.Edges {
			if e.ID == "v:default/preference/v1 -> v:default/recommendation/v2" {
				if e.Reporter != "source" || e.Rate <= 0 || e.Lock {
					return fmt.Errorf("v2 edge %+v", e)
				}
				return nil
			}
		}
		return fmt.Errorf("no v2 edge in %v", edgeIDs(g))
	})

	if code, body, _ := get(t, base+"/api/graph?window=soon"); code != http.StatusBadRequest || !strings.Contains(body, "window") {
		t.Errorf("bad window: %d %s", code, body)
	}
}

func TestAPIService(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{Window: time.Minute})
	var v ServiceView
	eventually(t, 20*time.Second, func() error {
		if err := getJSON(base+"/api/services/"+url.PathEscape(hostRec)+"?window=3s", &v); err != nil {
			return err
		}
		points := 0
		for _, p := range v.Series {
			if p.Rate > 0 && p.P99 != nil {
				points++
			}
		}
		if points < 3 {
			return fmt.Errorf("%d points with traffic", points)
		}
		if len(v.Inbound) != 2 {
			return fmt.Errorf("inbound %+v", v.Inbound)
		}
		return nil
	})
	if len(v.Outbound) != 0 {
		t.Errorf("recommendation calls nobody, outbound %+v", v.Outbound)
	}
	if len(v.Config) != 2 || len(v.Warnings) != 1 {
		t.Errorf("config %d objects, %d warnings", len(v.Config), len(v.Warnings))
	}
	// The service's rate is its inbound traffic: about 10 req/s (the fake
	// counters are whole numbers, so single points jitter around it).
	sum, n := 0.0, 0
	for _, p := range v.Series[1:] {
		sum += p.Rate
		n++
	}
	if mean := sum / float64(n); mean < 7 || mean > 13 {
		t.Errorf("mean rate %.2f, want about 10", mean)
	}
}

func TestAPIProxiesAndConfigDump(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{})
	var ps []Proxy
	if err := getJSON(base+"/api/proxies", &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 5 {
		t.Fatalf("%d proxies", len(ps))
	}
	nacks := 0
	for _, p := range ps {
		if strings.HasPrefix(p.Types["LDS"], "NACK: ") {
			nacks++
		}
	}
	if nacks != 1 {
		t.Errorf("%d NACKs", nacks)
	}
	id := m.proxies[1].ID
	code, body, _ := get(t, base+"/api/proxies/"+url.PathEscape(id)+"/config_dump")
	if code != http.StatusOK || !strings.Contains(body, "\n  \"configs\": [") {
		t.Errorf("config dump: %d %s", code, body)
	}
	code, body, _ = get(t, base+"/proxies/"+url.PathEscape(id)+"/config")
	if code != http.StatusOK || !strings.Contains(body, "virtualInbound &lt;b&gt;") {
		t.Errorf("config dump page: %d %s", code, body)
	}
	if code, _, _ := get(t, base+"/api/proxies/nope/config_dump"); code != http.StatusBadGateway {
		t.Errorf("unknown proxy: %d", code)
	}
	code, body, _ = get(t, base+"/proxies")
	if code != http.StatusOK || !strings.Contains(body, "NACK: listener virtualInbound: unknown field &#34;foo&#34;") {
		t.Errorf("proxies page: %d\n%s", code, body)
	}
}

func TestPagesEscapeMeshData(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{})
	code, body, h := get(t, base+"/services/"+url.PathEscape(hostRec))
	if code != http.StatusOK {
		t.Fatalf("service page: %d", code)
	}
	for _, bad := range []string{"<script>alert", "<img src=x>"} {
		if strings.Contains(body, bad) {
			t.Errorf("service page contains %q unescaped", bad)
		}
	}
	for _, good := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "subset v3 &lt;img src=x&gt;", "weight: 90", `data-host="` + hostRec + `"`} {
		if !strings.Contains(body, good) {
			t.Errorf("service page lacks %q", good)
		}
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// A host that is markup in the path is escaped too.
	code, body, _ = get(t, base+"/services/"+url.PathEscape(`"><script>x()</script>`))
	if code != http.StatusOK || strings.Contains(body, "<script>x()") {
		t.Errorf("hostile host: %d", code)
	}
	for _, p := range []string{"/", "/static/graph.js", "/static/style.css", "/static/common.js", "/static/service.js"} {
		if code, _, _ := get(t, base+p); code != http.StatusOK {
			t.Errorf("GET %s: %d", p, code)
		}
	}
}

func TestTraces(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{})
	var sums []map[string]any
	if err := getJSON(base+"/api/traces?service=customer&minDuration=10ms&limit=5", &sums); err != nil || len(sums) != 1 {
		t.Fatalf("search: %v %v", sums, err)
	}
	cases := []struct {
		path string
		code int
		has  string
	}{
		{"/api/traces?minDuration=51", http.StatusOK, "[]"},
		{"/api/traces?minDuration=soon", http.StatusBadRequest, "minDuration"},
		{"/api/traces?limit=0", http.StatusBadRequest, "limit"},
		{"/api/traces/4bf92f3577b34da6a3ce929d0e0e4736", http.StatusOK, `"spanId": "0000000000000004"`},
		{"/api/traces/00", http.StatusNotFound, "no such trace"},
		{"/traces?service=customer", http.StatusOK, `href="/traces/4bf92f3577b34da6a3ce929d0e0e4736"`},
		{"/traces?minDuration=-", http.StatusBadRequest, "minDuration"},
		{"/traces/4bf92f3577b34da6a3ce929d0e0e4736", http.StatusOK, `class="wf-row error" data-span="0000000000000004"`},
		{"/traces/00", http.StatusNotFound, "No trace with this id"},
	}
	for _, c := range cases {
		code, body, _ := get(t, base+c.path)
		if code != c.code || !strings.Contains(body, c.has) {
			t.Errorf("GET %s: %d, want %d with %q:\n%s", c.path, code, c.code, c.has, body)
		}
	}
	_, body, _ := get(t, base+"/traces/4bf92f3577b34da6a3ce929d0e0e4736")
	if n := strings.Count(body, `class="wf-row`); n != 4 {
		t.Errorf("%d waterfall rows, want 4", n)
	}

	off := m.sources()
	off.Traces = nil
	_, base = startConsole(t, off, Options{})
	if code, body, _ := get(t, base+"/traces"); code != http.StatusOK || !strings.Contains(body, "Tracing is off") {
		t.Errorf("traces page with tracing off: %d", code)
	}
	if code, _, _ := get(t, base+"/api/traces"); code != http.StatusNotFound {
		t.Errorf("traces API with tracing off: %d", code)
	}
}

func TestWaterfall(t *testing.T) {
	tr := seedTrace()
	// An orphan (parent evicted) becomes a root; children follow parents.
	orphan := tr.Spans[3]
	orphan.SpanID, orphan.ParentID, orphan.Start = "0000000000000005", "00000000000000ff", traceStart.Add(60*time.Millisecond)
	tr.Spans = append(tr.Spans, orphan)
	w := buildWaterfall(tr)
	want := []struct {
		id    string
		depth int
		x, w  string
	}{
		{"0000000000000001", 0, "0.00", "625.00"},
		{"0000000000000002", 1, "25.00", "562.50"},
		{"0000000000000003", 2, "62.50", "437.50"},
		{"0000000000000004", 3, "125.00", "250.00"},
		{"0000000000000005", 0, "750.00", "250.00"},
	}
	if len(w.Rows) != len(want) {
		t.Fatalf("%d rows", len(w.Rows))
	}
	for i, r := range w.Rows {
		if r.SpanID != want[i].id || r.Depth != want[i].depth || r.X != want[i].x || r.W != want[i].w {
			t.Errorf("row %d: %s depth %d x %s w %s; want %+v", i, r.SpanID, r.Depth, r.X, r.W, want[i])
		}
	}
	if w.Duration != 80*time.Millisecond {
		t.Errorf("duration %v", w.Duration)
	}
}

// TestPrometheusMode reads the same traffic from a Prometheus server.
func TestPrometheusMode(t *testing.T) {
	start := time.Now()
	flows := seedFlows()
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		el := time.Since(start).Seconds()
		type res struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		var out []res
		q := r.URL.Query().Get("query")
		for inst, fs := range flows {
			for _, f := range fs {
				n := math.Floor(f.rate * el)
				m := map[string]string{"instance": inst + ":15090", "job": "envoy-stats"}
				for k, v := range f.labels {
					m[k] = v
				}
				switch q {
				case requestsTotal:
					m["__name__"] = q
					out = append(out, res{m, [2]any{float64(time.Now().Unix()), fmt.Sprint(n)}})
				case requestDuration + "_bucket":
					for _, le := range append(append([]float64(nil), envoyBuckets...), math.Inf(1)) {
						b := map[string]string{"le": fmt.Sprint(le)}
						if math.IsInf(le, 1) {
							b["le"] = "+Inf"
						}
						for k, v := range m {
							b[k] = v
						}
						c := 0.0
						if f.ms <= le {
							c = n
						}
						out = append(out, res{b, [2]any{float64(time.Now().Unix()), fmt.Sprint(c)}})
					}
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": out}})
	}))
	defer prom.Close()
	proxies := []Proxy{{ID: "gw", Namespace: "default", Workload: "istio-ingressgateway", Gateway: true}}
	_, base := startConsole(t, Sources{Proxies: func() []Proxy { return proxies }}, Options{PrometheusURL: prom.URL, Window: time.Minute})
	eventually(t, 20*time.Second, func() error {
		var g Graph
		if err := getJSON(base+"/api/graph?window=3s", &g); err != nil {
			return err
		}
		return checkSeedGraph(g)
	})
}

func TestRunEndsWithContext(t *testing.T) {
	d := New(Sources{}, Options{ScrapeInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
