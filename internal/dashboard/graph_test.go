package dashboard

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"
)

// want describes an edge: rate in req/s, error %, share of the source %,
// lock, reporter, health, p99 (NaN: none).
type wantEdge struct {
	rate, errPct, percent float64
	lock                  bool
	reporter, health      string
	p99                   float64
}

// graphOf scrapes each target twice, 10 s apart, and builds the graph.
func graphOf(t *testing.T, proxies []Proxy, before, after map[string][]fx) Graph {
	t.Helper()
	d := New(Sources{Proxies: func() []Proxy { return proxies }}, Options{ScrapeInterval: 10 * time.Second})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	live := map[string]bool{}
	for id := range after {
		live[id] = true
	}
	scrape := func(in map[string][]fx) map[string]sample {
		out := map[string]sample{}
		for id, series := range in {
			out[id] = mustParse(t, series...)
		}
		return out
	}
	d.record(t0, scrape(before), live)
	d.record(t0.Add(10*time.Second), scrape(after), live)
	return d.Graph(time.Minute)
}

func TestGraph(t *testing.T) {
	gw := []Proxy{{ID: "gw", Namespace: "default", Workload: "istio-ingressgateway", Gateway: true}}
	ext := "httpbin.org"
	dstExt := "unknown"
	grpc := func(m map[string]string, status string) map[string]string {
		m["request_protocol"], m["grpc_response_status"] = "grpc", status
		return m
	}
	cases := []struct {
		name          string
		proxies       []Proxy
		before, after map[string][]fx
		nodes         []string // ids, "id<parent" for a version in a box
		edges         map[string]wantEdge
	}{
		{
			name: "both sides report: the destination's numbers, with its mTLS",
			before: map[string][]fx{
				"customer":   {{istio("source", wCustomer, wPref, hostPref, "200", "unknown"), 1000, 30}},
				"preference": {{istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), 1000, 20}, {istio("destination", wCustomer, wPref, hostPref, "503", "mutual_tls"), 0, 2}},
			},
			after: map[string][]fx{
				// The source saw 100 more, all 200 (say its retries hid
				// the failures); the destination served 90 + 10 errors.
				"customer":   {{istio("source", wCustomer, wPref, hostPref, "200", "unknown"), 1100, 30}},
				"preference": {{istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), 1090, 20}, {istio("destination", wCustomer, wPref, hostPref, "503", "mutual_tls"), 10, 2}},
			},
			nodes: []string{"v:default/customer/v1<a:default/customer", "a:default/customer", "s:" + hostPref, "v:default/preference/v1<s:" + hostPref},
			edges: map[string]wantEdge{
				"v:default/customer/v1 -> v:default/preference/v1": {rate: 10, errPct: 10, percent: 100, lock: true, reporter: "destination", health: Degraded, p99: 10 + 15*89.0/90},
			},
		},
		{
			name: "destination without sidecar: read from the source, ends at the service",
			before: map[string][]fx{
				"preference": {{istio("source", wPref, dstExt, ext, "200", "unknown"), 0, 100}, {istio("source", wPref, dstExt, ext, "503", "unknown"), 0, 100}},
			},
			after: map[string][]fx{
				"preference": {{istio("source", wPref, dstExt, ext, "200", "unknown"), 15, 100}, {istio("source", wPref, dstExt, ext, "503", "unknown"), 5, 100}},
			},
			nodes: []string{"s:" + ext, "a:default/preference", "v:default/preference/v1<a:default/preference"},
			edges: map[string]wantEdge{
				"v:default/preference/v1 -> s:" + ext: {rate: 2, errPct: 25, percent: 100, reporter: "source", health: Failure, p99: 50 + 50*0.99},
			},
		},
		{
			name: "90/10 split into a service's versions",
			before: map[string][]fx{
				"preference": {{istio("source", wPref, wRecV1, hostRec, "200", "unknown"), 0, 10}, {istio("source", wPref, wRecV2, hostRec, "200", "unknown"), 0, 10}},
				"rec-v1":     {{istio("destination", wPref, wRecV1, hostRec, "200", "mutual_tls"), 0, 10}},
				"rec-v2":     {{istio("destination", wPref, wRecV2, hostRec, "200", "mutual_tls"), 0, 10}},
			},
			after: map[string][]fx{
				"preference": {{istio("source", wPref, wRecV1, hostRec, "200", "unknown"), 90, 10}, {istio("source", wPref, wRecV2, hostRec, "200", "unknown"), 10, 10}},
				"rec-v1":     {{istio("destination", wPref, wRecV1, hostRec, "200", "mutual_tls"), 90, 10}},
				"rec-v2":     {{istio("destination", wPref, wRecV2, hostRec, "200", "mutual_tls"), 10, 10}},
			},
			nodes: []string{"a:default/preference", "v:default/preference/v1<a:default/preference", "s:" + hostRec, "v:default/recommendation/v1<s:" + hostRec, "v:default/recommendation/v2<s:" + hostRec},
			edges: map[string]wantEdge{
				"v:default/preference/v1 -> v:default/recommendation/v1": {rate: 9, percent: 90, lock: true, reporter: "destination", health: Healthy, p99: 5 + 5*0.99},
				"v:default/preference/v1 -> v:default/recommendation/v2": {rate: 1, percent: 10, lock: true, reporter: "destination", health: Healthy, p99: 5 + 5*0.99},
			},
		},
		{
			name:    "traffic from outside the mesh, direct and through the gateway",
			proxies: gw,
			before: map[string][]fx{
				"customer": {{istio("destination", "unknown", wCustomer, hostCustomer, "200", "none"), 0, 5}, {istio("destination", wGateway, wCustomer, hostCustomer, "200", "mutual_tls"), 0, 5}},
				"gw":       {{istio("source", wGateway, wCustomer, hostCustomer, "200", "unknown"), 0, 7}, {istio("source", wGateway, "unknown", "unknown", "404", "unknown"), 0, 1}},
			},
			after: map[string][]fx{
				"customer": {{istio("destination", "unknown", wCustomer, hostCustomer, "200", "none"), 30, 5}, {istio("destination", wGateway, wCustomer, hostCustomer, "200", "mutual_tls"), 70, 5}},
				"gw":       {{istio("source", wGateway, wCustomer, hostCustomer, "200", "unknown"), 70, 7}, {istio("source", wGateway, "unknown", "unknown", "404", "unknown"), 30, 1}},
			},
			nodes: []string{"unknown", "g:default/istio-ingressgateway", "s:" + hostCustomer, "v:default/customer/v1<s:" + hostCustomer, "s:unknown"},
			edges: map[string]wantEdge{
				"unknown -> v:default/customer/v1":                        {rate: 3, percent: 100 * 30.0 / 130, reporter: "destination", health: Healthy, p99: 1 + 4*0.99},
				"g:default/istio-ingressgateway -> v:default/customer/v1": {rate: 7, percent: 70, lock: true, reporter: "destination", health: Healthy, p99: 1 + 4*0.99},
				"g:default/istio-ingressgateway -> s:unknown":             {rate: 3, percent: 30, reporter: "source", health: Failure, p99: 0.5 + 0.5*0.99},
				// Everything the gateway sent came from its clients.
				"unknown -> g:default/istio-ingressgateway": {rate: 10, percent: 100 * 100.0 / 130, reporter: "source", health: Failure, p99: 5 + 5*69.0/70},
			},
		},
		{
			name: "gRPC errors are errors",
			before: map[string][]fx{
				"preference": {{grpc(istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), "0"), 0, 3}, {grpc(istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), "14"), 0, 3}},
			},
			after: map[string][]fx{
				"preference": {{grpc(istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), "0"), 99, 3}, {grpc(istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls"), "14"), 1, 3}},
			},
			nodes: []string{"a:default/customer", "v:default/customer/v1<a:default/customer", "s:" + hostPref, "v:default/preference/v1<s:" + hostPref},
			edges: map[string]wantEdge{
				"v:default/customer/v1 -> v:default/preference/v1": {rate: 10, errPct: 1, percent: 100, lock: true, reporter: "destination", health: Degraded, p99: 1 + 4*0.99},
			},
		},
		{
			name: "client errors: 4xx tolerance, not an error rate",
			before: map[string][]fx{
				"preference": {{istio("destination", wCustomer, wPref, hostPref, "200", "none"), 0, 3}, {istio("destination", wCustomer, wPref, hostPref, "404", "none"), 0, 3}},
			},
			after: map[string][]fx{
				"preference": {{istio("destination", wCustomer, wPref, hostPref, "200", "none"), 70, 3}, {istio("destination", wCustomer, wPref, hostPref, "404", "none"), 30, 3}},
			},
			nodes: []string{"a:default/customer", "v:default/customer/v1<a:default/customer", "s:" + hostPref, "v:default/preference/v1<s:" + hostPref},
			edges: map[string]wantEdge{
				"v:default/customer/v1 -> v:default/preference/v1": {rate: 10, percent: 100, reporter: "destination", health: Failure, p99: 1 + 4*0.99},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := graphOf(t, c.proxies, c.before, c.after)
			var nodes []string
			for _, n := range g.Nodes {
				id := n.ID
				if n.Parent != "" {
					id += "<" + n.Parent
				}
				nodes = append(nodes, id)
			}
			sort.Strings(nodes)
			want := append([]string(nil), c.nodes...)
			sort.Strings(want)
			if strings.Join(nodes, "\n") != strings.Join(want, "\n") {
				t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(nodes, "\n"), strings.Join(want, "\n"))
			}
			got := map[string]GraphEdge{}
			for _, e := range g.Edges {
				got[e.ID] = e
			}
			for id, w := range c.edges {
				e, ok := got[id]
				if !ok {
					t.Errorf("no edge %s; edges: %v", id, edgeIDs(g))
					continue
				}
				checks := []struct {
					what      string
					got, want any
				}{
					{"rate", round2(e.Rate), round2(w.rate)},
					{"error %", round2(e.ErrorPercent), round2(w.errPct)},
					{"share %", round2(e.Percent), round2(w.percent)},
					{"lock", e.Lock, w.lock},
					{"reporter", e.Reporter, w.reporter},
					{"health", e.Health, w.health},
				}
				for _, ch := range checks {
					if ch.got != ch.want {
						t.Errorf("%s: %s = %v, want %v", id, ch.what, ch.got, ch.want)
					}
				}
				if e.P99 == nil || math.Abs(*e.P99-w.p99) > 0.0051 {
					t.Errorf("%s: p99 = %s, want %v", id, deref(e.P99), w.p99)
				}
			}
			if len(got) != len(c.edges) {
				t.Errorf("edges %v, want %d", edgeIDs(g), len(c.edges))
			}
		})
	}
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

func edgeIDs(g Graph) []string {
	var ids []string
	for _, e := range g.Edges {
		ids = append(ids, e.ID)
	}
	return ids
}

// TestEdgeLatency checks p50/p90/p99 on an edge from mixed latencies.
func TestEdgeLatency(t *testing.T) {
	l := istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls")
	slow := istio("destination", wCustomer, wPref, hostPref, "503", "mutual_tls")
	g := graphOf(t, nil,
		map[string][]fx{"p": {{l, 0, 7}, {slow, 0, 700}}},
		map[string][]fx{"p": {{l, 99, 7}, {slow, 1, 700}}})
	if len(g.Edges) != 1 {
		t.Fatalf("edges %v", edgeIDs(g))
	}
	e := g.Edges[0]
	// 99 requests in (5, 10], 1 in (500, 1000].
	for _, c := range []struct {
		name string
		got  *float64
		want float64
	}{
		{"p50", e.P50, 5 + 5*(50.0/99)},
		{"p90", e.P90, 5 + 5*(90.0/99)},
		{"p99", e.P99, 10},
	} {
		if c.got == nil || math.Abs(*c.got-c.want) > 0.01 {
			t.Errorf("%s = %v, want %.2f", c.name, deref(c.got), c.want)
		}
	}
}

func deref(p *float64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestLayout checks the seed example reads left to right without overlaps.
func TestLayout(t *testing.T) {
	flows := seedFlows()
	before, after := map[string][]fx{}, map[string][]fx{}
	for name, fs := range flows {
		for _, f := range fs {
			before[name] = append(before[name], fx{f.labels, 0, f.ms})
			after[name] = append(after[name], fx{f.labels, f.rate * 10, f.ms})
		}
	}
	proxies := []Proxy{{ID: "gw", Namespace: "default", Workload: "istio-ingressgateway", Gateway: true}}
	g := graphOf(t, proxies, before, after)
	pos := map[string]GraphNode{}
	for _, n := range g.Nodes {
		pos[n.ID] = n
	}
	order := []string{"unknown", "g:default/istio-ingressgateway", "s:" + hostCustomer, "s:" + hostPref, "s:" + hostRec}
	for i := 1; i < len(order); i++ {
		a, b := pos[order[i-1]], pos[order[i]]
		if !(a.X+a.W < b.X) {
			t.Errorf("%s (x %v) is not left of %s (x %v)", a.ID, a.X, b.ID, b.X)
		}
	}
	// Boxes do not overlap, except a version inside its service.
	for _, a := range g.Nodes {
		for _, b := range g.Nodes {
			if a.ID >= b.ID || a.Parent == b.ID || b.Parent == a.ID {
				continue
			}
			if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
				t.Errorf("%s and %s overlap", a.ID, b.ID)
			}
		}
		if a.Parent != "" {
			p := pos[a.Parent]
			if a.X < p.X || a.X+a.W > p.X+p.W || a.Y < p.Y || a.Y+a.H > p.Y+p.H {
				t.Errorf("%s is outside its box %s", a.ID, p.ID)
			}
		}
	}
	// Labels do not overlap one another.
	for i, a := range g.Edges {
		for _, b := range g.Edges[i+1:] {
			if math.Abs(a.LabelX-b.LabelX) < labelW && math.Abs(a.LabelY-b.LabelY) < labelH {
				t.Errorf("labels of %s and %s overlap", a.ID, b.ID)
			}
		}
	}
	// The same input lays out the same way.
	again := graphOf(t, proxies, before, after)
	for i := range again.Edges {
		if again.Edges[i].Path != g.Edges[i].Path {
			t.Fatalf("layout is not deterministic: %s", again.Edges[i].ID)
		}
	}
}
