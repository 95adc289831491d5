package tracing

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// otlpExporter sends OTLP/HTTP protobuf through the SDK's exporter. The
// SDK's tracer cannot take explicit span ids (Zipkin's shared spans, the
// ids already sent upstream), so spans are handed to the exporter as
// read-only snapshots of SpanStubs, the SDK's own span data type.
type otlpExporter struct {
	exp          *otlptrace.Exporter
	res          *resource.Resource
	nodeID, zone string
}

func newOTLPExporter(p *Provider, client *http.Client, service, nodeID, zone string) (*otlpExporter, error) {
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(p.Scheme + "://" + p.Authority + p.Path),
		otlptracehttp.WithHTTPClient(client),
		otlptracehttp.WithTimeout(p.Timeout),
		// Envoy sends a batch once: a collector that is down loses it.
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
	}
	if len(p.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(p.Headers))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	return &otlpExporter{exp: exp, res: resource.NewSchemaless(attribute.String("service.name", service)), nodeID: nodeID, zone: zone}, nil
}

func (e *otlpExporter) export(ctx context.Context, spans []*Span) error {
	ro := make([]sdktrace.ReadOnlySpan, len(spans))
	for i, sp := range spans {
		ro[i] = e.stub(sp).Snapshot()
	}
	return e.exp.ExportSpans(ctx, ro)
}

func (e *otlpExporter) stub(sp *Span) tracetest.SpanStub {
	tid := traceIDBytes(sp.TraceID)
	var sid, pid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], sp.SpanID)
	binary.BigEndian.PutUint64(pid[:], sp.ParentID)
	st := tracetest.SpanStub{
		Name:        sp.OperationName(),
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}),
		SpanKind:    trace.SpanKindClient,
		StartTime:   sp.Start,
		EndTime:     sp.Start.Add(sp.Duration),
		Resource:    e.res,
	}
	if sp.Server {
		st.SpanKind = trace.SpanKindServer
	}
	if sp.ParentID != 0 {
		st.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: pid, TraceFlags: trace.FlagsSampled, Remote: true})
	}
	tags := sp.Tags(e.nodeID, e.zone)
	st.Attributes = make([]attribute.KeyValue, len(tags))
	for i, t := range tags {
		st.Attributes[i] = attribute.String(t.Key, t.Value)
	}
	if sp.Error() {
		st.Status = sdktrace.Status{Code: codes.Error}
	}
	return st
}

func (e *otlpExporter) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = e.exp.Shutdown(ctx)
}

func traceIDBytes(t TraceID) trace.TraceID {
	var b trace.TraceID
	binary.BigEndian.PutUint64(b[:8], t.Hi)
	binary.BigEndian.PutUint64(b[8:], t.Lo)
	return b
}

// zipkinExporter posts Zipkin v2 JSON (Envoy's HTTP_JSON).
type zipkinExporter struct {
	client       *http.Client
	url          string
	service      string
	nodeID, zone string
}

// ZipkinSpan is one span of Zipkin's v2 JSON model.
type ZipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"` // µs since the epoch
	Duration      int64             `json:"duration"`  // µs
	Shared        bool              `json:"shared,omitempty"`
	LocalEndpoint ZipkinEndpoint    `json:"localEndpoint"`
	Tags          map[string]string `json:"tags,omitempty"`
}

// ZipkinEndpoint is a Zipkin endpoint.
type ZipkinEndpoint struct {
	ServiceName string `json:"serviceName"`
}

func hexID(v uint64) string {
	var b [16]byte
	putHex64(b[:], v)
	return string(b[:])
}

func (t TraceID) String() string {
	if !t.Wide {
		return hexID(t.Lo)
	}
	return hexID(t.Hi) + hexID(t.Lo)
}

func (e *zipkinExporter) model(sp *Span) ZipkinSpan {
	z := ZipkinSpan{
		TraceID:       sp.TraceID.String(),
		ID:            hexID(sp.SpanID),
		Name:          sp.OperationName(),
		Kind:          "CLIENT",
		Timestamp:     sp.Start.UnixMicro(),
		Duration:      max(sp.Duration.Microseconds(), 1),
		Shared:        sp.Shared,
		LocalEndpoint: ZipkinEndpoint{ServiceName: e.service},
		Tags:          map[string]string{},
	}
	if sp.ParentID != 0 {
		z.ParentID = hexID(sp.ParentID)
	}
	if sp.Server {
		z.Kind = "SERVER"
	}
	for _, t := range sp.Tags(e.nodeID, e.zone) {
		z.Tags[t.Key] = t.Value
	}
	return z
}

func (e *zipkinExporter) export(ctx context.Context, spans []*Span) error {
	models := make([]ZipkinSpan, len(spans))
	for i, sp := range spans {
		models[i] = e.model(sp)
	}
	body, err := json.Marshal(models)
	if err != nil {
		return fmt.Errorf("zipkin: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("zipkin: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("zipkin: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("zipkin: collector answered %s", strconv.Itoa(resp.StatusCode))
	}
	return nil
}

func (e *zipkinExporter) shutdown() { e.client.CloseIdleConnections() }
