// Package tracing is the proxy's distributed tracer: Envoy's HTTP
// connection manager tracing (HttpConnectionManager.tracing) with the
// OpenTelemetry (envoy.tracers.opentelemetry) and Zipkin
// (envoy.tracers.zipkin) providers, as an Istio sidecar or gateway uses it.
//
// # Sampling
//
// As Envoy's ConnectionManagerUtility::mutateTracingRequestHeader with the
// default UUID request-id extension: a request whose x-request-id already
// carries a trace reason (character 14 of the UUID: 'a' sampled, '9'
// forced, 'b' client) keeps it; otherwise x-client-trace-id forces a trace
// at client_sampling, x-envoy-force-trace forces one, and random_sampling
// decides on the first 8 hex digits of x-request-id modulo 10000 (so every
// hop decides alike for one request id). overall_sampling then caps the
// result. The reason is written back into x-request-id, which is how the
// next hop learns it. A sampling flag carried by the incoming trace context
// (traceparent flags, b3, x-b3-sampled, x-b3-flags debug) overrides that
// decision, as Envoy's Zipkin and OpenTelemetry drivers do: sampled=0 is
// never traced, sampled=1 or debug always is.
//
// # Propagation
//
// The incoming context is read from W3C traceparent/tracestate, B3 multi
// (x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled, x-b3-flags)
// and B3 single (b3); the configured provider's own format wins when both
// are present (traceparent for OpenTelemetry, B3 for Zipkin). A context
// that is present but malformed in every format makes the request
// untraced and its headers are left as they came (Envoy's NullSpan).
//
// Whatever the provider, the upstream request gets both formats, so an
// application forwarding either B3 or W3C headers keeps the trace:
// x-b3-traceid, x-b3-spanid, x-b3-sampled ("1"/"0"), x-b3-parentspanid
// (when the span has a parent) and traceparent (a 64-bit trace id is
// left-padded with zeros to 128 bits there). A b3 single header that came
// in is rewritten with the same values; tracestate and x-b3-flags are
// forwarded unchanged. The injected span id is the proxy's span (one span
// per hop: spawn_upstream_span false), so every retry carries the same
// context.
//
// # Spans
//
// A listener with traffic_direction INBOUND (or unspecified, Envoy's
// default) makes SERVER spans named "ingress", OUTBOUND makes CLIENT spans
// named "egress <authority>"; the route's decorator operation replaces the
// name, and x-envoy-decorator-operation carries it between the client and
// server sides as Envoy does. Istio's gateways have OUTBOUND listeners, so
// a gateway's spans are CLIENT spans; nothing depends on the node id.
// Zipkin's shared_span_context (default true) makes a SERVER span reuse
// the incoming span id, as Envoy's Zipkin driver does.
//
// Spans carry Envoy's tags (http.url, http.method, http.protocol,
// http.status_code, response_flags, upstream_cluster,
// upstream_cluster.name, upstream_address, node_id, zone,
// guid:x-request-id, user_agent, downstream_cluster, request_size,
// response_size, peer.address, component, error) and the custom tags.
//
// # Export
//
// The request path only fills a span record and offers it to a bounded
// queue (dropped, and counted, when full). A goroutine per provider
// batches records (as Envoy: at 5 spans, or every 5 s) and sends them:
// OTLP/HTTP protobuf through the OpenTelemetry SDK's otlptracehttp
// exporter, Zipkin v2 JSON written here, because the SDK's Zipkin exporter
// can neither mark a shared span nor leave out the SDK's own tags. The
// collector is reached through its cluster, resolved to a host at export
// time. The B3 propagator of the OpenTelemetry contrib module is not used:
// it needs a context.Context and a carrier per request, and the request
// path here parses the headers in place without allocating.
package tracing

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
)

// Provider type URLs.
const (
	OpenTelemetryTypeURL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
	ZipkinTypeURL        = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
)

// Kind is a tracing provider.
type Kind uint8

// The providers.
const (
	OpenTelemetry Kind = iota
	Zipkin
	numKinds
)

func (k Kind) String() string {
	if k == Zipkin {
		return "zipkin"
	}
	return "opentelemetry"
}

// Fraction is a sampling percentage as Envoy evaluates it: a draw r is in
// when r % Denominator < Numerator.
type Fraction struct {
	Numerator, Denominator uint64
}

// In reports whether draw r falls in the fraction.
func (f Fraction) In(r uint64) bool {
	if f.Denominator == 0 {
		return false
	}
	return r%f.Denominator < f.Numerator
}

// Sampling is the three sampling percentages, from the connection manager
// or overridden by a route (envoy.config.route.v3.Tracing).
type Sampling struct {
	Client, Random, Overall Fraction
}

// CustomTag is a compiled envoy.type.tracing.v3.CustomTag: a literal (or
// environment value, read at compile time) or a request header.
type CustomTag struct {
	Tag string
	// Header is the lower-case request header to read; "" for a literal.
	Header  string
	Literal string // the value, or the header's default_value
}

// Provider is where spans go.
type Provider struct {
	Kind Kind
	// Cluster is the collector's cluster; Authority the Host header and
	// Path the request path (http_uri.uri, or Zipkin's
	// collector_hostname and collector_endpoint).
	Cluster, Authority, Path string
	Scheme                   string // "http" or "https" (OpenTelemetry's uri)
	Headers                  map[string]string
	Timeout                  time.Duration
	// ServiceName overrides the node's cluster (OpenTelemetry service_name).
	ServiceName string
	// Zipkin only.
	TraceID128 bool
	Shared     bool
}

// key identifies the provider's exporter among the tracer's.
func (p *Provider) key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d|%s|%s|%s|%s|%s|%v|%v|%v", p.Kind, p.Cluster, p.Scheme, p.Authority, p.Path, p.ServiceName, p.Timeout, p.TraceID128, p.Shared)
	for _, k := range sortedKeys(p.Headers) {
		fmt.Fprintf(&b, "|%s=%s", k, p.Headers[k])
	}
	return b.String()
}

// Config is a compiled HttpConnectionManager.tracing.
type Config struct {
	Sampling      Sampling
	MaxPathTagLen int
	Tags          []CustomTag
	Provider      Provider
	provKey       string
	// sink caches the tracer's exporter for this provider (see Tracer.sink).
	sink atomic.Pointer[sink]
}

// Compile validates HttpConnectionManager.tracing (its fields are checked
// by Rules beforehand). A Tracing without provider traces nothing, as in
// Envoy: Compile returns nil then.
func Compile(t *hcmv3.HttpConnectionManager_Tracing) (*Config, error) {
	if t == nil || t.GetProvider() == nil {
		return nil, nil
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	c := &Config{
		Sampling: Sampling{
			Client:  percent(t.GetClientSampling(), 100),
			Random:  percent(t.GetRandomSampling(), 10000),
			Overall: percent(t.GetOverallSampling(), 100),
		},
		MaxPathTagLen: 256,
	}
	if v := t.GetMaxPathTagLength(); v != nil {
		c.MaxPathTagLen = int(v.GetValue())
	}
	if v := t.GetSpawnUpstreamSpan(); v.GetValue() {
		return nil, fmt.Errorf("tracing.spawn_upstream_span: true is not supported by amime (one span per proxy hop, Istio's sidecar setting)")
	}
	tags, err := CompileTags(t.GetCustomTags(), "tracing.custom_tags")
	if err != nil {
		return nil, err
	}
	c.Tags = tags
	p, err := compileProvider(t.GetProvider().GetTypedConfig())
	if err != nil {
		return nil, fmt.Errorf("tracing.provider.typed_config.%w", err)
	}
	c.Provider = p
	c.provKey = p.key()
	return c, nil
}

// percent converts an HCM Percent as Envoy's
// PROTOBUF_PERCENT_TO_ROUNDED_INTEGER_OR_DEFAULT: rounded to an integer out
// of denom (100 for client and overall, 10000 for random); unset is 100%.
func percent(p *typev3.Percent, denom uint64) Fraction {
	if p == nil {
		return Fraction{denom, denom}
	}
	return Fraction{uint64(math.Round(p.GetValue() * float64(denom) / 100)), denom}
}

// FractionOf converts a FractionalPercent (route-level tracing); unset
// is 100%, as Envoy's route Tracing defaults.
func FractionOf(p *typev3.FractionalPercent) Fraction {
	if p == nil {
		return Fraction{100, 100}
	}
	d := uint64(100)
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		d = 10_000
	case typev3.FractionalPercent_MILLION:
		d = 1_000_000
	}
	return Fraction{uint64(p.GetNumerator()), d}
}

// CompileTags compiles custom tags; path prefixes error messages.
func CompileTags(in []*tagv3.CustomTag, path string) ([]CustomTag, error) {
	var out []CustomTag
	seen := map[string]bool{}
	for i, t := range in {
		p := fmt.Sprintf("%s[%d]", path, i)
		if t.GetTag() == "" {
			return nil, fmt.Errorf("%s.tag: must not be empty", p)
		}
		if seen[t.GetTag()] {
			return nil, fmt.Errorf("%s.tag: %q is set twice", p, t.GetTag())
		}
		seen[t.GetTag()] = true
		ct := CustomTag{Tag: t.GetTag()}
		switch v := t.GetType().(type) {
		case *tagv3.CustomTag_Literal_:
			ct.Literal = v.Literal.GetValue()
		case *tagv3.CustomTag_Environment_:
			// Envoy reads the environment once, when the config loads.
			if val, ok := os.LookupEnv(v.Environment.GetName()); ok {
				ct.Literal = val
			} else {
				ct.Literal = v.Environment.GetDefaultValue()
			}
		case *tagv3.CustomTag_RequestHeader:
			if v.RequestHeader.GetName() == "" {
				return nil, fmt.Errorf("%s.request_header.name: must not be empty", p)
			}
			ct.Header = strings.ToLower(v.RequestHeader.GetName())
			ct.Literal = v.RequestHeader.GetDefaultValue()
		case *tagv3.CustomTag_Metadata_:
			return nil, fmt.Errorf("%s.metadata: metadata custom tags are not supported by amime", p)
		default:
			return nil, fmt.Errorf("%s: literal, environment or request_header is required", p)
		}
		out = append(out, ct)
	}
	return out, nil
}

func compileProvider(a *anypb.Any) (Provider, error) {
	switch a.GetTypeUrl() {
	case OpenTelemetryTypeURL:
		m := &tracev3.OpenTelemetryConfig{}
		if err := a.UnmarshalTo(m); err != nil {
			return Provider{}, fmt.Errorf("decode: %w", err)
		}
		return compileOTel(m)
	case ZipkinTypeURL:
		m := &tracev3.ZipkinConfig{}
		if err := a.UnmarshalTo(m); err != nil {
			return Provider{}, fmt.Errorf("decode: %w", err)
		}
		return compileZipkin(m)
	default:
		return Provider{}, fmt.Errorf("type_url: %q is not supported by amime (envoy.tracers.opentelemetry and envoy.tracers.zipkin are)", a.GetTypeUrl())
	}
}

func compileOTel(m *tracev3.OpenTelemetryConfig) (Provider, error) {
	if m.GetGrpcService() != nil {
		return Provider{}, fmt.Errorf("grpc_service: OTLP over gRPC is not supported by amime (use http_service)")
	}
	hs := m.GetHttpService()
	if hs == nil {
		return Provider{}, fmt.Errorf("http_service: required")
	}
	u := hs.GetHttpUri()
	p := Provider{Kind: OpenTelemetry, ServiceName: m.GetServiceName(), Cluster: u.GetCluster(), Timeout: u.GetTimeout().AsDuration()}
	if p.Cluster == "" {
		return Provider{}, fmt.Errorf("http_service.http_uri.cluster: required")
	}
	scheme, rest, ok := strings.Cut(u.GetUri(), "://")
	if !ok {
		// Envoy accepts a bare host/path and speaks plain HTTP.
		scheme, rest = "http", u.GetUri()
	}
	scheme = strings.ToLower(scheme)
	if scheme != "http" {
		return Provider{}, fmt.Errorf("http_service.http_uri.uri: scheme %q is not supported by amime (http is)", scheme)
	}
	p.Scheme = scheme
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return Provider{}, fmt.Errorf("http_service.http_uri.uri: %q has no host", u.GetUri())
	}
	p.Authority, p.Path = host, "/"+path
	if p.Timeout <= 0 {
		return Provider{}, fmt.Errorf("http_service.http_uri.timeout: must be positive")
	}
	for i, h := range hs.GetRequestHeadersToAdd() {
		k := strings.ToLower(h.GetHeader().GetKey())
		if k == "" {
			return Provider{}, fmt.Errorf("http_service.request_headers_to_add[%d].header.key: must not be empty", i)
		}
		if p.Headers == nil {
			p.Headers = map[string]string{}
		}
		p.Headers[k] = h.GetHeader().GetValue()
	}
	return p, nil
}

func compileZipkin(m *tracev3.ZipkinConfig) (Provider, error) {
	switch m.GetCollectorEndpointVersion() {
	case tracev3.ZipkinConfig_HTTP_JSON, tracev3.ZipkinConfig_DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE:
	default:
		return Provider{}, fmt.Errorf("collector_endpoint_version: %s is not supported by amime (HTTP_JSON is)", m.GetCollectorEndpointVersion())
	}
	if m.GetSplitSpansForRequest() {
		return Provider{}, fmt.Errorf("split_spans_for_request: true is not supported by amime (one span per proxy hop)")
	}
	p := Provider{Kind: Zipkin, Cluster: m.GetCollectorCluster(), Scheme: "http", Path: m.GetCollectorEndpoint(),
		Authority: m.GetCollectorHostname(), TraceID128: m.GetTraceId_128Bit(), Shared: true, Timeout: 5 * time.Second}
	if p.Cluster == "" {
		return Provider{}, fmt.Errorf("collector_cluster: required")
	}
	if !strings.HasPrefix(p.Path, "/") {
		return Provider{}, fmt.Errorf("collector_endpoint: %q must be a path starting with /", p.Path)
	}
	if p.Authority == "" {
		p.Authority = p.Cluster // Envoy's default Host is the cluster name
	}
	if v := m.GetSharedSpanContext(); v != nil {
		p.Shared = v.GetValue()
	}
	return p, nil
}

// Rules lists the tracing fields this package implements: the
// connection manager's tracing, the two providers and custom tags.
// verbose is accepted and has no effect: amime's spans carry no stream
// event logs for it to add.
func Rules() fieldcheck.Rules {
	return fieldcheck.Merge(fieldcheck.Rules{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": {
			"client_sampling", "random_sampling", "overall_sampling", "verbose", "max_path_tag_length",
			"custom_tags", "provider", "spawn_upstream_span",
		},
		"envoy.config.trace.v3.Tracing.Http":         {"name", "typed_config"},
		"envoy.config.trace.v3.OpenTelemetryConfig":  {"grpc_service", "http_service", "service_name"},
		"envoy.config.core.v3.HttpService":           {"http_uri", "request_headers_to_add"},
		"envoy.config.core.v3.HttpUri":               {"uri", "cluster", "timeout"},
		"envoy.config.core.v3.HeaderValueOption":     {"header", "append", "append_action", "keep_empty_value"},
		"envoy.config.core.v3.HeaderValue":           {"key", "value"},
		"envoy.config.core.v3.GrpcService":           {"envoy_grpc", "timeout"},
		"envoy.config.core.v3.GrpcService.EnvoyGrpc": {"cluster_name"},
		"envoy.config.trace.v3.ZipkinConfig": {
			"collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
			"collector_endpoint_version", "collector_hostname", "split_spans_for_request",
		},
		"envoy.type.v3.Percent": {"value"},
	}, TagRules())
}

// TagRules lists the custom tag fields (metadata tags are listed so that
// CompileTags can refuse them with a clear message).
func TagRules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.type.tracing.v3.CustomTag":                {"tag", "literal", "environment", "request_header", "metadata"},
		"envoy.type.tracing.v3.CustomTag.Literal":        {"value"},
		"envoy.type.tracing.v3.CustomTag.Environment":    {"name", "default_value"},
		"envoy.type.tracing.v3.CustomTag.Header":         {"name", "default_value"},
		"envoy.type.tracing.v3.CustomTag.Metadata":       {"kind", "metadata_key", "default_value"},
		"envoy.type.metadata.v3.MetadataKind":            {fieldcheck.All},
		"envoy.type.metadata.v3.MetadataKey":             {fieldcheck.All},
		"envoy.type.metadata.v3.MetadataKey.PathSegment": {fieldcheck.All},
	}
}
