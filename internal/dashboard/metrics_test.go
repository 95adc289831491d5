package dashboard

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	envoy := func(counts map[float64]float64) []bucket {
		// Cumulative Envoy buckets from per-bucket counts.
		var bs []bucket
		sum := 0.0
		for _, le := range append(append([]float64(nil), envoyBuckets...), inf) {
			sum += counts[le]
			bs = append(bs, bucket{le: le, n: sum})
		}
		return bs
	}
	cases := []struct {
		name string
		q    float64
		bs   []bucket
		want float64 // NaN: no answer
	}{
		{"interpolates inside the bucket", 0.5, []bucket{{0, 6}, {0.5, 11}, {1, 14}, {inf, 19}}, 0.35},
		{"rank in a bucket bounded at zero", 0.1, []bucket{{0, 6}, {0.5, 11}, {inf, 19}}, 0},
		{"lowest bucket starts at zero", 0.5, []bucket{{10, 10}, {inf, 10}}, 5},
		{"rank in +Inf answers the highest finite bound", 0.9, []bucket{{10, 5}, {inf, 10}}, 10},
		{"p99 of Envoy buckets", 0.99, envoy(map[float64]float64{25: 100}), 10 + 15*0.99},
		{"p50 of Envoy buckets", 0.5, envoy(map[float64]float64{25: 100}), 17.5},
		{"p99 across buckets", 0.99, envoy(map[float64]float64{5: 50, 10: 40, 25: 9, 50: 1}), 25},
		{"p90 at a bucket edge", 0.9, envoy(map[float64]float64{5: 50, 10: 40, 25: 9, 50: 1}), 10},
		{"no observations", 0.99, envoy(nil), math.NaN()},
		{"no +Inf bucket", 0.5, []bucket{{10, 5}}, math.NaN()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := quantile(c.q, c.bs)
			if math.IsNaN(c.want) {
				if !math.IsNaN(got) {
					t.Fatalf("quantile = %v, want NaN", got)
				}
				return
			}
			if math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("quantile(%v) = %v, want %v", c.q, got, c.want)
			}
		})
	}
}

func mustParse(t *testing.T, series ...fx) sample {
	t.Helper()
	s, err := parseText(strings.NewReader(promText(series)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIncrements(t *testing.T) {
	a := istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls")
	b := istio("destination", wCustomer, wPref, hostPref, "503", "mutual_tls")
	la, lb := keyOf(nil, "").l, keyOf(nil, "").l
	for k, v := range a {
		la.set(k, v)
	}
	for k, v := range b {
		lb.set(k, v)
	}
	cases := []struct {
		name      string
		prev, cur []fx
		want      map[labels]float64
		wantP99   map[labels]float64
	}{
		{
			name: "counter delta",
			prev: []fx{{a, 100, 12}}, cur: []fx{{a, 160, 12}},
			want:    map[labels]float64{la: 60},
			wantP99: map[labels]float64{la: 10 + 15*0.99},
		},
		{
			name: "counter reset: the whole new value is new",
			prev: []fx{{a, 500, 12}}, cur: []fx{{a, 30, 3}},
			want:    map[labels]float64{la: 30},
			wantP99: map[labels]float64{la: 1 + 4*0.99},
		},
		{
			name: "a series new since the last scrape started at zero",
			prev: []fx{{a, 100, 12}}, cur: []fx{{a, 100, 12}, {b, 7, 40}},
			want:    map[labels]float64{lb: 7},
			wantP99: map[labels]float64{lb: 25 + 25*0.99},
		},
		{
			name: "no traffic, no increment",
			prev: []fx{{a, 100, 12}, {b, 3, 40}}, cur: []fx{{a, 100, 12}, {b, 3, 40}},
			want: map[labels]float64{}, wantP99: map[labels]float64{},
		},
		{
			name: "a vanished series is no traffic",
			prev: []fx{{a, 100, 12}, {b, 3, 40}}, cur: []fx{{a, 110, 12}},
			want:    map[labels]float64{la: 10},
			wantP99: map[labels]float64{la: 10 + 15*0.99},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reqs, hists := map[labels]float64{}, map[labels][]bucket{}
			increments(mustParse(t, c.prev...), mustParse(t, c.cur...), reqs, hists)
			if len(reqs) != len(c.want) {
				t.Fatalf("increments = %v, want %v", reqs, c.want)
			}
			for l, v := range c.want {
				if reqs[l] != v {
					t.Errorf("increment of %s %s = %v, want %v", l.reporter, l.code, reqs[l], v)
				}
			}
			for l, v := range c.wantP99 {
				if got := quantile(0.99, hists[l]); math.Abs(got-v) > 1e-9 {
					t.Errorf("p99 of %s = %v, want %v", l.code, got, v)
				}
			}
			if len(hists) != len(c.wantP99) {
				t.Errorf("%d histograms, want %d", len(hists), len(c.wantP99))
			}
		})
	}
}

func TestParseTextUntypedHistogram(t *testing.T) {
	// No TYPE lines: the buckets are reassembled by their labels.
	text := strings.Join([]string{
		`istio_requests_total{reporter="destination",response_code="200",pod="a"} 10`,
		`istio_request_duration_milliseconds_bucket{reporter="destination",response_code="200",pod="a",le="10"} 4`,
		`istio_request_duration_milliseconds_bucket{reporter="destination",response_code="200",pod="a",le="25"} 10`,
		`istio_request_duration_milliseconds_bucket{reporter="destination",response_code="200",pod="a",le="+Inf"} 10`,
		``,
	}, "\n")
	s, err := parseText(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.reqs) != 1 || len(s.hists) != 1 {
		t.Fatalf("parsed %d counters, %d histograms; want 1 and 1", len(s.reqs), len(s.hists))
	}
	for k, h := range s.hists {
		if k.extra != "pod=a" || k.l.code != "200" {
			t.Errorf("key = %+v", k)
		}
		if got := quantile(0.5, h.buckets); got != 10+15*(1.0/6) {
			t.Errorf("p50 = %v", got)
		}
	}
}

func TestKeepIstio(t *testing.T) {
	in := strings.Join([]string{
		"# HELP istio_requests_total Requests.",
		"# TYPE istio_requests_total counter",
		`istio_requests_total{reporter="source"} 3`,
		"# TYPE istio_request_bytes histogram",
		`istio_request_bytes_bucket{reporter="source",le="+Inf"} 3`,
		`istio_request_bytes_count{reporter="source"} 3`,
		"# TYPE istio_request_duration_milliseconds histogram",
		`istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 3`,
		`istio_request_duration_milliseconds_sum{reporter="source"} 30`,
		`istio_request_duration_milliseconds_count{reporter="source"} 3`,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="x"} 9`,
		`istio_requests_total_other 1`,
		`istio_requests_total 4`,
	}, "\n")
	want := strings.Join([]string{
		"# HELP istio_requests_total Requests.",
		"# TYPE istio_requests_total counter",
		`istio_requests_total{reporter="source"} 3`,
		"# TYPE istio_request_duration_milliseconds histogram",
		`istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 3`,
		`istio_request_duration_milliseconds_sum{reporter="source"} 30`,
		`istio_request_duration_milliseconds_count{reporter="source"} 3`,
		`istio_requests_total 4`,
	}, "\n")
	if got := string(keepIstio([]byte(in))); got != want {
		t.Fatalf("kept:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseTextRejectsGarbage(t *testing.T) {
	if _, err := parseText(strings.NewReader("istio_requests_total{reporter=\"x\" 1\n")); err == nil {
		t.Fatal("parseText accepted a broken line")
	}
}

// TestRecordTargets follows targets that fail, vanish and come back.
func TestRecordTargets(t *testing.T) {
	a := istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls")
	d := New(Sources{}, Options{ScrapeInterval: 10 * time.Second, Window: time.Hour})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Second) }
	s := func(n float64) sample { return mustParse(t, fx{a, n, 5}) }
	steps := []struct {
		name    string
		results map[string]sample
		live    []string
		want    float64 // requests in the round
	}{
		{"baseline", map[string]sample{"p": s(100)}, []string{"p"}, -1},
		{"steady", map[string]sample{"p": s(150)}, []string{"p"}, 50},
		{"scrape failed: nothing this round", map[string]sample{}, []string{"p"}, 0},
		{"back: its traffic shared with the round it missed", map[string]sample{"p": s(250)}, []string{"p"}, 50},
		{"proxy gone", map[string]sample{}, nil, 0},
		{"proxy back: a baseline, not a spike", map[string]sample{"p": s(900)}, []string{"p"}, 0},
		{"and counting again", map[string]sample{"p": s(920)}, []string{"p"}, 20},
		{"restarted: counter reset", map[string]sample{"p": s(15)}, []string{"p"}, 15},
	}
	for i, st := range steps {
		live := map[string]bool{}
		for _, id := range st.live {
			live[id] = true
		}
		d.record(at(i), st.results, live)
		if st.want < 0 {
			if len(d.rounds) != 0 {
				t.Fatalf("%s: %d rounds after the first scrape", st.name, len(d.rounds))
			}
			continue
		}
		r := d.rounds[len(d.rounds)-1]
		got := 0.0
		for _, v := range r.reqs {
			got += v
		}
		if got != st.want {
			t.Errorf("%s: %v requests, want %v", st.name, got, st.want)
		}
		if st.name == "back: its traffic shared with the round it missed" {
			missed := 0.0
			for _, v := range d.rounds[len(d.rounds)-2].reqs {
				missed += v
			}
			if missed != 50 {
				t.Errorf("the missed round got %v requests, want 50", missed)
			}
		}
		if r.end.Sub(r.start) != 10*time.Second {
			t.Errorf("%s: round covers %v", st.name, r.end.Sub(r.start))
		}
	}
}

func TestRoundsAreBounded(t *testing.T) {
	d := New(Sources{}, Options{ScrapeInterval: time.Second, Window: 10 * time.Second})
	t0 := time.Now()
	for i := range 100 {
		d.record(t0.Add(time.Duration(i)*time.Second), nil, nil)
	}
	if len(d.rounds) != d.maxRounds() || d.maxRounds() != 12 {
		t.Fatalf("%d rounds kept, max %d", len(d.rounds), d.maxRounds())
	}
	if !d.rounds[len(d.rounds)-1].end.Equal(t0.Add(99 * time.Second)) {
		t.Fatal("the newest round was dropped")
	}
}

// TestSpreadWhileReading: a target that missed rounds changes recorded
// rounds while pages read them (run with -race).
func TestSpreadWhileReading(t *testing.T) {
	a := istio("destination", wCustomer, wPref, hostPref, "200", "mutual_tls")
	d := New(Sources{}, Options{ScrapeInterval: time.Second, Window: time.Minute})
	t0 := time.Now()
	live := map[string]bool{"p": true, "q": true}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			d.Graph(time.Minute)
		}
	}()
	n := 0.0
	for i := range 200 {
		n += 10
		res := map[string]sample{"q": mustParse(t, fx{a, n, 5})}
		if i%3 == 0 {
			res["p"] = mustParse(t, fx{a, n, 5})
		}
		d.record(t0.Add(time.Duration(i)*time.Second), res, live)
	}
	<-done
	// p's traffic, reported every third round (last at 198 s), is spread
	// evenly: every round up to then holds 10 from q and 10 from p.
	for _, r := range d.rounds[:len(d.rounds)-1] {
		got := 0.0
		for _, v := range r.reqs {
			got += v
		}
		if math.Abs(got-20) > 1e-9 {
			t.Fatalf("round ending %v holds %v requests, want 20", r.end.Sub(t0), got)
		}
	}
}
