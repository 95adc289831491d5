package tracestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

var benchServices = []string{"productpage", "reviews", "ratings", "details", "customer", "preference", "recommendation", "gateway"}

// benchTrace is a trace of n spans over a few services, lasting dur.
func benchTrace(id, n int, dur time.Duration) []Span {
	spans := make([]Span, n)
	for i := range spans {
		parent := 0
		if i > 0 {
			parent = 1
		}
		spans[i] = span(id, i+1, parent, benchServices[(id+i)%len(benchServices)], "GET /api", time.Duration(id)*time.Millisecond, dur)
		spans[i].Kind = "SERVER"
		spans[i].Tags = map[string]string{"http.method": "GET", "http.status_code": "200", "http.url": "/api", "upstream_cluster": "outbound|9080||reviews"}
	}
	return spans
}

// BenchmarkAdd adds one 8-span trace per operation to a store at its
// default bounds, past which every Add also evicts.
func BenchmarkAdd(b *testing.B) {
	const batches = 20000 // more than the store holds, so ids recur only once evicted
	in := make([][]Span, batches)
	for i := range in {
		in[i] = benchTrace(i+1, 8, time.Millisecond)
	}
	s := New(Options{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Add(in[i%batches]...)
	}
}

// BenchmarkSearch searches a full store of 10000 traces.
func BenchmarkSearch(b *testing.B) {
	s := New(Options{MaxTraces: 10000, MaxSpans: 100000})
	for i := 1; i <= 10000; i++ {
		// One trace in 100 is slow.
		dur := time.Duration(i%100+1) * time.Millisecond
		if i%100 == 0 {
			dur = time.Second
		}
		s.Add(benchTrace(i, 5, dur)...)
	}
	for _, q := range []Query{
		{},
		{Service: "ratings"},
		{MinDuration: 500 * time.Millisecond},
		{Service: "ratings", MinDuration: 50 * time.Millisecond, Limit: 100},
		{Limit: 1000},
	} {
		b.Run(fmt.Sprintf("service=%s,minDuration=%v,limit=%d", q.Service, q.MinDuration, q.Limit), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if len(s.Search(q)) == 0 {
					b.Fatal("no results")
				}
			}
		})
	}
}

// BenchmarkExport measures a whole export request of 50 spans through the
// handler: decoding, conversion and Add.
func BenchmarkExport(b *testing.B) {
	pbSpans := make([]*tracepb.Span, 50)
	zk := make([]map[string]any, 50)
	for i := range pbSpans {
		pbSpans[i] = pbSpan(tid16(i/5+1), sid8(i+1), nil)
		pbSpans[i].Attributes = append(pbSpans[i].Attributes,
			&commonpb.KeyValue{Key: "http.status_code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 200}}})
		zk[i] = map[string]any{
			"traceId": fmt.Sprintf("%032x", i/5+1), "id": fmt.Sprintf("%016x", i+1), "name": "get /api", "kind": "SERVER",
			"timestamp": base.UnixMicro(), "duration": 1000, "localEndpoint": map[string]any{"serviceName": "svc"},
			"tags": map[string]string{"k": "v", "http.status_code": "200"},
		}
	}
	protoBody := mustProto(b, pbRequest(pbSpans...))
	zipkinBody, err := json.Marshal(zk)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, ct string
		body           []byte
		want           int
	}{
		{"otlp-protobuf", "/v1/traces", "application/x-protobuf", protoBody, http.StatusOK},
		{"zipkin-json", "/api/v2/spans", "application/json", zipkinBody, http.StatusAccepted},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := Handler(New(Options{}))
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest(http.MethodPost, tc.path, bytes.NewReader(tc.body))
				req.Header.Set("Content-Type", tc.ct)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != tc.want {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
