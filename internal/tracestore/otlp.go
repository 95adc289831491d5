package tracestore

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// fieldError is a problem with one field of an exported body, named by its
// path in the body's JSON form (also for protobuf bodies, whose fields have
// the same names).
type fieldError struct {
	path string
	err  error
}

func (e *fieldError) Error() string { return e.path + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// otlpKinds maps OTLP's SpanKind to Span.Kind; UNSPECIFIED maps to "".
var otlpKinds = [...]string{
	tracepb.Span_SPAN_KIND_INTERNAL: "INTERNAL",
	tracepb.Span_SPAN_KIND_SERVER:   "SERVER",
	tracepb.Span_SPAN_KIND_CLIENT:   "CLIENT",
	tracepb.Span_SPAN_KIND_PRODUCER: "PRODUCER",
	tracepb.Span_SPAN_KIND_CONSUMER: "CONSUMER",
}

// otlpSpans converts an export request to spans. It fails on the first span
// whose ids are invalid, naming its path, so that a bad batch is refused
// whole. total is the number of spans in the request; spans without a start
// time are left out of the result.
func otlpSpans(req *coltracepb.ExportTraceServiceRequest) (spans []Span, total int, err error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			total += len(ss.GetSpans())
		}
	}
	spans = make([]Span, 0, total)
	var traceIDs idCache
	for i, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for j, ss := range rs.GetScopeSpans() {
			for k, ps := range ss.GetSpans() {
				sp, err := otlpSpan(ps, service, &traceIDs)
				if err != nil {
					var fe *fieldError
					if errors.As(err, &fe) {
						fe.path = fmt.Sprintf("resourceSpans[%d].scopeSpans[%d].spans[%d].%s", i, j, k, fe.path)
					}
					return nil, total, err
				}
				if sp.Start.IsZero() {
					continue
				}
				spans = append(spans, sp)
			}
		}
	}
	return spans, total, nil
}

// otlpSpan converts one span. A span with no start time comes back with a
// zero Start.
func otlpSpan(ps *tracepb.Span, service string, traceIDs *idCache) (Span, error) {
	traceID, err := hexID(ps.GetTraceId(), 16, traceIDs)
	if err != nil {
		return Span{}, &fieldError{"traceId", err}
	}
	spanID, err := hexID(ps.GetSpanId(), 8, nil)
	if err != nil {
		return Span{}, &fieldError{"spanId", err}
	}
	var parentID string
	if len(ps.GetParentSpanId()) > 0 {
		if parentID, err = hexID(ps.GetParentSpanId(), 8, nil); err != nil {
			return Span{}, &fieldError{"parentSpanId", err}
		}
	}
	sp := Span{
		TraceID:  traceID,
		SpanID:   spanID,
		ParentID: parentID,
		Name:     ps.GetName(),
		Service:  service,
	}
	if k := ps.GetKind(); k > 0 && int(k) < len(otlpKinds) {
		sp.Kind = otlpKinds[k]
	}
	// Past 2262 a uint64 of nanoseconds overflows int64: treat it as absent.
	if start := int64(ps.GetStartTimeUnixNano()); start > 0 {
		sp.Start = time.Unix(0, start)
		if end := int64(ps.GetEndTimeUnixNano()); end > start {
			sp.Duration = time.Duration(end - start)
		}
	}
	attrs := ps.GetAttributes()
	status := ps.GetStatus().GetCode()
	if n := len(attrs); n > 0 || status != tracepb.Status_STATUS_CODE_UNSET {
		sp.Tags = make(map[string]string, n+2)
	}
	for _, kv := range attrs {
		if v, ok := attrString(kv.GetValue()); ok {
			sp.Tags[kv.GetKey()] = v
		}
	}
	// The status becomes the tags OpenTelemetry's Zipkin mapping gives it,
	// so that spans look alike whichever protocol brought them.
	switch status {
	case tracepb.Status_STATUS_CODE_OK:
		sp.Tags["otel.status_code"] = "OK"
	case tracepb.Status_STATUS_CODE_ERROR:
		sp.Tags["otel.status_code"] = "ERROR"
		sp.Tags["error"] = ps.GetStatus().GetMessage()
		sp.Error = true
	}
	markHTTPError(&sp)
	return sp, nil
}

// attrString renders the scalar attribute kinds; arrays, maps and bytes
// have no single-string form and are left out.
func attrString(v *commonpb.AnyValue) (string, bool) {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue, true
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10), true
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue), true
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64), true
	}
	return "", false
}

// markHTTPError sets Error for a 5xx HTTP status, under the old
// (http.status_code) or current (http.response.status_code) convention.
func markHTTPError(sp *Span) {
	if sp.Error || sp.Tags == nil {
		return
	}
	for _, k := range [...]string{"http.status_code", "http.response.status_code"} {
		if v, ok := sp.Tags[k]; ok {
			if code, err := strconv.Atoi(v); err == nil && code >= 500 {
				sp.Error = true
				return
			}
		}
	}
}

// unmarshalOTLPJSON decodes OTLP/JSON. The OTLP specification departs from
// protobuf's JSON mapping in encoding trace and span ids as hex rather than
// base64, so the ids are rewritten to base64 before protojson sees the
// body. Unknown fields are ignored, as the specification requires of
// receivers.
func unmarshalOTLPJSON(body []byte, req *coltracepb.ExportTraceServiceRequest) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // int64 fields stay exact through the rewrite
	var root any
	if err := dec.Decode(&root); err != nil {
		return fmt.Errorf("decoding JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decoding JSON: data after the top-level value")
	}
	obj, ok := root.(map[string]any)
	if !ok {
		return errors.New("decoding JSON: want an ExportTraceServiceRequest object")
	}
	for i, rs := range list(obj["resourceSpans"]) {
		for j, ss := range list(field(rs, "scopeSpans")) {
			for k, sp := range list(field(ss, "spans")) {
				path := fmt.Sprintf("resourceSpans[%d].scopeSpans[%d].spans[%d]", i, j, k)
				if err := hexToBase64(sp, path, "traceId", "spanId", "parentSpanId"); err != nil {
					return err
				}
				for l, link := range list(field(sp, "links")) {
					if err := hexToBase64(link, fmt.Sprintf("%s.links[%d]", path, l), "traceId", "spanId"); err != nil {
						return err
					}
				}
			}
		}
	}
	rewritten, err := json.Marshal(root)
	if err != nil {
		return fmt.Errorf("re-encoding JSON: %w", err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(rewritten, req); err != nil {
		return fmt.Errorf("decoding OTLP JSON: %w", err)
	}
	return nil
}

// list returns v as a JSON array, or nil when it is something else (which
// protojson then reports with its own message).
func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// field returns a member of a JSON object, or nil.
func field(v any, name string) any {
	m, _ := v.(map[string]any)
	return m[name]
}

// hexToBase64 rewrites the named hex string members of a JSON object as
// base64.
func hexToBase64(v any, path string, names ...string) error {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for _, name := range names {
		s, ok := m[name].(string)
		if !ok || s == "" {
			continue
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return &fieldError{path + "." + name, fmt.Errorf("want a hex string: %w", err)}
		}
		m[name] = base64.StdEncoding.EncodeToString(b)
	}
	return nil
}
