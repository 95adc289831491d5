package tracestore

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestZipkinExporter(t *testing.T) {
	s, srv := newServer(t, Options{})
	ex := exportTrace(t, func(service string) *sdktrace.TracerProvider {
		exp, err := zipkin.New(srv.URL + "/api/v2/spans")
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	})
	tr := checkExported(t, srv.URL, ex, strings.ToLower)
	// The exporter also carries the resource as tags.
	if got := tr.Spans[2].Tags["service.name"]; got != "preference" {
		t.Errorf("server span service.name tag = %q", got)
	}
	if got := value(t, s.received); got != 3 {
		t.Errorf("spans received = %v, want 3", got)
	}
}

// zipkinFixture is written from Zipkin's v2 API definition: a 64-bit trace
// id, a shared span (client and server sides under one id), members the
// store does not keep, and a span without timestamp (incomplete).
const zipkinFixture = `[
  {"traceId": "463ac35c9f6413ad", "id": "463ac35c9f6413ad", "name": "get /", "kind": "SERVER",
   "timestamp": 1700000000000000, "duration": 150000,
   "localEndpoint": {"serviceName": "frontend", "ipv4": "127.0.0.1", "port": 8080},
   "annotations": [{"timestamp": 1700000000001000, "value": "wr"}], "debug": true,
   "tags": {"http.status_code": "503", "http.path": "/"}},
  {"traceId": "463ac35c9f6413ad", "parentId": "463ac35c9f6413ad", "id": "72485a3953bb6124", "name": "get /api", "kind": "CLIENT",
   "timestamp": 1700000000010000, "duration": 100000,
   "localEndpoint": {"serviceName": "frontend"}, "remoteEndpoint": {"serviceName": "backend", "ipv6": "::1"}},
  {"traceId": "463ac35c9f6413ad", "parentId": "463ac35c9f6413ad", "id": "72485a3953bb6124", "name": "get /api", "kind": "SERVER",
   "shared": true, "timestamp": 1700000000012000, "duration": 90000,
   "localEndpoint": {"serviceName": "backend"}, "tags": {"error": ""}},
  {"traceId": "463ac35c9f6413ad", "parentId": "72485a3953bb6124", "id": "0000000000000bad", "name": "late",
   "localEndpoint": {"serviceName": "backend"}}
]`

func TestZipkinJSON(t *testing.T) {
	for _, enc := range []string{"", "gzip"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			s, srv := newServer(t, Options{})
			body := []byte(zipkinFixture)
			if enc == "gzip" {
				body = gzipped(t, body)
			}
			r := post(t, srv.URL+"/api/v2/spans", "application/json", enc, body)
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			// The 64-bit id is padded to 128 bits on the left; either form finds it.
			const id = "0000000000000000463ac35c9f6413ad"
			var sums []Summary
			getJSON(t, srv.URL+"/api/traces?service=backend", &sums)
			if len(sums) != 1 || sums[0].ID != id || sums[0].Spans != 3 || sums[0].Duration != 150*time.Millisecond ||
				!sums[0].HasErrors || !slices.Equal(sums[0].Services, []string{"backend", "frontend"}) || sums[0].Root != "frontend: get /" {
				t.Fatalf("summaries = %+v", sums)
			}
			var tr Trace
			getJSON(t, srv.URL+"/api/traces/463ac35c9f6413ad", &tr)
			if tr.ID != id || len(tr.Spans) != 3 {
				t.Fatalf("trace = %+v", tr)
			}
			t0 := time.UnixMicro(1700000000000000)
			type want struct {
				id, parent, service, kind string
				start                     time.Time
				dur                       time.Duration
				err                       bool
			}
			wants := []want{
				{"463ac35c9f6413ad", "", "frontend", "SERVER", t0, 150 * time.Millisecond, true}, // by http.status_code 503
				{"72485a3953bb6124", "463ac35c9f6413ad", "frontend", "CLIENT", t0.Add(10 * time.Millisecond), 100 * time.Millisecond, false},
				{"72485a3953bb6124", "463ac35c9f6413ad", "backend", "SERVER", t0.Add(12 * time.Millisecond), 90 * time.Millisecond, true}, // by the error tag
			}
			for i, w := range wants {
				sp := tr.Spans[i]
				if sp.TraceID != id || sp.SpanID != w.id || sp.ParentID != w.parent || sp.Service != w.service || sp.Kind != w.kind ||
					!sp.Start.Equal(w.start) || sp.Duration != w.dur || sp.Error != w.err {
					t.Errorf("span %d = %+v\nwant %+v", i, sp, w)
				}
			}
			if tr.Spans[0].Tags["http.path"] != "/" {
				t.Errorf("tags = %v", tr.Spans[0].Tags)
			}
			if got := value(t, s.dropped.WithLabelValues("incomplete")); got != 1 {
				t.Errorf("incomplete spans dropped = %v, want 1", got)
			}
		})
	}
}

func TestZipkinNoContentType(t *testing.T) {
	s, srv := newServer(t, Options{})
	body := `[{"traceId":"00000000000000010000000000000001","id":"0000000000000001","timestamp":1,"localEndpoint":{"serviceName":"a"}}]`
	if r := post(t, srv.URL+"/api/v2/spans", "", "", []byte(body)); r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := s.Services(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("services = %v", got)
	}
}

func TestZipkinMalformed(t *testing.T) {
	const limit = 16 << 10
	valid := `{"traceId":"463ac35c9f6413ad","id":"463ac35c9f6413ad","timestamp":1700000000000000,"localEndpoint":{"serviceName":"a"}}`
	list := func(span string) []byte { return []byte("[" + valid + "," + span + "]") }
	tests := []struct {
		name, contentType, encoding string
		body                        []byte
		wantStatus                  int
		wantInMsg                   string
	}{
		{"not JSON", "application/json", "", []byte("traceId=1"), 400, "Zipkin v2 JSON"},
		{"object, not list", "application/json", "", []byte(valid), 400, "list"},
		{"trace id of 20 digits", "application/json", "", list(`{"traceId":"463ac35c9f6413ad0000","id":"0000000000000001","timestamp":1}`), 400, "spans[1].traceId"},
		{"trace id not hex", "application/json", "", list(`{"traceId":"463ac35c9f6413zz","id":"0000000000000001","timestamp":1}`), 400, "spans[1].traceId"},
		{"trace id all zeros", "application/json", "", list(`{"traceId":"0000000000000000","id":"0000000000000001","timestamp":1}`), 400, "spans[1].traceId"},
		{"no trace id", "application/json", "", list(`{"id":"0000000000000001","timestamp":1}`), 400, "spans[1].traceId: missing"},
		{"no span id", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","timestamp":1}`), 400, "spans[1].id: missing"},
		{"span id of 32 digits", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"463ac35c9f6413ad463ac35c9f6413ad","timestamp":1}`), 400, "spans[1].id"},
		{"short parent id", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"0000000000000001","parentId":"1","timestamp":1}`), 400, "spans[1].parentId"},
		{"lower-case kind", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"0000000000000001","kind":"server","timestamp":1}`), 400, "spans[1].kind"},
		{"numeric tag", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"0000000000000001","timestamp":1,"tags":{"n":1}}`), 400, "tags"},
		{"timestamp as string", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"0000000000000001","timestamp":"1"}`), 400, "timestamp"},
		{"negative duration", "application/json", "", list(`{"traceId":"463ac35c9f6413ad","id":"0000000000000001","timestamp":1,"duration":-5}`), 400, "spans[1].duration"},
		{"protobuf", "application/x-protobuf", "", []byte{0x0a, 0x00}, 415, "Content-Type"},
		{"text/plain", "text/plain", "", list(valid), 415, "Content-Type"},
		{"deflate", "application/json", "deflate", list(valid), 415, "Content-Encoding"},
		{"gzip header, plain body", "application/json", "gzip", list(valid), 400, "gzip"},
		{"too large", "application/json", "", []byte("[" + strings.Repeat(valid+",", limit/len(valid)+1) + valid + "]"), 413, "larger than"},
	}
	s, srv := newServer(t, Options{MaxRequestBytes: limit})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(t, srv.URL+"/api/v2/spans", tt.contentType, tt.encoding, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %q", r.status, tt.wantStatus, r.body)
			}
			if !strings.Contains(string(r.body), tt.wantInMsg) {
				t.Errorf("answer %q does not say %q", r.body, tt.wantInMsg)
			}
			if n := len(s.Search(Query{})); n != 0 {
				t.Errorf("store holds %d traces after a refused request", n)
			}
		})
	}
	if got := value(t, s.rejected.WithLabelValues("zipkin")); got != float64(len(tests)) {
		t.Errorf("rejected requests = %v, want %d", got, len(tests))
	}
	// The 9 batches of 2 spans that decoded but held a bad span count
	// their spans as dropped.
	if got := value(t, s.dropped.WithLabelValues("malformed")); got != 2*9 {
		t.Errorf("malformed spans dropped = %v, want 18", got)
	}
}
