package tracestore

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Options' zero fields.
const (
	DefaultMaxSpans  = 100000
	DefaultMaxTraces = 10000
	// DefaultMaxRequestBytes is the OTLP/HTTP specification's recommended
	// request body limit, applied after decompression.
	DefaultMaxRequestBytes = 20 << 20
	// DefaultLimit is the number of summaries a Query with no Limit returns.
	DefaultLimit = 20
)

// indexThreshold is the span count past which a trace keeps a map from
// span identity to index: below it a linear scan is cheaper than the map.
const indexThreshold = 64

// Options bound the store. Zero fields take the defaults.
type Options struct {
	MaxSpans  int // spans held across all traces; default 100000
	MaxTraces int // traces held; default 10000
	// MaxRequestBytes bounds an exported body, after decompression, in the
	// store's Handler; default 20 MiB.
	MaxRequestBytes int64
}

// Store keeps the newest traces in bounded memory. It is safe for
// concurrent use.
type Store struct {
	maxSpans, maxTraces int
	maxRequestBytes     int64

	mu     sync.RWMutex
	traces map[string]*traceEntry
	// order holds traces by first receipt, oldest at order[head]; eviction
	// pops the head, and the slice is compacted once half of it is dead.
	order    []*traceEntry
	head     int
	spans    int
	seq      uint64
	services map[string]int // service name → traces holding a span of it

	received  prometheus.Counter
	evicted   prometheus.Counter
	dropped   *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	gauge     prometheus.GaugeFunc
	dropEvict prometheus.Counter
	dropDup   prometheus.Counter
	dropBad   prometheus.Counter
	dropInc   prometheus.Counter
}

// traceEntry is one trace's spans and the aggregates Search reads, kept up to
// date by Add so that a search never walks spans.
type traceEntry struct {
	id         string
	seq        uint64 // order of first receipt
	spans      []Span
	start, end int64    // unix nanoseconds: earliest start, latest end
	services   []string // sorted, distinct, no ""
	errors     bool
	index      map[spanKey]int // built past indexThreshold spans
}

// spanKey identifies a span within a trace. Zipkin's shared spans give the
// client and server sides one span id, so the kind is part of the identity.
type spanKey struct {
	id, kind string
}

// New returns an empty store.
func New(o Options) *Store {
	if o.MaxSpans <= 0 {
		o.MaxSpans = DefaultMaxSpans
	}
	if o.MaxTraces <= 0 {
		o.MaxTraces = DefaultMaxTraces
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	s := &Store{
		maxSpans:        o.MaxSpans,
		maxTraces:       o.MaxTraces,
		maxRequestBytes: o.MaxRequestBytes,
		traces:          map[string]*traceEntry{},
		services:        map[string]int{},
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amime_tracestore_spans_received_total",
			Help: "spans received by the trace store, before deduplication and eviction",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amime_tracestore_traces_evicted_total",
			Help: "traces evicted whole to keep the store within its bounds",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amime_tracestore_spans_dropped_total",
			Help: "spans not kept or no longer kept, by reason: malformed, evicted, duplicate, incomplete (no start time)",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amime_tracestore_requests_rejected_total",
			Help: "export requests refused (malformed, too large, unsupported media type), by protocol",
		}, []string{"protocol"}),
	}
	s.gauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "amime_tracestore_traces",
		Help: "traces held by the trace store",
	}, func() float64 {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return float64(len(s.traces))
	})
	// Resolved once so that Add touches no label lookup.
	s.dropEvict = s.dropped.WithLabelValues("evicted")
	s.dropDup = s.dropped.WithLabelValues("duplicate")
	s.dropBad = s.dropped.WithLabelValues("malformed")
	s.dropInc = s.dropped.WithLabelValues("incomplete")
	return s
}

// Collectors are the collectors to register on the Prometheus registry.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.received, s.evicted, s.dropped, s.rejected, s.gauge}
}

// Add stores spans, grouping them by trace. Ids are hex: trace ids of 32
// digits (16 are padded), span ids of 16, in either case. A span with an
// invalid id is dropped, and so is one already held (same trace, span id
// and kind, as an exporter's retry sends). The store keeps the spans' Tags
// maps: callers must not modify them afterwards. When a bound is exceeded
// the traces received first are evicted whole, even the one just added to
// if it alone is over MaxSpans.
func (s *Store) Add(spans ...Span) {
	if len(spans) == 0 {
		return
	}
	s.received.Add(float64(len(spans)))
	var dup, bad int
	s.mu.Lock()
	for i := range spans {
		sp := spans[i] // a copy: the caller's slice is not written to
		if !normalizeIDs(&sp) {
			bad++
			continue
		}
		t := s.traces[sp.TraceID]
		if t == nil {
			s.seq++
			t = &traceEntry{id: sp.TraceID, seq: s.seq, start: sp.Start.UnixNano(), end: sp.Start.Add(sp.Duration).UnixNano()}
			s.traces[sp.TraceID] = t
			s.order = append(s.order, t)
		} else if t.find(sp.SpanID, sp.Kind) >= 0 {
			dup++
			continue
		}
		s.insert(t, sp)
	}
	s.evict()
	s.mu.Unlock()
	if dup > 0 {
		s.dropDup.Add(float64(dup))
	}
	if bad > 0 {
		s.dropBad.Add(float64(bad))
	}
}

// normalizeIDs puts sp's ids in canonical form, or reports them invalid.
// Ids from the handlers are already canonical: then nothing is copied.
func normalizeIDs(sp *Span) bool {
	var err error
	if sp.TraceID, err = normalizeTraceID(sp.TraceID); err != nil {
		return false
	}
	if sp.SpanID, err = normalizeSpanID(sp.SpanID); err != nil {
		return false
	}
	if sp.ParentID != "" {
		if sp.ParentID, err = normalizeSpanID(sp.ParentID); err != nil {
			return false
		}
	}
	return true
}

// insert appends sp to t and updates the aggregates; s.mu is held.
func (s *Store) insert(t *traceEntry, sp Span) {
	// Spans of one trace share its id string, so a trace costs one copy.
	sp.TraceID = t.id
	t.spans = append(t.spans, sp)
	s.spans++
	if n := len(t.spans); t.index != nil {
		t.index[spanKey{sp.SpanID, sp.Kind}] = n - 1
	} else if n > indexThreshold {
		t.index = make(map[spanKey]int, 2*n)
		for j := range t.spans {
			t.index[spanKey{t.spans[j].SpanID, t.spans[j].Kind}] = j
		}
	}
	start := sp.Start.UnixNano()
	end := start + int64(sp.Duration)
	t.start = min(t.start, start)
	t.end = max(t.end, end)
	t.errors = t.errors || sp.Error
	if sp.Service != "" {
		if i, found := slices.BinarySearch(t.services, sp.Service); !found {
			t.services = slices.Insert(t.services, i, sp.Service)
			s.services[sp.Service]++
		}
	}
}

// find returns the index of the span with this identity, or -1.
func (t *traceEntry) find(id, kind string) int {
	if t.index != nil {
		if i, ok := t.index[spanKey{id, kind}]; ok {
			return i
		}
		return -1
	}
	for i := range t.spans {
		if t.spans[i].SpanID == id && t.spans[i].Kind == kind {
			return i
		}
	}
	return -1
}

// evict drops the traces received first until both bounds hold; s.mu is
// held.
func (s *Store) evict() {
	var traces, spans int
	for (s.spans > s.maxSpans || len(s.traces) > s.maxTraces) && s.head < len(s.order) {
		t := s.order[s.head]
		s.order[s.head] = nil
		s.head++
		delete(s.traces, t.id)
		s.spans -= len(t.spans)
		for _, svc := range t.services {
			if s.services[svc]--; s.services[svc] == 0 {
				delete(s.services, svc)
			}
		}
		traces++
		spans += len(t.spans)
	}
	if s.head > len(s.order)/2 && s.head > 0 {
		n := copy(s.order, s.order[s.head:])
		clear(s.order[n:])
		s.order = s.order[:n]
		s.head = 0
	}
	if traces > 0 {
		s.evicted.Add(float64(traces))
		s.dropEvict.Add(float64(spans))
	}
}

// Search returns summaries of the traces matching q, newest first by the
// trace's start.
func (s *Store) Search(q Query) []Summary {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	minDur := int64(q.MinDuration)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if q.Service != "" && s.services[q.Service] == 0 {
		return []Summary{}
	}
	// A min-heap of the newest `limit` matches: one pass over the traces,
	// no sort of all of them.
	h := make(newestHeap, 0, min(limit, len(s.traces)))
	live := s.order[s.head:]
	// Newest received first: traces mostly arrive in start order, so once
	// the heap is full nearly every other trace fails one comparison.
	for i := len(live) - 1; i >= 0; i-- {
		t := live[i]
		if t.end-t.start < minDur {
			continue
		}
		if len(h) == limit && !older(h[0], t) {
			continue
		}
		if q.Service != "" && !slices.Contains(t.services, q.Service) {
			continue
		}
		if len(h) < limit {
			h.push(t)
		} else {
			h[0] = t
			h.down(0)
		}
	}
	// The results' service lists share one backing array, capped per
	// summary so that appending to one cannot overwrite the next.
	n := 0
	for _, t := range h {
		n += len(t.services)
	}
	names := make([]string, 0, n)
	out := make([]Summary, len(h))
	for i := len(h) - 1; i >= 0; i-- {
		t := h[0]
		from := len(names)
		names = append(names, t.services...)
		out[i] = t.summary(names[from:len(names):len(names)])
		h.pop()
	}
	return out
}

// older reports whether a sorts before b in newest-first order's reverse:
// an earlier start, or on a tie the trace received first.
func older(a, b *traceEntry) bool {
	if a.start != b.start {
		return a.start < b.start
	}
	return a.seq < b.seq
}

// newestHeap is a min-heap by older; hand-written so that pushes and pops
// box nothing into interfaces.
type newestHeap []*traceEntry

func (h *newestHeap) push(t *traceEntry) {
	*h = append(*h, t)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !older(s[i], s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *newestHeap) pop() {
	s := *h
	n := len(s) - 1
	s[0] = s[n]
	s[n] = nil
	*h = s[:n]
	h.down(0)
}

func (h newestHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && older(h[r], h[l]) {
			m = r
		}
		if !older(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// summary describes t, with services the caller's copy of t.services; the
// caller holds s.mu.
func (t *traceEntry) summary(services []string) Summary {
	root := -1
	for i := range t.spans {
		sp := &t.spans[i]
		if root < 0 {
			root = i
			continue
		}
		r := &t.spans[root]
		// The root is the earliest span without a parent, or failing any,
		// the earliest span.
		isRoot, rIsRoot := sp.ParentID == "", r.ParentID == ""
		if (isRoot && !rIsRoot) || (isRoot == rIsRoot && sp.Start.Before(r.Start)) {
			root = i
		}
	}
	sum := Summary{
		ID:        t.id,
		Start:     time.Unix(0, t.start),
		Duration:  time.Duration(t.end - t.start),
		Spans:     len(t.spans),
		Services:  services,
		HasErrors: t.errors,
	}
	if root >= 0 {
		r := &t.spans[root]
		sum.Root = r.Name
		if r.Service != "" {
			sum.Root = r.Service + ": " + r.Name
		}
	}
	return sum
}

// Trace returns the spans of the trace with this id (32 hex digits, or 16
// for a 64-bit Zipkin id), sorted by start, then parent before child.
func (s *Store) Trace(id string) (Trace, bool) {
	id, err := normalizeTraceID(id)
	if err != nil {
		return Trace{}, false
	}
	s.mu.RLock()
	t := s.traces[id]
	var spans []Span
	if t != nil {
		spans = slices.Clone(t.spans)
	}
	s.mu.RUnlock()
	if t == nil {
		return Trace{}, false
	}
	for i := range spans {
		// The caller may modify what it gets; the store's maps stay intact.
		spans[i].Tags = maps.Clone(spans[i].Tags)
	}
	sortSpans(spans)
	return Trace{ID: id, Spans: spans}, true
}

// sortSpans orders spans by start; among spans starting together a parent
// comes before its child (by depth in the trace), a Zipkin shared span's
// client side before its server side, then by span id so the order is
// stable across calls.
func sortSpans(spans []Span) {
	parent := make(map[string]string, len(spans))
	for i := range spans {
		if _, ok := parent[spans[i].SpanID]; !ok || spans[i].Kind == "CLIENT" {
			parent[spans[i].SpanID] = spans[i].ParentID
		}
	}
	depth := make(map[string]int, len(spans))
	depthOf := func(id string) int {
		d := 0
		// Bounded by the span count so that a parent cycle cannot loop.
		for p := parent[id]; p != "" && d < len(spans); p = parent[p] {
			if _, ok := parent[p]; !ok {
				break
			}
			d++
		}
		return d
	}
	for id := range parent {
		depth[id] = depthOf(id)
	}
	kindRank := func(k string) int {
		if k == "CLIENT" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(spans, func(a, b Span) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(depth[a.SpanID], depth[b.SpanID]); c != 0 {
			return c
		}
		if a.SpanID == b.SpanID {
			if c := cmp.Compare(kindRank(a.Kind), kindRank(b.Kind)); c != 0 {
				return c
			}
		}
		return strings.Compare(a.SpanID, b.SpanID)
	})
}

// Services returns the services that reported a span of a held trace,
// sorted.
func (s *Store) Services() []string {
	s.mu.RLock()
	out := make([]string, 0, len(s.services))
	for svc := range s.services {
		out = append(out, svc)
	}
	s.mu.RUnlock()
	slices.Sort(out)
	return out
}

// reject counts an export request refused as a whole; spans is how many
// spans it held as far as it could be decoded.
func (s *Store) reject(protocol string, spans int) {
	s.rejected.WithLabelValues(protocol).Inc()
	if spans > 0 {
		s.dropBad.Add(float64(spans))
	}
}

// incomplete counts spans dropped for want of a start time.
func (s *Store) incomplete(n int) {
	if n > 0 {
		s.dropInc.Add(float64(n))
	}
}
