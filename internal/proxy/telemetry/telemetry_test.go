package telemetry

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/accesslog"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

func node(t testing.TB, id string, md map[string]any) *corev3.Node {
	t.Helper()
	s, err := structpb.NewStruct(md)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: id, Metadata: s}
}

func TestWorkloadFromNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		md   map[string]any
		want Workload
	}{
		{"istio form", "sidecar~10.0.0.7~reviews-v1-5c7f-x2.bookinfo~bookinfo.svc.cluster.local",
			map[string]any{"LABELS": map[string]any{"app": "reviews", "version": "v1"}, "SERVICE_ACCOUNT": "bookinfo-reviews"},
			Workload{Name: "reviews-v1-5c7f-x2", Namespace: "bookinfo", App: "reviews", Version: "v1", CanonicalService: "reviews", CanonicalRevision: "v1",
				Principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"}},
		{"workload name and canonical labels win", "sidecar~10.0.0.7~pod.ns~ns.svc.cluster.local",
			map[string]any{"NAMESPACE": "prod", "WORKLOAD_NAME": "reviews-v2", "LABELS": map[string]any{
				"app": "reviews", "version": "v2", "service.istio.io/canonical-name": "reviews-svc", "service.istio.io/canonical-revision": "r2"}},
			Workload{Name: "reviews-v2", Namespace: "prod", App: "reviews", Version: "v2", CanonicalService: "reviews-svc", CanonicalRevision: "r2"}},
		{"amime universal mode", "sidecar~host~4242",
			map[string]any{"NAMESPACE": "default", "LABELS": map[string]any{"app": "preference", "version": "v1"}},
			Workload{Name: "preference-v1", Namespace: "default", App: "preference", Version: "v1", CanonicalService: "preference", CanonicalRevision: "v1"}},
		{"nothing known", "", nil,
			Workload{Name: unknown, Namespace: "default", App: unknown, Version: unknown, CanonicalService: unknown, CanonicalRevision: "latest"}},
		{"gateway", "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
			map[string]any{"LABELS": map[string]any{"app": "istio-ingressgateway"}},
			Workload{Name: "gw", Namespace: "istio-system", App: "istio-ingressgateway", Version: unknown, CanonicalService: "istio-ingressgateway", CanonicalRevision: "latest", Gateway: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WorkloadFromNode(node(t, tc.id, tc.md)); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestClusterLabels(t *testing.T) {
	self := Workload{Name: "productpage-v1", Namespace: "default", App: "productpage", Version: "v1",
		CanonicalService: "productpage", CanonicalRevision: "v1", Principal: "spiffe://cluster.local/ns/default/sa/pp"}
	src := map[int]string{lSrcWorkload: "productpage-v1", lSrcNamespace: "default", lSrcApp: "productpage", lSrcVersion: "v1",
		lSrcCanonicalService: "productpage", lSrcCanonicalRevision: "v1"}
	dst := map[int]string{lDstWorkload: "productpage-v1", lDstNamespace: "default", lDstApp: "productpage", lDstVersion: "v1",
		lDstCanonicalService: "productpage", lDstCanonicalRevision: "v1"}
	with := func(base map[int]string, more map[int]string) map[int]string {
		out := map[int]string{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		cluster string
		self    Workload
		want    map[int]string // unlisted labels: "unknown"
	}{
		{"outbound|9080|v1|reviews.default.svc.cluster.local", self, with(src, map[int]string{lReporter: "source",
			lDstService: "reviews.default.svc.cluster.local", lDstServiceName: "reviews", lDstServiceNamespace: "default"})},
		{"outbound|8080||ratings.prod.svc.cluster.local", self, with(src, map[int]string{lReporter: "source",
			lDstService: "ratings.prod.svc.cluster.local", lDstServiceName: "ratings", lDstServiceNamespace: "prod"})},
		{"outbound|443||api.example.com", self, with(src, map[int]string{lReporter: "source",
			lDstService: "api.example.com", lDstServiceName: "api.example.com"})},
		{"inbound|9080||", self, with(dst, map[int]string{lReporter: "destination", lSecurityPolicy: "none",
			lDstService: "productpage.default.svc.cluster.local", lDstServiceName: "productpage", lDstServiceNamespace: "default"})},
		{"inbound|9080|http|productpage.default.svc.cluster.local", self, with(dst, map[int]string{lReporter: "destination", lSecurityPolicy: "none",
			lDstService: "productpage.default.svc.cluster.local", lDstServiceName: "productpage", lDstServiceNamespace: "default"})},
		{"PassthroughCluster", self, with(src, map[int]string{lReporter: "source", lDstService: "PassthroughCluster", lDstServiceName: "PassthroughCluster"})},
		{"BlackHoleCluster", self, with(src, map[int]string{lReporter: "source", lDstService: "BlackHoleCluster", lDstServiceName: "BlackHoleCluster"})},
		{"", self, with(src, map[int]string{lReporter: "source"})},
		{"inbound|9080||", Workload{Name: "gw", Namespace: "gw-ns", App: "gw", Version: "v", CanonicalService: "gw", CanonicalRevision: "v", Gateway: true},
			map[int]string{lReporter: "source", lSrcWorkload: "gw", lSrcNamespace: "gw-ns", lSrcApp: "gw", lSrcVersion: "v", lSrcCanonicalService: "gw",
				lSrcCanonicalRevision: "v", lDstService: "inbound|9080||", lDstServiceName: "inbound|9080||"}},
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			got := clusterLabels(tc.self, tc.cluster)
			for i, name := range labelNames {
				want, ok := tc.want[i]
				if !ok {
					want = unknown
				}
				if i >= lProtocol && i != lSecurityPolicy {
					continue // filled per request
				}
				if got[i] != want {
					t.Errorf("%s = %q, want %q", name, got[i], want)
				}
			}
		})
	}
}

// value finds the sample whose labels include want.
func value(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no %s sample with %v", name, want)
	return nil
}

func TestMetricsRecord(t *testing.T) {
	tel, err := New(Config{Node: node(t, "sidecar~h~1", map[string]any{"NAMESPACE": "default", "LABELS": map[string]any{"app": "productpage", "version": "v1"}})})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tel.Collectors()...)
	info := &streaminfo.Info{Cluster: "outbound|9080|v1|reviews.default.svc.cluster.local", ResponseCode: 200,
		Duration: 3 * time.Millisecond, BytesReceived: 10, BytesSent: 1000}
	for i := 0; i < 5; i++ {
		tel.OnComplete(info)
	}
	failed := *info
	failed.ResponseCode, failed.Flags = 503, streaminfo.UpstreamConnectionFailure|streaminfo.UpstreamRetryLimitExceeded
	tel.OnComplete(&failed)
	grpc := *info
	grpc.GRPC, grpc.GRPCStatus = true, "14"
	tel.OnComplete(&grpc)

	ok := map[string]string{"reporter": "source", "source_workload": "productpage-v1", "source_app": "productpage",
		"destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
		"destination_workload": "unknown", "request_protocol": "http", "response_code": "200", "response_flags": "-",
		"grpc_response_status": "", "connection_security_policy": "unknown"}
	if got := value(t, reg, "istio_requests_total", ok).GetCounter().GetValue(); got != 5 {
		t.Errorf("requests 200 = %v, want 5", got)
	}
	h := value(t, reg, "istio_request_duration_milliseconds", ok).GetHistogram()
	if h.GetSampleCount() != 5 || h.GetSampleSum() != 15 || len(h.GetBucket()) != len(envoyBuckets) {
		t.Errorf("duration histogram: count %d sum %v buckets %d", h.GetSampleCount(), h.GetSampleSum(), len(h.GetBucket()))
	}
	if got := value(t, reg, "istio_response_bytes", ok).GetHistogram().GetSampleSum(); got != 5000 {
		t.Errorf("response bytes sum %v, want 5000", got)
	}
	if got := value(t, reg, "istio_request_bytes", ok).GetHistogram().GetSampleSum(); got != 50 {
		t.Errorf("request bytes sum %v, want 50", got)
	}
	if got := value(t, reg, "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "UF,URX"}).GetCounter().GetValue(); got != 1 {
		t.Errorf("requests 503 = %v", got)
	}
	if got := value(t, reg, "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "14"}).GetCounter().GetValue(); got != 1 {
		t.Errorf("grpc requests = %v", got)
	}
}

// TestSeriesKeyCopied checks that a label set outlives the request buffer
// its key was read from: the data path reuses it.
func TestSeriesKeyCopied(t *testing.T) {
	m := NewMetrics(Workload{})
	buf := []byte("outbound|80||a.ns.svc.cluster.local")
	m.Record(&streaminfo.Info{Cluster: unsafe.String(&buf[0], len(buf)), ResponseCode: 200})
	copy(buf, "XXXXXXXX")
	for k := range *m.series.Load() {
		if k.cluster != "outbound|80||a.ns.svc.cluster.local" {
			t.Fatalf("key %q", k.cluster)
		}
	}
}

// TestMaxSeries checks that label sets stop growing at the limit.
func TestMaxSeries(t *testing.T) {
	m := NewMetrics(Workload{})
	m.limit = 100
	for i := 0; i < m.limit+50; i++ {
		m.Record(&streaminfo.Info{Cluster: "c" + strconv.Itoa(i), ResponseCode: 200})
	}
	if n := len(*m.series.Load()); n != m.limit+1 {
		t.Fatalf("%d series, want %d", n, m.limit+1)
	}
	if got := testCounter(t, m, map[string]string{"destination_service": "unknown"}); got != 50 {
		t.Errorf("overflow series counted %v, want 50", got)
	}
}

func testCounter(t *testing.T, m *Metrics, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	return value(t, reg, "istio_requests_total", labels).GetCounter().GetValue()
}

// TestRecordConcurrent races new label sets against the fast path (run
// with -race).
func TestRecordConcurrent(t *testing.T) {
	m := NewMetrics(Workload{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				m.Record(&streaminfo.Info{Cluster: "outbound|80||a.ns.svc.cluster.local", ResponseCode: 200 + i%20})
			}
		}()
	}
	wg.Wait()
	if got := testCounter(t, m, map[string]string{"response_code": "205"}); got != 100 {
		t.Errorf("code 205 counted %v, want 100", got)
	}
}

func sampleInfo() *streaminfo.Info {
	return &streaminfo.Info{
		Start: time.Date(2026, 11, 22, 1, 2, 3, 456789000, time.UTC), Protocol: "HTTP/1.1", Method: "GET",
		Path: "/reviews/0?q=\"x\"", Authority: "reviews:9080", RequestID: "6a8e-…", Downstream: "10.0.0.1:51234",
		RouteName: "default", Cluster: "outbound|9080||reviews.default.svc.cluster.local", UpstreamHost: "10.0.0.9:9080",
		ResponseCode: 503, Flags: streaminfo.UpstreamConnectionFailure, Details: "upstream_reset_before_response_started{connection_failure}",
		BytesReceived: 12, BytesSent: 91, UpstreamTime: 7 * time.Millisecond, Duration: 9 * time.Millisecond,
		UserAgent: "curl/8.5\x01", ForwardedFor: "10.0.0.1", UpstreamFailed: "delayed connect error: 111",
	}
}

func TestAccessLogJSON(t *testing.T) {
	var out bytes.Buffer
	l := NewAccessLog(&out, JSON, time.Hour)
	l.Start()
	info := sampleInfo()
	l.Log(info)
	l.Log(&streaminfo.Info{Start: info.Start, ResponseCode: 404, Flags: streaminfo.NoRouteFound})
	if out.Len() != 0 {
		t.Fatal("written before a flush")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), out.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	want := map[string]any{
		"start_time": "2026-11-22T01:02:03.456Z", "method": "GET", "path": "/reviews/0?q=\"x\"", "protocol": "HTTP/1.1",
		"response_code": 503.0, "response_flags": "UF", "response_code_details": "upstream_reset_before_response_started{connection_failure}",
		"bytes_received": 12.0, "bytes_sent": 91.0, "duration": 9.0, "upstream_service_time": "7", "x_forwarded_for": "10.0.0.1",
		"user_agent": "curl/8.5\x01", "request_id": "6a8e-…", "authority": "reviews:9080", "upstream_host": "10.0.0.9:9080",
		"upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local", "downstream_remote_address": "10.0.0.1:51234",
		"route_name": "default", "upstream_transport_failure_reason": "delayed connect error: 111",
	}
	if len(got) != len(want) {
		t.Errorf("%d fields, want %d: %s", len(got), len(want), lines[0])
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	var second map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if second["response_flags"] != "NR" || second["upstream_host"] != nil || second["upstream_service_time"] != nil {
		t.Errorf("absent values: %s", lines[1])
	}
}

func TestAppendJSONStringInvalid(t *testing.T) {
	b := appendJSONString(nil, "a\xffb\n\"\\")
	var s string
	if err := json.Unmarshal(b, &s); err != nil || s != "a\ufffdb\n\"\\" {
		t.Fatalf("%s → %q, %v", b, s, err)
	}
}

func TestAccessLogText(t *testing.T) {
	got := string(appendText(nil, &accesslog.TimeCache{}, sampleInfo()))
	want := `[2026-11-22T01:02:03.456Z] "GET /reviews/0?q="x" HTTP/1.1" 503 UF 12 91 9 7 "10.0.0.1" "curl/8.5_" "6a8e-…" "reviews:9080" "10.0.0.9:9080"` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	got = string(appendText(nil, &accesslog.TimeCache{}, &streaminfo.Info{Start: sampleInfo().Start, ResponseCode: 404, Flags: streaminfo.NoRouteFound}))
	want = `[2026-11-22T01:02:03.456Z] "- - -" 404 NR 0 0 0 - "-" "-" "-" "-" "-"` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestAccessLogFlushes checks the ticker flushes without Close, and that
// lines past the buffer bound are dropped and counted.
func TestAccessLogFlushes(t *testing.T) {
	w := &syncBuffer{}
	l := NewAccessLog(w, Text, 10*time.Millisecond)
	l.Start()
	defer l.Close()
	l.Log(sampleInfo())
	deadline := time.Now().Add(5 * time.Second)
	for w.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not flushed by the ticker")
		}
		time.Sleep(5 * time.Millisecond)
	}

	stalled := NewAccessLog(&syncBuffer{}, Text, time.Hour) // never started: nothing drains it
	n := 0
	for stalled.Dropped() == 0 {
		stalled.Log(sampleInfo())
		n++
	}
	if n < maxBuffered/200 {
		t.Errorf("dropped after %d lines", n)
	}
	if err := stalled.Close(); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func TestParseFormat(t *testing.T) {
	if f, err := ParseFormat("text"); err != nil || f != Text {
		t.Error("text")
	}
	if f, err := ParseFormat("json"); err != nil || f != JSON {
		t.Error("json")
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error("yaml accepted")
	}
}

// BenchmarkOnComplete is the per-request telemetry cost in steady state
// (label set known): metrics only, and metrics plus a JSON access log line;
// the parallel cases add contention on the shared counters and buffer. The
// log is flushed inline every 128 lines, as the flusher goroutine would: a
// loop that never blocks starves it (the runtime queues it behind the
// loop), which real request goroutines, blocked on the network, do not.
func BenchmarkOnComplete(b *testing.B) {
	n := node(b, "sidecar~h~1", map[string]any{"LABELS": map[string]any{"app": "productpage", "version": "v1"}})
	for _, bc := range []struct {
		name     string
		log      bool
		parallel bool
	}{{"metrics", false, false}, {"metrics+jsonlog", true, false}, {"metrics/parallel", false, true}, {"metrics+jsonlog/parallel", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			tel, err := New(Config{Node: n})
			if err != nil {
				b.Fatal(err)
			}
			if bc.log {
				tel.log = NewAccessLog(discard{}, JSON, time.Hour)
			}
			defer tel.Close()
			info := sampleInfo()
			tel.OnComplete(info)
			loop := func(next func() bool) {
				for i := 0; next(); i++ {
					tel.OnComplete(info)
					if tel.log != nil && i%128 == 127 {
						_ = tel.log.Flush()
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) { loop(pb.Next) })
			} else {
				i := 0
				loop(func() bool { i++; return i <= b.N })
			}
			if tel.log != nil && tel.log.Dropped() > 0 {
				b.Fatalf("%d lines dropped", tel.log.Dropped())
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
