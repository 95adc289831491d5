package dashboard

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Istio's standard metric names the console reads.
const (
	requestsTotal   = "istio_requests_total"
	requestDuration = "istio_request_duration_milliseconds"
)

// labels are the Istio standard labels the console reads; a comparable
// value, so that series sum by them as PromQL's sum by (…) would.
type labels struct {
	reporter                                                    string
	srcWorkload, srcNamespace, srcApp, srcVersion, srcCanonical string
	dstWorkload, dstNamespace, dstApp, dstVersion, dstCanonical string
	dstService, dstServiceName, dstServiceNamespace             string
	protocol, code, grpcStatus, flags, security                 string
}

// set stores an Istio label; it reports false for any other label, which
// then tells series apart without being read (instance, pod, …).
func (l *labels) set(name, value string) bool {
	switch name {
	case "reporter":
		l.reporter = value
	case "source_workload":
		l.srcWorkload = value
	case "source_workload_namespace":
		l.srcNamespace = value
	case "source_app":
		l.srcApp = value
	case "source_version":
		l.srcVersion = value
	case "source_canonical_service":
		l.srcCanonical = value
	case "destination_workload":
		l.dstWorkload = value
	case "destination_workload_namespace":
		l.dstNamespace = value
	case "destination_app":
		l.dstApp = value
	case "destination_version":
		l.dstVersion = value
	case "destination_canonical_service":
		l.dstCanonical = value
	case "destination_service":
		l.dstService = value
	case "destination_service_name":
		l.dstServiceName = value
	case "destination_service_namespace":
		l.dstServiceNamespace = value
	case "request_protocol":
		l.protocol = value
	case "response_code":
		l.code = value
	case "grpc_response_status":
		l.grpcStatus = value
	case "response_flags":
		l.flags = value
	case "connection_security_policy":
		l.security = value
	default:
		return false
	}
	return true
}

// isError is Kiali's application error: HTTP 5xx, or a gRPC status other
// than OK (1-16) on gRPC traffic.
func (l labels) isError() bool {
	if strings.HasPrefix(l.code, "5") {
		return true
	}
	if l.protocol == "grpc" {
		switch l.grpcStatus {
		case "", "0", "-", "unknown":
			return false
		}
		return true
	}
	return false
}

func (l labels) is4xx() bool { return strings.HasPrefix(l.code, "4") }

// seriesKey names one series of one target: its Istio labels and the
// other labels folded into extra.
type seriesKey struct {
	extra string
	l     labels
}

// bucket is one cumulative histogram bucket.
type bucket struct{ le, n float64 }

type histSample struct {
	count   float64
	buckets []bucket // sorted by le, ending with +Inf
}

// sample is one scrape of one target: the series of the two metrics.
type sample struct {
	reqs  map[seriesKey]float64
	hists map[seriesKey]histSample
}

func newSample() sample {
	return sample{reqs: map[seriesKey]float64{}, hists: map[seriesKey]histSample{}}
}

// keyOf reads a metric's labels, leaving out the ones named in skip.
func keyOf(pairs []*dto.LabelPair, skip string) seriesKey {
	var k seriesKey
	var extra []string
	for _, p := range pairs {
		if p.GetName() == skip {
			continue
		}
		if !k.l.set(p.GetName(), p.GetValue()) {
			extra = append(extra, p.GetName()+"="+p.GetValue())
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		k.extra = strings.Join(extra, ",")
	}
	return k
}

// parseText reads Prometheus text exposition format: the proxies' /stats/
// prometheus. Families other than the two Istio metrics are skipped; a
// histogram exposed without a TYPE line (untyped _bucket series) is
// reassembled from its buckets.
func parseText(r io.Reader) (sample, error) {
	in, err := io.ReadAll(r)
	if err != nil {
		return sample{}, fmt.Errorf("reading metrics: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(keepIstio(in)))
	if err != nil {
		return sample{}, fmt.Errorf("parsing metrics: %w", err)
	}
	s := newSample()
	if mf := fams[requestsTotal]; mf != nil {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			if m.GetCounter() == nil {
				v = m.GetUntyped().GetValue()
			}
			s.reqs[keyOf(m.GetLabel(), "")] += v
		}
	}
	if mf := fams[requestDuration]; mf != nil && mf.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			bs := make([]bucket, 0, len(h.GetBucket())+1)
			for _, b := range h.GetBucket() {
				n := float64(b.GetCumulativeCount())
				if b.CumulativeCountFloat != nil {
					n = b.GetCumulativeCountFloat()
				}
				bs = append(bs, bucket{le: b.GetUpperBound(), n: n})
			}
			s.hists[keyOf(m.GetLabel(), "")] = normalizeHist(count, bs)
		}
	} else if mf := fams[requestDuration+"_bucket"]; mf != nil {
		acc := map[seriesKey][]bucket{}
		for _, m := range mf.GetMetric() {
			le := math.NaN()
			for _, p := range m.GetLabel() {
				if p.GetName() == "le" {
					le, _ = strconv.ParseFloat(p.GetValue(), 64)
				}
			}
			if math.IsNaN(le) {
				continue
			}
			k := keyOf(m.GetLabel(), "le")
			acc[k] = append(acc[k], bucket{le: le, n: m.GetUntyped().GetValue() + m.GetCounter().GetValue()})
		}
		for k, bs := range acc {
			s.hists[k] = normalizeHist(math.NaN(), bs)
		}
	}
	return s, nil
}

// wanted are the metric names parseText reads.
var wanted = map[string]bool{
	requestsTotal:               true,
	requestDuration + "_bucket": true,
	requestDuration + "_sum":    true,
	requestDuration + "_count":  true,
	requestDuration:             true, // in TYPE and HELP lines
}

// keepIstio drops every line but the two Istio metrics' (and their TYPE
// and HELP) before the parser sees them: a proxy exposes thousands of
// Envoy stats the console does not read, and parsing is what costs.
func keepIstio(in []byte) []byte {
	// Filtered in place: what is kept never overtakes what is read.
	out := in[:0]
	for len(in) > 0 {
		line := in
		if i := bytes.IndexByte(in, '\n'); i >= 0 {
			line, in = in[:i+1], in[i+1:]
		} else {
			in = nil
		}
		name := line
		if rest, ok := bytes.CutPrefix(line, []byte("# ")); ok {
			// "# TYPE name type" or "# HELP name text".
			if _, after, ok := bytes.Cut(rest, []byte(" ")); ok {
				name = after
			}
		}
		if i := bytes.IndexAny(name, "{ \t\n"); i >= 0 {
			name = name[:i]
		}
		if wanted[string(name)] {
			out = append(out, line...)
		}
	}
	return out
}

// normalizeHist sorts buckets and makes sure the last is +Inf holding the
// count, as histogram_quantile needs. count NaN means "the +Inf bucket".
func normalizeHist(count float64, bs []bucket) histSample {
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].le, 1) {
		if math.IsNaN(count) {
			count = 0
			if len(bs) > 0 {
				count = bs[len(bs)-1].n
			}
		}
		bs = append(bs, bucket{le: math.Inf(1), n: count})
	}
	return histSample{count: bs[len(bs)-1].n, buckets: bs}
}

// target is what the console remembers of one scrape target: its last
// successful sample, from which the next one's increments are computed.
type target struct {
	last sample
	at   time.Time
}

// increments is the traffic between two samples of one target, added into
// the round's sums. A series absent from prev started at zero since then
// (the target answered then without it); a counter lower than before was
// reset (the proxy restarted), so its whole value is new, as Prometheus'
// rate() assumes.
func increments(prev, cur sample, reqs map[labels]float64, hists map[labels][]bucket) {
	for k, v := range cur.reqs {
		old, ok := prev.reqs[k]
		d := v
		if ok && v >= old {
			d = v - old
		}
		if d > 0 {
			reqs[k.l] += d
		}
	}
	for k, h := range cur.hists {
		old, ok := prev.hists[k]
		delta := h.buckets
		if ok && !histReset(old, h) {
			delta = make([]bucket, len(h.buckets))
			for i, b := range h.buckets {
				delta[i] = bucket{le: b.le, n: b.n - old.buckets[i].n}
			}
		}
		if delta[len(delta)-1].n <= 0 {
			continue
		}
		hists[k.l] = mergeBuckets(hists[k.l], delta)
	}
}

// histReset reports whether cur cannot follow prev: a lower count or
// bucket, or a different bucket layout.
func histReset(prev, cur histSample) bool {
	if len(prev.buckets) != len(cur.buckets) || cur.count < prev.count {
		return true
	}
	for i, b := range cur.buckets {
		if b.le != prev.buckets[i].le || b.n < prev.buckets[i].n {
			return true
		}
	}
	return false
}

// mergeBuckets sums two cumulative bucket lists, as sum by (le) does. Equal
// layouts (the usual case: every proxy uses Envoy's default buckets) add in
// place.
func mergeBuckets(a, b []bucket) []bucket {
	if a == nil {
		return append([]bucket(nil), b...)
	}
	if len(a) == len(b) {
		same := true
		for i := range a {
			if a[i].le != b[i].le {
				same = false
				break
			}
		}
		if same {
			for i := range a {
				a[i].n += b[i].n
			}
			return a
		}
	}
	m := map[float64]float64{}
	for _, x := range a {
		m[x.le] += x.n
	}
	for _, x := range b {
		m[x.le] += x.n
	}
	out := make([]bucket, 0, len(m))
	for le, n := range m {
		out = append(out, bucket{le: le, n: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// quantile is PromQL's histogram_quantile over cumulative buckets sorted by
// upper bound and ending with +Inf: linear interpolation inside the bucket
// holding the rank; the lowest bucket starts at 0 (if its bound is
// positive); a rank in the +Inf bucket answers the highest finite bound.
// NaN when there are no observations.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].le, 1) {
		return math.NaN()
	}
	total := bs[len(bs)-1].n
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(bs)-1, func(i int) bool { return bs[i].n >= rank })
	if i == len(bs)-1 {
		return bs[len(bs)-2].le
	}
	if i == 0 && bs[0].le <= 0 {
		return bs[0].le
	}
	start, count := 0.0, bs[i].n
	if i > 0 {
		start = bs[i-1].le
		count -= bs[i-1].n
		rank -= bs[i-1].n
	}
	if count <= 0 {
		return bs[i].le
	}
	return start + (bs[i].le-start)*(rank/count)
}

// round is the traffic of all targets between two scrape rounds, summed by
// Istio labels.
type round struct {
	start, end time.Time
	reqs       map[labels]float64
	hists      map[labels][]bucket
}

// clone copies the round's sums, so that it can change while readers use
// the original.
func (r round) clone() round {
	c := round{start: r.start, end: r.end, reqs: make(map[labels]float64, len(r.reqs)), hists: make(map[labels][]bucket, len(r.hists))}
	for l, v := range r.reqs {
		c.reqs[l] = v
	}
	for l, b := range r.hists {
		c.hists[l] = append([]bucket(nil), b...)
	}
	return c
}

// traffic is rounds summed over a window.
type traffic struct {
	reqs  map[labels]float64
	hists map[labels][]bucket
	span  time.Duration // the time the increments cover
}

func sumRounds(rs []round) traffic {
	t := traffic{reqs: map[labels]float64{}, hists: map[labels][]bucket{}}
	if len(rs) == 0 {
		return t
	}
	for _, r := range rs {
		for l, v := range r.reqs {
			t.reqs[l] += v
		}
		for l, b := range r.hists {
			t.hists[l] = mergeBuckets(t.hists[l], b)
		}
	}
	t.span = rs[len(rs)-1].end.Sub(rs[0].start)
	return t
}
