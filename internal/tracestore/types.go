// Package tracestore is the small trace collector the control plane embeds
// so that `amime up` shows traces with no extra server: it receives spans
// over OTLP/HTTP and Zipkin v2 JSON, keeps the newest traces in bounded
// memory, and answers searches for the console.
package tracestore

import "time"

// Span is one received span, whatever the protocol it came in.
type Span struct {
	TraceID  string `json:"traceId"`            // 32 lower-case hex digits
	SpanID   string `json:"spanId"`             // 16 lower-case hex digits
	ParentID string `json:"parentId,omitempty"` // "" for a root span
	Name     string `json:"name"`
	// Service is the reporting service (OTLP resource service.name,
	// Zipkin localEndpoint.serviceName).
	Service  string            `json:"service"`
	Kind     string            `json:"kind,omitempty"` // SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
	Start    time.Time         `json:"start"`
	Duration time.Duration     `json:"duration"`
	Tags     map[string]string `json:"tags,omitempty"`
	// Error is set when the span reports an error (OTLP status ERROR,
	// Zipkin tag "error", or http.status_code >= 500).
	Error bool `json:"error,omitempty"`
}

// Trace is every span the store holds for one trace id, sorted by start.
type Trace struct {
	ID    string `json:"id"`
	Spans []Span `json:"spans"`
}

// Summary describes a trace in search results.
type Summary struct {
	ID        string        `json:"id"`
	Root      string        `json:"root"` // "service: span name" of the root (or earliest) span
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"` // earliest start to latest end
	Spans     int           `json:"spans"`
	Services  []string      `json:"services"` // sorted, distinct
	HasErrors bool          `json:"hasErrors,omitempty"`
}

// Query selects traces. Zero fields match everything.
type Query struct {
	Service     string        // a span of the trace is from this service
	MinDuration time.Duration // the trace lasts at least this long
	Limit       int           // at most this many, newest first; 0 means 20
}
