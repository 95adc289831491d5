package tracestore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// exportedTrace is what the SDK tests export: a customer SERVER span, its
// CLIENT child calling preference, and preference's SERVER span (failed),
// joined through a propagated remote parent as across processes.
type exportedTrace struct {
	traceID                  string
	root, call, server       string // span ids
	t0                       time.Time
	rootDur, callDur, srvDur time.Duration
}

// exportTrace records the trace through two tracer providers, one per
// service, whose processors export synchronously: when it returns, the
// exporters have had their answers.
func exportTrace(t *testing.T, newProvider func(service string) *sdktrace.TracerProvider) exportedTrace {
	t.Helper()
	ctx := context.Background()
	customer := newProvider("customer").Tracer("tracestore-test")
	preference := newProvider("preference").Tracer("tracestore-test")
	// Microseconds: the precision Zipkin carries.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	ctx1, root := customer.Start(ctx, "GET /", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(t0),
		trace.WithAttributes(attribute.String("http.method", "GET"), attribute.Int("http.status_code", 200)))
	ctx2, call := customer.Start(ctx1, "call preference", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(t0.Add(10*time.Millisecond)))
	remote := trace.ContextWithRemoteSpanContext(ctx, trace.SpanContextFromContext(ctx2))
	_, server := preference.Start(remote, "GET /pref", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(t0.Add(12*time.Millisecond)),
		trace.WithAttributes(
			attribute.Bool("cache.hit", true),
			attribute.Float64("ratio", 0.5),
			attribute.Int64("items", 7),
			attribute.String("version", "v2"),
		))
	server.SetStatus(codes.Error, "boom")
	server.End(trace.WithTimestamp(t0.Add(40 * time.Millisecond)))
	call.End(trace.WithTimestamp(t0.Add(45 * time.Millisecond)))
	root.End(trace.WithTimestamp(t0.Add(50 * time.Millisecond)))
	return exportedTrace{
		traceID: root.SpanContext().TraceID().String(),
		root:    root.SpanContext().SpanID().String(),
		call:    call.SpanContext().SpanID().String(),
		server:  server.SpanContext().SpanID().String(),
		t0:      t0,
		rootDur: 50 * time.Millisecond, callDur: 35 * time.Millisecond, srvDur: 28 * time.Millisecond,
	}
}

// checkExported queries srv for the exported trace through the query API
// and checks what both protocols must agree on.
// Zipkin's model lower-cases span names (lower is strings.ToLower for it).
func checkExported(t *testing.T, srvURL string, ex exportedTrace, name func(string) string) Trace {
	t.Helper()
	var svcs []string
	getJSON(t, srvURL+"/api/services", &svcs)
	if want := []string{"customer", "preference"}; !slices.Equal(svcs, want) {
		t.Errorf("services = %v, want %v", svcs, want)
	}
	var sums []Summary
	getJSON(t, srvURL+"/api/traces?service=preference&minDuration=50ms", &sums)
	if len(sums) != 1 {
		t.Fatalf("search found %d traces, want 1: %+v", len(sums), sums)
	}
	sum := sums[0]
	if sum.ID != ex.traceID || sum.Spans != 3 || sum.Duration != ex.rootDur || !sum.Start.Equal(ex.t0) ||
		sum.Root != "customer: "+name("GET /") || !sum.HasErrors || !slices.Equal(sum.Services, []string{"customer", "preference"}) {
		t.Errorf("summary = %+v, want id %s, 3 spans, %v from %v, errors", sum, ex.traceID, ex.rootDur, ex.t0)
	}
	var tr Trace
	getJSON(t, srvURL+"/api/traces/"+ex.traceID, &tr)
	if len(tr.Spans) != 3 {
		t.Fatalf("trace has %d spans, want 3: %+v", len(tr.Spans), tr)
	}
	type want struct {
		id, parent, name, service, kind string
		start                           time.Time
		dur                             time.Duration
		err                             bool
	}
	wants := []want{
		{ex.root, "", name("GET /"), "customer", "SERVER", ex.t0, ex.rootDur, false},
		{ex.call, ex.root, name("call preference"), "customer", "CLIENT", ex.t0.Add(10 * time.Millisecond), ex.callDur, false},
		{ex.server, ex.call, name("GET /pref"), "preference", "SERVER", ex.t0.Add(12 * time.Millisecond), ex.srvDur, true},
	}
	for i, w := range wants {
		sp := tr.Spans[i]
		if sp.TraceID != ex.traceID || sp.SpanID != w.id || sp.ParentID != w.parent || sp.Name != w.name || sp.Service != w.service ||
			sp.Kind != w.kind || !sp.Start.Equal(w.start) || sp.Duration != w.dur || sp.Error != w.err {
			t.Errorf("span %d = %+v\nwant %+v", i, sp, w)
		}
	}
	root, srv := tr.Spans[0].Tags, tr.Spans[2].Tags
	if root["http.method"] != "GET" || root["http.status_code"] != "200" {
		t.Errorf("root tags = %v", root)
	}
	for k, v := range map[string]string{"cache.hit": "true", "ratio": "0.5", "items": "7", "version": "v2", "otel.status_code": "ERROR", "error": "boom"} {
		if srv[k] != v {
			t.Errorf("server span tag %s = %q, want %q (tags %v)", k, srv[k], v, srv)
		}
	}
	return tr
}

func TestOTLPExporter(t *testing.T) {
	tests := []struct {
		name string
		opts []otlptracehttp.Option
	}{
		{"protobuf", nil},
		{"protobuf gzip", []otlptracehttp.Option{otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}},
		{"json", []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON)}},
		{"json gzip", []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON), otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newServer(t, Options{})
			ex := exportTrace(t, func(service string) *sdktrace.TracerProvider {
				ctx := context.Background()
				opts := append([]otlptracehttp.Option{
					otlptracehttp.WithEndpointURL(srv.URL + "/v1/traces"),
					otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
				}, tt.opts...)
				exp, err := otlptracehttp.New(ctx, opts...)
				if err != nil {
					t.Fatal(err)
				}
				tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
					sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
				t.Cleanup(func() { _ = tp.Shutdown(ctx) })
				return tp
			})
			checkExported(t, srv.URL, ex, func(s string) string { return s })
			if got := value(t, s.received); got != 3 {
				t.Errorf("spans received = %v, want 3", got)
			}
		})
	}
}

func TestOTLPJSONFixture(t *testing.T) {
	fixture, err := os.ReadFile("testdata/otlp_trace.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{"", "gzip"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			s, srv := newServer(t, Options{})
			body := fixture
			if enc == "gzip" {
				body = gzipped(t, fixture)
			}
			r := post(t, srv.URL+"/v1/traces", "application/json; charset=utf-8", enc, body)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("response Content-Type %q", ct)
			}
			var resp coltracepb.ExportTraceServiceResponse
			if err := protojson.Unmarshal(r.body, &resp); err != nil {
				t.Fatalf("response %q: %v", r.body, err)
			}
			if resp.PartialSuccess != nil {
				t.Errorf("partial success on a full success: %v", resp.PartialSuccess)
			}

			tr, ok := s.Trace("5b8efff798038103d269b633813fc60c")
			if !ok {
				t.Fatal("fixture trace not stored (ids are hex, upper case in the fixture)")
			}
			if len(tr.Spans) != 3 {
				t.Fatalf("%d spans, want 3", len(tr.Spans))
			}
			t0 := time.Unix(0, 1544712660000000000)
			root, pay, server := tr.Spans[0], tr.Spans[1], tr.Spans[2]
			if root.SpanID != "eee19b7ec3c1b174" || root.ParentID != "" || root.Kind != "SERVER" || root.Service != "frontend" ||
				!root.Start.Equal(t0) || root.Duration != time.Second || root.Error {
				t.Errorf("root = %+v", root)
			}
			wantRootTags := map[string]string{
				"http.request.method": "GET", "http.response.status_code": "200", "sampled": "true", "ratio": "0.25", "otel.status_code": "OK",
			}
			if len(root.Tags) != len(wantRootTags) {
				t.Errorf("root tags = %v, want %v (the array attribute left out)", root.Tags, wantRootTags)
			}
			for k, v := range wantRootTags {
				if root.Tags[k] != v {
					t.Errorf("root tag %s = %q, want %q", k, root.Tags[k], v)
				}
			}
			if pay.SpanID != "eee19b7ec3c1b173" || pay.ParentID != root.SpanID || pay.Kind != "CLIENT" || pay.Service != "frontend" ||
				!pay.Start.Equal(t0.Add(100*time.Millisecond)) || pay.Duration != 500*time.Millisecond || !pay.Error ||
				pay.Tags["error"] != "payment failed" || pay.Tags["retries"] != "2" {
				t.Errorf("client span = %+v", pay)
			}
			// Failed through its HTTP status alone.
			if server.SpanID != "1111111111111111" || server.ParentID != pay.SpanID || server.Service != "payments" || !server.Error {
				t.Errorf("server span = %+v", server)
			}
		})
	}
}

func TestOTLPPartialSuccess(t *testing.T) {
	for _, isJSON := range []bool{false, true} {
		s, srv := newServer(t, Options{})
		req := pbRequest(pbSpan(tid16(1), sid8(1), nil), pbSpan(tid16(1), sid8(2), sid8(1)))
		req.ResourceSpans[0].ScopeSpans[0].Spans[1].StartTimeUnixNano = 0
		ct, body := "application/x-protobuf", mustProto(t, req)
		if isJSON {
			ct, body = "application/json", otlpJSON(t, req)
		}
		r := post(t, srv.URL+"/v1/traces", ct, "", body)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var resp coltracepb.ExportTraceServiceResponse
		unmarshalAs(t, isJSON, r.body, &resp)
		if resp.GetPartialSuccess().GetRejectedSpans() != 1 || resp.GetPartialSuccess().GetErrorMessage() == "" {
			t.Errorf("json=%v: response %v, want 1 rejected span with a message", isJSON, &resp)
		}
		if tr, _ := s.Trace(tid(1)); len(tr.Spans) != 1 {
			t.Errorf("json=%v: stored %d spans, want the 1 with a start time", isJSON, len(tr.Spans))
		}
		if got := value(t, s.dropped.WithLabelValues("incomplete")); got != 1 {
			t.Errorf("incomplete dropped = %v, want 1", got)
		}
	}
}

func TestOTLPEmptyRequest(t *testing.T) {
	s, srv := newServer(t, Options{})
	for ct, body := range map[string][]byte{"application/x-protobuf": nil, "application/json": []byte("{}")} {
		if r := post(t, srv.URL+"/v1/traces", ct, "", body); r.status != http.StatusOK {
			t.Errorf("%s empty request: %d %s", ct, r.status, r.body)
		}
	}
	if n := len(s.Search(Query{})); n != 0 {
		t.Errorf("%d traces from empty requests", n)
	}
}

func TestOTLPMalformed(t *testing.T) {
	const limit = 64 << 10
	valid := pbSpan(tid16(1), sid8(1), nil)
	badTrace := pbSpan([]byte{1, 2, 3}, sid8(2), nil)
	zeroSpan := pbSpan(tid16(1), make([]byte, 8), nil)
	badParent := pbSpan(tid16(1), sid8(3), []byte{1, 2, 3, 4})
	big := pbSpan(tid16(1), sid8(4), nil)
	big.Name = strings.Repeat("x", limit)
	validJSON := `{"traceId":"0000000000000000000000000000000a","spanId":"000000000000000a","startTimeUnixNano":"1","endTimeUnixNano":"2"}`
	jsonReq := func(span string) []byte {
		return []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[` + validJSON + `,` + span + `]}]}]}`)
	}
	tests := []struct {
		name, contentType, encoding string
		body                        []byte
		wantStatus                  int
		wantInMsg                   string
		wantField                   string // in the BadRequest detail
	}{
		{"protobuf: not protobuf", "application/x-protobuf", "", []byte{0xff, 0xff, 0xff}, 400, "protobuf", ""},
		{"protobuf: 3-byte trace id", "application/x-protobuf", "", mustProto(t, pbRequest(valid, badTrace)), 400, "want 16 bytes",
			"resourceSpans[0].scopeSpans[0].spans[1].traceId"},
		{"protobuf: all-zero span id", "application/x-protobuf", "", mustProto(t, pbRequest(valid, zeroSpan)), 400, "all zeros",
			"resourceSpans[0].scopeSpans[0].spans[1].spanId"},
		{"protobuf: 4-byte parent id", "application/x-protobuf", "", mustProto(t, pbRequest(valid, badParent)), 400, "want 8 bytes",
			"resourceSpans[0].scopeSpans[0].spans[1].parentSpanId"},
		{"json: syntax", "application/json", "", []byte(`{"resourceSpans":[`), 400, "JSON", ""},
		{"json: not an object", "application/json", "", []byte(`[1,2]`), 400, "object", ""},
		{"json: trailing data", "application/json", "", []byte(`{} {}`), 400, "after", ""},
		{"json: wrong type", "application/json", "", []byte(`{"resourceSpans":5}`), 400, "OTLP JSON", ""},
		{"json: base64 id, not hex", "application/json", "", jsonReq(`{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"000000000000000b"}`), 400, "hex",
			"resourceSpans[0].scopeSpans[0].spans[1].traceId"},
		{"json: short span id", "application/json", "", jsonReq(`{"traceId":"0000000000000000000000000000000a","spanId":"0b"}`), 400, "want 8 bytes",
			"resourceSpans[0].scopeSpans[0].spans[1].spanId"},
		{"json: bad link id", "application/json", "", jsonReq(`{"traceId":"0000000000000000000000000000000a","spanId":"000000000000000b","links":[{"traceId":"zz"}]}`), 400, "hex",
			"resourceSpans[0].scopeSpans[0].spans[1].links[0].traceId"},
		{"json: enum of the wrong type", "application/json", "", jsonReq(`{"traceId":"0000000000000000000000000000000a","spanId":"000000000000000b","kind":true}`), 400, "kind", ""},
		{"text/plain", "text/plain", "", []byte("hello"), 415, "Content-Type", ""},
		{"no content type", "", "", mustProto(t, pbRequest(valid)), 415, "Content-Type", ""},
		{"brotli", "application/x-protobuf", "br", mustProto(t, pbRequest(valid)), 415, "Content-Encoding", ""},
		{"gzip header, plain body", "application/x-protobuf", "gzip", mustProto(t, pbRequest(valid)), 400, "gzip", ""},
		{"truncated gzip", "application/json", "gzip", gzipped(t, jsonReq(validJSON))[:30], 400, "", ""},
		{"too large", "application/x-protobuf", "", mustProto(t, pbRequest(valid, big)), 413, "larger than", ""},
		{"too large once inflated", "application/json", "gzip", gzipped(t, bytes.Repeat([]byte(" "), 4*limit)), 413, "larger than", ""},
	}
	s, srv := newServer(t, Options{MaxRequestBytes: limit})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(t, srv.URL+"/v1/traces", tt.contentType, tt.encoding, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %q", r.status, tt.wantStatus, r.body)
			}
			isJSON := tt.contentType == "application/json"
			wantCT := "application/x-protobuf"
			if isJSON {
				wantCT = "application/json"
			}
			if ct := r.header.Get("Content-Type"); ct != wantCT {
				t.Errorf("response Content-Type %q, want %q", ct, wantCT)
			}
			var st spb.Status
			unmarshalAs(t, isJSON, r.body, &st)
			if st.GetMessage() == "" || !strings.Contains(st.GetMessage(), tt.wantInMsg) {
				t.Errorf("status message %q does not say %q", st.GetMessage(), tt.wantInMsg)
			}
			if tt.wantField != "" {
				if got := badRequestField(t, &st); got != tt.wantField {
					t.Errorf("BadRequest field %q, want %q", got, tt.wantField)
				}
			}
			if n := len(s.Search(Query{})); n != 0 {
				t.Errorf("store holds %d traces after a refused request", n)
			}
		})
	}
	if got := value(t, s.rejected.WithLabelValues("otlp")); got != float64(len(tests)) {
		t.Errorf("rejected requests = %v, want %d", got, len(tests))
	}
	if got := value(t, s.received); got != 0 {
		t.Errorf("received = %v, want 0", got)
	}
}

func badRequestField(t *testing.T, st *spb.Status) string {
	t.Helper()
	for _, d := range st.GetDetails() {
		var br errdetails.BadRequest
		if d.MessageIs(&br) {
			if err := d.UnmarshalTo(&br); err != nil {
				t.Fatal(err)
			}
			if v := br.GetFieldViolations(); len(v) > 0 {
				return v[0].GetField()
			}
		}
	}
	return ""
}

func unmarshalAs(t *testing.T, isJSON bool, b []byte, m proto.Message) {
	t.Helper()
	var err error
	if isJSON {
		err = protojson.Unmarshal(b, m)
	} else {
		err = proto.Unmarshal(b, m)
	}
	if err != nil {
		t.Fatalf("decoding %T from %q: %v", m, b, err)
	}
}

func tid16(n int) []byte {
	b := make([]byte, 16)
	b[15] = byte(n)
	return b
}

func sid8(n int) []byte {
	b := make([]byte, 8)
	b[7] = byte(n)
	return b
}

func pbSpan(traceID, spanID, parent []byte) *tracepb.Span {
	start := uint64(base.UnixNano())
	return &tracepb.Span{
		TraceId: traceID, SpanId: spanID, ParentSpanId: parent, Name: "op",
		Kind:              tracepb.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(time.Millisecond),
		Attributes: []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "v"}}}},
	}
}

func pbRequest(spans ...*tracepb.Span) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "svc"}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}}}
}

func mustProto(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// otlpJSON encodes req as OTLP/JSON: protojson, then the ids turned from
// base64 to hex as the OTLP specification wants.
func otlpJSON(t *testing.T, req *coltracepb.ExportTraceServiceRequest) []byte {
	t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				for _, id := range [][]byte{sp.TraceId, sp.SpanId, sp.ParentSpanId} {
					if len(id) > 0 {
						b = bytes.ReplaceAll(b, []byte(`"`+b64(id)+`"`), []byte(`"`+hexOf(id)+`"`))
					}
				}
			}
		}
	}
	return b
}

func b64(b []byte) string   { return base64.StdEncoding.EncodeToString(b) }
func hexOf(b []byte) string { return hex.EncodeToString(b) }
