package tracestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// zipkinSpan is a span of Zipkin's v2 JSON model, as far as the store keeps
// it. Members it does not keep (annotations, remoteEndpoint, debug,
// shared) are ignored, as Zipkin's own collector ignores unknown ones.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"` // epoch microseconds
	Duration      int64             `json:"duration"`  // microseconds
	LocalEndpoint *zipkinEndpoint   `json:"localEndpoint"`
	Tags          map[string]string `json:"tags"`
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName"`
}

// zipkinSpans decodes a Zipkin v2 JSON list of spans. It fails on the
// first invalid span, naming it, so that a bad batch is refused whole.
// total is the number of spans in the list; spans without a timestamp
// (Zipkin's incomplete spans, which have no place on a timeline) are left
// out of the result.
func zipkinSpans(body []byte) (spans []Span, total int, err error) {
	var in []zipkinSpan
	if err := json.Unmarshal(body, &in); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "" {
			return nil, 0, errors.New("want a JSON list of Zipkin v2 spans")
		}
		return nil, 0, fmt.Errorf("decoding Zipkin v2 JSON: %w", err)
	}
	spans = make([]Span, 0, len(in))
	for i := range in {
		sp, err := in[i].span()
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				fe.path = fmt.Sprintf("spans[%d].%s", i, fe.path)
			}
			return nil, len(in), err
		}
		if sp.Start.IsZero() {
			continue
		}
		spans = append(spans, sp)
	}
	return spans, len(in), nil
}

// span converts z; an incomplete span comes back with a zero Start.
func (z *zipkinSpan) span() (Span, error) {
	if z.TraceID == "" {
		return Span{}, &fieldError{"traceId", errors.New("missing")}
	}
	traceID, err := normalizeTraceID(z.TraceID)
	if err != nil {
		return Span{}, &fieldError{"traceId", err}
	}
	if z.ID == "" {
		return Span{}, &fieldError{"id", errors.New("missing")}
	}
	spanID, err := normalizeSpanID(z.ID)
	if err != nil {
		return Span{}, &fieldError{"id", err}
	}
	var parentID string
	if z.ParentID != "" {
		if parentID, err = normalizeSpanID(z.ParentID); err != nil {
			return Span{}, &fieldError{"parentId", err}
		}
	}
	switch z.Kind {
	case "", "CLIENT", "SERVER", "PRODUCER", "CONSUMER":
	default:
		return Span{}, &fieldError{"kind", fmt.Errorf("%q is not one of CLIENT, SERVER, PRODUCER, CONSUMER", z.Kind)}
	}
	if z.Timestamp < 0 {
		return Span{}, &fieldError{"timestamp", fmt.Errorf("negative: %d", z.Timestamp)}
	}
	if z.Duration < 0 {
		return Span{}, &fieldError{"duration", fmt.Errorf("negative: %d", z.Duration)}
	}
	sp := Span{
		TraceID:  traceID,
		SpanID:   spanID,
		ParentID: parentID,
		Name:     z.Name,
		Kind:     z.Kind,
		Duration: time.Duration(z.Duration) * time.Microsecond,
		Tags:     z.Tags,
	}
	if z.Timestamp > 0 {
		sp.Start = time.UnixMicro(z.Timestamp)
	}
	if z.LocalEndpoint != nil {
		sp.Service = z.LocalEndpoint.ServiceName
	}
	// Zipkin marks a failed span with an "error" tag, whatever its value
	// (OpenTelemetry's Zipkin exporter sends an empty one).
	if _, ok := z.Tags["error"]; ok {
		sp.Error = true
	}
	markHTTPError(&sp)
	return sp, nil
}
