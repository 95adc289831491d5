package dashboard

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchText is a busy proxy's exposition: 40 series of both metrics.
func benchText() string {
	var series []fx
	for i := range 20 {
		code := "200"
		if i%5 == 0 {
			code = "503"
		}
		series = append(series,
			fx{istio("source", wPref, fmt.Sprintf("default/svc%d-v1/svc%d/v1", i, i), fmt.Sprintf("svc%d.default.svc.cluster.local", i), code, "unknown"), float64(1000 + i), 12},
			fx{istio("destination", fmt.Sprintf("default/caller%d-v1/caller%d/v1", i, i), wPref, hostPref, code, "mutual_tls"), float64(2000 + i), 30})
	}
	text := promText(series)
	// The rest of what Envoy exposes, which the console skips.
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|8080||svc%d.default.svc.cluster.local\"} %d\n", i, i)
	}
	return text + b.String()
}

func BenchmarkParseText(b *testing.B) {
	text := benchText()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseText(strings.NewReader(text)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViews builds the graph over a full 15-minute history (180
// rounds at 5 s) of the seed example, as /api/graph does on every refresh.
func BenchmarkViews(b *testing.B) {
	flows := seedFlows()
	gw := []Proxy{{ID: "gw", Namespace: "default", Workload: "istio-ingressgateway", Gateway: true}}
	d := New(Sources{Proxies: func() []Proxy { return gw }}, Options{})
	t0 := time.Now()
	for i := range d.maxRounds() + 1 {
		results := map[string]sample{}
		live := map[string]bool{}
		for name, fs := range flows {
			var series []fx
			for _, f := range fs {
				series = append(series, fx{f.labels, f.rate * 5 * float64(i), f.ms})
			}
			s, err := parseText(strings.NewReader(promText(series)))
			if err != nil {
				b.Fatal(err)
			}
			results[name], live[name] = s, true
		}
		d.record(t0.Add(time.Duration(i)*5*time.Second), results, live)
	}
	b.Run("graph", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if g := d.Graph(time.Minute); len(g.Edges) != 5 {
				b.Fatalf("%d edges", len(g.Edges))
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if v := d.Service(hostRec, time.Minute); len(v.Series) == 0 {
				b.Fatal("no series")
			}
		}
	})
}
