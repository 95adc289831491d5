package tracestore

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// base is the start of every fixture trace; offsets are from it.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// tid makes a 32-digit trace id from a small number.
func tid(n int) string { return fmt.Sprintf("%032x", n) }

// sid makes a 16-digit span id from a small number.
func sid(n int) string { return fmt.Sprintf("%016x", n) }

func span(trace, id, parent int, service, name string, start, dur time.Duration) Span {
	sp := Span{TraceID: tid(trace), SpanID: sid(id), Name: name, Service: service, Start: base.Add(start), Duration: dur}
	if parent != 0 {
		sp.ParentID = sid(parent)
	}
	return sp
}

func ids(sums []Summary) []string {
	out := make([]string, len(sums))
	for i, s := range sums {
		out[i] = s.ID
	}
	return out
}

func TestSearch(t *testing.T) {
	s := New(Options{})
	// Trace 1 starts first but is received last; trace 3 is the newest.
	s.Add(
		span(2, 20, 0, "customer", "GET /", 10*time.Millisecond, 100*time.Millisecond),
		span(2, 21, 20, "preference", "GET /pref", 20*time.Millisecond, 50*time.Millisecond),
	)
	s.Add(span(3, 30, 0, "customer", "GET /", 30*time.Millisecond, 300*time.Millisecond))
	s.Add(
		span(1, 11, 10, "recommendation", "GET /rec", 2*time.Millisecond, 500*time.Millisecond),
		span(1, 10, 0, "preference", "GET /pref", 0, 10*time.Millisecond),
	)
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all, newest first", Query{}, []string{tid(3), tid(2), tid(1)}},
		{"limit", Query{Limit: 2}, []string{tid(3), tid(2)}},
		{"limit one", Query{Limit: 1}, []string{tid(3)}},
		{"service", Query{Service: "preference"}, []string{tid(2), tid(1)}},
		{"service of a child span only", Query{Service: "recommendation"}, []string{tid(1)}},
		{"unknown service", Query{Service: "nope"}, []string{}},
		// Trace 1 lasts from its root's start (0) to its child's end (502ms).
		{"min duration spans across spans", Query{MinDuration: 400 * time.Millisecond}, []string{tid(1)}},
		{"min duration inclusive", Query{MinDuration: 300 * time.Millisecond}, []string{tid(3), tid(1)}},
		{"min duration and service", Query{Service: "customer", MinDuration: 200 * time.Millisecond}, []string{tid(3)}},
		{"nothing that long", Query{MinDuration: time.Hour}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ids(s.Search(tt.q))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Search(%+v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestSearchDefaultLimit(t *testing.T) {
	s := New(Options{})
	for i := 1; i <= DefaultLimit+5; i++ {
		s.Add(span(i, i, 0, "svc", "op", time.Duration(i)*time.Second, time.Millisecond))
	}
	got := s.Search(Query{})
	if len(got) != DefaultLimit {
		t.Fatalf("got %d summaries, want %d", len(got), DefaultLimit)
	}
	for i, sum := range got {
		if want := tid(DefaultLimit + 5 - i); sum.ID != want {
			t.Errorf("summary %d is %s, want %s", i, sum.ID, want)
		}
	}
}

func TestSummary(t *testing.T) {
	errSpan := span(1, 12, 10, "ratings", "GET /r", 40*time.Millisecond, 20*time.Millisecond)
	errSpan.Error = true
	tests := []struct {
		name  string
		spans []Span
		want  Summary
	}{
		{
			name: "root span, services, duration to the latest end, errors",
			spans: []Span{
				span(1, 11, 10, "reviews", "GET /reviews", 5*time.Millisecond, 200*time.Millisecond),
				span(1, 10, 0, "productpage", "GET /", 0, 100*time.Millisecond),
				errSpan,
				span(1, 13, 10, "reviews", "GET /again", 6*time.Millisecond, time.Millisecond),
			},
			want: Summary{
				ID: tid(1), Root: "productpage: GET /", Start: base, Duration: 205 * time.Millisecond,
				Spans: 4, Services: []string{"productpage", "ratings", "reviews"}, HasErrors: true,
			},
		},
		{
			name: "no root: the earliest span",
			spans: []Span{
				span(1, 11, 99, "b", "late", 10*time.Millisecond, time.Millisecond),
				span(1, 12, 99, "a", "early", 2*time.Millisecond, time.Millisecond),
			},
			want: Summary{ID: tid(1), Root: "a: early", Start: base.Add(2 * time.Millisecond), Duration: 9 * time.Millisecond, Spans: 2, Services: []string{"a", "b"}},
		},
		{
			name:  "no service",
			spans: []Span{span(1, 10, 0, "", "op", 0, time.Second)},
			want:  Summary{ID: tid(1), Root: "op", Start: base, Duration: time.Second, Spans: 1, Services: []string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			s.Add(tt.spans...)
			got := s.Search(Query{})
			if len(got) != 1 {
				t.Fatalf("got %d summaries, want 1", len(got))
			}
			g := got[0]
			if g.ID != tt.want.ID || g.Root != tt.want.Root || !g.Start.Equal(tt.want.Start) || g.Duration != tt.want.Duration ||
				g.Spans != tt.want.Spans || !slices.Equal(g.Services, tt.want.Services) || g.Services == nil || g.HasErrors != tt.want.HasErrors {
				t.Errorf("summary = %+v\nwant      %+v", g, tt.want)
			}
		})
	}
}

func TestTraceOrder(t *testing.T) {
	// Spans starting at the same instant: the parent must come first
	// whatever order they arrived in; a Zipkin shared span's client side
	// comes before its server side.
	client := span(1, 30, 20, "a", "call b", 10*time.Millisecond, 5*time.Millisecond)
	client.Kind = "CLIENT"
	server := span(1, 30, 20, "b", "serve", 10*time.Millisecond, 4*time.Millisecond)
	server.Kind = "SERVER"
	spans := []Span{
		span(1, 40, 30, "b", "grandchild", 10*time.Millisecond, time.Millisecond),
		server,
		span(1, 50, 0, "a", "late sibling", 20*time.Millisecond, time.Millisecond),
		client,
		span(1, 20, 10, "a", "child", 0, 30*time.Millisecond),
		span(1, 10, 0, "a", "root", 0, 30*time.Millisecond),
	}
	s := New(Options{})
	s.Add(spans...)
	got, ok := s.Trace(tid(1))
	if !ok {
		t.Fatal("trace not found")
	}
	var names []string
	for _, sp := range got.Spans {
		names = append(names, sp.Name)
	}
	want := []string{"root", "child", "call b", "serve", "grandchild", "late sibling"}
	if !slices.Equal(names, want) {
		t.Errorf("order = %v, want %v", names, want)
	}
	if got.ID != tid(1) {
		t.Errorf("ID = %q", got.ID)
	}
	// What Trace returns is the caller's to modify.
	got.Spans[0].Name = "changed"
	again, _ := s.Trace(tid(1))
	if again.Spans[0].Name != "root" {
		t.Error("modifying a returned trace changed the store")
	}
}

func TestTraceLookup(t *testing.T) {
	s := New(Options{})
	sp := span(0, 1, 0, "a", "op", 0, time.Millisecond)
	sp.TraceID = "0000000000000000abcdef0123456789"
	s.Add(sp)
	tests := []struct {
		id string
		ok bool
	}{
		{"0000000000000000abcdef0123456789", true},
		{"abcdef0123456789", true}, // a 64-bit id, as Zipkin shows it
		{"ABCDEF0123456789", true},
		{"0000000000000000abcdef0123456788", false},
		{"xyz", false},
		{"", false},
	}
	for _, tt := range tests {
		if _, ok := s.Trace(tt.id); ok != tt.ok {
			t.Errorf("Trace(%q) found = %v, want %v", tt.id, ok, tt.ok)
		}
	}
}

func TestEviction(t *testing.T) {
	tests := []struct {
		name        string
		opts        Options
		batches     [][]Span
		wantTraces  []string // newest first
		wantEvicted int
		wantDropped int // spans of evicted traces
		wantSvcs    []string
	}{
		{
			name: "trace bound: the first received goes, whole, though a later span of it arrives last",
			opts: Options{MaxTraces: 2},
			batches: [][]Span{
				{span(1, 10, 0, "old", "op", 50*time.Millisecond, time.Millisecond)},
				{span(2, 20, 0, "mid", "op", 0, time.Millisecond)},
				{span(1, 11, 10, "old", "op", 51*time.Millisecond, time.Millisecond)},
				{span(3, 30, 0, "new", "op", 10*time.Millisecond, time.Millisecond)},
			},
			wantTraces: []string{tid(3), tid(2)}, wantEvicted: 1, wantDropped: 2,
			wantSvcs: []string{"mid", "new"},
		},
		{
			name: "span bound",
			opts: Options{MaxSpans: 3},
			batches: [][]Span{
				{span(1, 10, 0, "a", "op", 0, time.Millisecond), span(1, 11, 10, "a", "op", 0, time.Millisecond)},
				{span(2, 20, 0, "b", "op", time.Millisecond, time.Millisecond)},
				{span(3, 30, 0, "a", "op", 2*time.Millisecond, time.Millisecond)},
			},
			wantTraces: []string{tid(3), tid(2)}, wantEvicted: 1, wantDropped: 2,
			wantSvcs: []string{"a", "b"},
		},
		{
			name: "one batch over both bounds",
			// The trace bound alone would keep 3, 4 and 5: 4 spans, one
			// too many for the span bound.
			opts: Options{MaxSpans: 3, MaxTraces: 3},
			batches: [][]Span{{
				span(1, 10, 0, "a", "op", 0, time.Millisecond),
				span(2, 20, 0, "b", "op", time.Millisecond, time.Millisecond),
				span(3, 30, 0, "c", "op", 2*time.Millisecond, time.Millisecond),
				span(4, 40, 0, "d", "op", 3*time.Millisecond, time.Millisecond),
				span(4, 41, 40, "d", "op", 3*time.Millisecond, time.Millisecond),
				span(5, 50, 0, "e", "op", 4*time.Millisecond, time.Millisecond),
			}},
			wantTraces: []string{tid(5), tid(4)}, wantEvicted: 3, wantDropped: 3,
			wantSvcs: []string{"d", "e"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.opts)
			for _, b := range tt.batches {
				s.Add(b...)
			}
			if got := ids(s.Search(Query{Limit: 100})); !slices.Equal(got, tt.wantTraces) {
				t.Errorf("traces = %v, want %v", got, tt.wantTraces)
			}
			if got := s.Services(); !slices.Equal(got, tt.wantSvcs) {
				t.Errorf("services = %v, want %v", got, tt.wantSvcs)
			}
			if got := value(t, s.evicted); got != float64(tt.wantEvicted) {
				t.Errorf("traces evicted = %v, want %d", got, tt.wantEvicted)
			}
			if got := value(t, s.dropped.WithLabelValues("evicted")); got != float64(tt.wantDropped) {
				t.Errorf("spans dropped as evicted = %v, want %d", got, tt.wantDropped)
			}
			if got := value(t, s.gauge); got != float64(len(tt.wantTraces)) {
				t.Errorf("traces gauge = %v, want %d", got, len(tt.wantTraces))
			}
			for _, id := range []string{tid(1)} {
				if _, ok := s.Trace(id); ok {
					t.Errorf("evicted trace %s still found", id)
				}
			}
		})
	}
}

func TestEvictionKeepsBoundsUnderChurn(t *testing.T) {
	s := New(Options{MaxSpans: 50, MaxTraces: 10})
	for i := 1; i <= 1000; i++ {
		s.Add(span(i, 1, 0, "a", "op", 0, 0), span(i, 2, 1, "b", "op", 0, 0), span(i, 3, 1, "b", "op", 0, 0))
		s.mu.RLock()
		n, spans, order := len(s.traces), s.spans, len(s.order)-s.head
		s.mu.RUnlock()
		if n > 10 || spans > 50 || order != n {
			t.Fatalf("after %d traces: %d traces, %d spans, %d in order", i, n, spans, order)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	// The order queue is compacted, not grown without end.
	if cap(s.order) > 64 {
		t.Errorf("order queue capacity %d after churn", cap(s.order))
	}
}

func TestDuplicates(t *testing.T) {
	for _, n := range []int{3, indexThreshold + 10} {
		t.Run(fmt.Sprint(n, " spans"), func(t *testing.T) {
			s := New(Options{})
			var batch []Span
			for i := 1; i <= n; i++ {
				batch = append(batch, span(1, i, 0, "a", "op", 0, time.Millisecond))
			}
			s.Add(batch...)
			s.Add(batch...) // an exporter's retry
			// The same id with another kind is Zipkin's shared span: kept.
			shared := batch[0]
			shared.Kind = "SERVER"
			s.Add(shared)
			tr, _ := s.Trace(tid(1))
			if len(tr.Spans) != n+1 {
				t.Errorf("trace has %d spans, want %d", len(tr.Spans), n+1)
			}
			if got := value(t, s.dropped.WithLabelValues("duplicate")); got != float64(n) {
				t.Errorf("duplicates dropped = %v, want %d", got, n)
			}
			if got := value(t, s.received); got != float64(2*n+1) {
				t.Errorf("received = %v, want %d", got, 2*n+1)
			}
		})
	}
}

func TestAddIDs(t *testing.T) {
	tests := []struct {
		name                            string
		traceID, spanID, parent         string
		wantTrace, wantSpan, wantParent string // "" when dropped
	}{
		{"canonical", tid(1), sid(2), sid(3), tid(1), sid(2), sid(3)},
		{"upper case", "0000000000000000000000000000ABCD", "000000000000EF01", "", "0000000000000000000000000000abcd", "000000000000ef01", ""},
		{"64-bit trace id", "000000000000abcd", sid(2), "", "0000000000000000000000000000abcd", sid(2), ""},
		{"no trace id", "", sid(2), "", "", "", ""},
		{"no span id", tid(1), "", "", "", "", ""},
		{"short span id", tid(1), "12", "", "", "", ""},
		{"zero trace id", "00000000000000000000000000000000", sid(2), "", "", "", ""},
		{"bad parent", tid(1), sid(2), "xyz", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			s.Add(Span{TraceID: tt.traceID, SpanID: tt.spanID, ParentID: tt.parent, Start: base})
			sums := s.Search(Query{})
			if tt.wantTrace == "" {
				if len(sums) != 0 {
					t.Errorf("stored %v", sums)
				}
				if got := value(t, s.dropped.WithLabelValues("malformed")); got != 1 {
					t.Errorf("malformed dropped = %v, want 1", got)
				}
				return
			}
			tr, ok := s.Trace(tt.wantTrace)
			if !ok || len(tr.Spans) != 1 {
				t.Fatalf("trace %s: %+v", tt.wantTrace, tr)
			}
			if sp := tr.Spans[0]; sp.TraceID != tt.wantTrace || sp.SpanID != tt.wantSpan || sp.ParentID != tt.wantParent {
				t.Errorf("span ids = %s/%s/%s, want %s/%s/%s", sp.TraceID, sp.SpanID, sp.ParentID, tt.wantTrace, tt.wantSpan, tt.wantParent)
			}
		})
	}
}

func TestCollectors(t *testing.T) {
	s := New(Options{})
	s.Add(span(1, 1, 0, "a", "op", 0, 0))
	reg := prometheus.NewRegistry()
	for _, c := range s.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{
		"amime_tracestore_spans_received_total",
		"amime_tracestore_traces_evicted_total",
		"amime_tracestore_traces",
	} {
		if !got[name] {
			t.Errorf("metric %s not gathered (have %v)", name, got)
		}
	}
	// A second store registers on its own registry: nothing is global.
	if err := prometheus.NewRegistry().Register(New(Options{}).Collectors()[0]); err != nil {
		t.Errorf("second store: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := New(Options{MaxTraces: 100, MaxSpans: 500})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				n := w*1000 + i + 1
				s.Add(span(n, 1, 0, "a", "op", time.Duration(i), time.Millisecond), span(n, 2, 1, "b", "op", time.Duration(i), time.Millisecond))
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				for _, sum := range s.Search(Query{Service: "b", Limit: 10}) {
					if tr, ok := s.Trace(sum.ID); ok && len(tr.Spans) == 0 {
						t.Errorf("trace %s has no spans", sum.ID)
					}
				}
				_ = s.Services()
			}
		}()
	}
	wg.Wait()
	if got := len(s.Search(Query{Limit: 1000})); got != 100 {
		t.Errorf("%d traces held, want the bound 100", got)
	}
}

// value reads a counter's or gauge's current value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatalf("reading metric: %v", err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}
