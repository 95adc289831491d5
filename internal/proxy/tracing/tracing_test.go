package tracing

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

func hdrs(kv ...string) header.List {
	var h header.List
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

const (
	tid128 = "4bf92f3577b34da6a3ce929d0e0e4736"
	sid    = "00f067aa0ba902b7"
	pid    = "05e3ac9a4f6e3b90"
)

func TestExtract(t *testing.T) {
	full := TraceID{0x4bf92f3577b34da6, 0xa3ce929d0e0e4736, true}
	short := TraceID{Lo: 0xa3ce929d0e0e4736}
	tests := []struct {
		name   string
		h      header.List
		prefer Kind
		want   Incoming
	}{
		{"none", hdrs(), OpenTelemetry, Incoming{}},
		{"traceparent sampled", hdrs("traceparent", "00-"+tid128+"-"+sid+"-01"), OpenTelemetry,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagYes}},
		{"traceparent not sampled", hdrs("traceparent", "00-"+tid128+"-"+sid+"-00"), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagNo}},
		{"traceparent future version with extra field", hdrs("traceparent", "01-"+tid128+"-"+sid+"-01-extra"), OpenTelemetry,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagYes}},
		{"traceparent version ff", hdrs("traceparent", "ff-"+tid128+"-"+sid+"-01"), OpenTelemetry, Incoming{Invalid: true}},
		{"traceparent v00 too long", hdrs("traceparent", "00-"+tid128+"-"+sid+"-01-x"), OpenTelemetry, Incoming{Invalid: true}},
		{"traceparent upper case", hdrs("traceparent", "00-"+strings.ToUpper(tid128)+"-"+sid+"-01"), OpenTelemetry, Incoming{Invalid: true}},
		{"traceparent zero trace id", hdrs("traceparent", "00-"+strings.Repeat("0", 32)+"-"+sid+"-01"), OpenTelemetry, Incoming{Invalid: true}},
		{"traceparent zero span id", hdrs("traceparent", "00-"+tid128+"-"+strings.Repeat("0", 16)+"-01"), OpenTelemetry, Incoming{Invalid: true}},
		{"traceparent short", hdrs("traceparent", "00-abc"), OpenTelemetry, Incoming{Invalid: true}},
		{"b3 multi 128", hdrs("x-b3-traceid", tid128, "x-b3-spanid", sid, "x-b3-parentspanid", pid, "x-b3-sampled", "1"), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, ParentID: 0x05e3ac9a4f6e3b90, HasContext: true, Sampled: FlagYes}},
		{"b3 multi 64 upper case, true", hdrs("x-b3-traceid", strings.ToUpper(tid128[16:]), "x-b3-spanid", sid, "x-b3-sampled", "true"), Zipkin,
			Incoming{TraceID: short, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagYes}},
		{"b3 multi sampled 0", hdrs("x-b3-traceid", tid128, "x-b3-spanid", sid, "x-b3-sampled", "0"), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagNo}},
		{"b3 multi no sampled", hdrs("x-b3-traceid", tid128, "x-b3-spanid", sid), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true}},
		{"b3 flags debug", hdrs("x-b3-traceid", tid128, "x-b3-spanid", sid, "x-b3-sampled", "0", "x-b3-flags", "1"), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagDebug}},
		{"b3 sampled only", hdrs("x-b3-sampled", "0"), Zipkin, Incoming{Sampled: FlagNo}},
		{"b3 trace id without span id", hdrs("x-b3-traceid", tid128), Zipkin, Incoming{}},
		{"b3 bad trace id", hdrs("x-b3-traceid", "xyz", "x-b3-spanid", sid), Zipkin, Incoming{Invalid: true}},
		{"b3 bad span id length", hdrs("x-b3-traceid", tid128, "x-b3-spanid", "abc"), Zipkin, Incoming{Invalid: true}},
		{"b3 bad parent", hdrs("x-b3-traceid", tid128, "x-b3-spanid", sid, "x-b3-parentspanid", "zz"), Zipkin, Incoming{Invalid: true}},
		{"b3 single full", hdrs("b3", tid128+"-"+sid+"-1-"+pid), Zipkin,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, ParentID: 0x05e3ac9a4f6e3b90, HasContext: true, Sampled: FlagYes, B3Single: true}},
		{"b3 single 64 debug", hdrs("b3", tid128[16:]+"-"+sid+"-d"), Zipkin,
			Incoming{TraceID: short, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagDebug, B3Single: true}},
		{"b3 single ids only", hdrs("b3", tid128+"-"+sid), OpenTelemetry,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, B3Single: true}},
		{"b3 single deny", hdrs("b3", "0"), Zipkin, Incoming{Sampled: FlagNo, B3Single: true}},
		{"b3 single bad sampling", hdrs("b3", tid128+"-"+sid+"-x"), Zipkin, Incoming{Invalid: true, B3Single: true}},
		{"b3 single garbage", hdrs("b3", "nonsense"), Zipkin, Incoming{Invalid: true, B3Single: true}},
		{"both, otel prefers traceparent", hdrs("traceparent", "00-"+tid128+"-"+sid+"-00", "x-b3-traceid", tid128[16:], "x-b3-spanid", pid, "x-b3-sampled", "1"), OpenTelemetry,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true, Sampled: FlagNo}},
		{"both, zipkin prefers b3", hdrs("traceparent", "00-"+tid128+"-"+sid+"-00", "x-b3-traceid", tid128[16:], "x-b3-spanid", pid, "x-b3-sampled", "1"), Zipkin,
			Incoming{TraceID: short, SpanID: 0x05e3ac9a4f6e3b90, HasContext: true, Sampled: FlagYes}},
		{"bad preferred, good other", hdrs("traceparent", "garbage", "x-b3-traceid", tid128, "x-b3-spanid", sid), OpenTelemetry,
			Incoming{TraceID: full, SpanID: 0x00f067aa0ba902b7, HasContext: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Extract(tt.h, tt.prefer); got != tt.want {
				t.Errorf("Extract = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestInject(t *testing.T) {
	tests := []struct {
		name  string
		out   Outgoing
		b3    bool
		start header.List
		want  map[string]string // "" = absent
	}{
		{"128-bit sampled with parent", Outgoing{TraceID{0x4bf92f3577b34da6, 0xa3ce929d0e0e4736, true}, 0x00f067aa0ba902b7, 0x05e3ac9a4f6e3b90, true}, false,
			hdrs("x-b3-parentspanid", "old"),
			map[string]string{"traceparent": "00-" + tid128 + "-" + sid + "-01", "x-b3-traceid": tid128, "x-b3-spanid": sid,
				"x-b3-parentspanid": pid, "x-b3-sampled": "1", "b3": ""}},
		{"64-bit root not sampled", Outgoing{TraceID{Lo: 0xa3ce929d0e0e4736}, 0x00f067aa0ba902b7, 0, false}, false,
			hdrs("x-b3-parentspanid", "stale"),
			map[string]string{"traceparent": "00-0000000000000000a3ce929d0e0e4736-" + sid + "-00", "x-b3-traceid": "a3ce929d0e0e4736",
				"x-b3-spanid": sid, "x-b3-parentspanid": "", "x-b3-sampled": "0"}},
		{"b3 single rewritten", Outgoing{TraceID{Lo: 0xa3ce929d0e0e4736}, 0x00f067aa0ba902b7, 0x05e3ac9a4f6e3b90, true}, true,
			hdrs("b3", "old"),
			map[string]string{"b3": "a3ce929d0e0e4736-" + sid + "-1-" + pid, "x-b3-traceid": "a3ce929d0e0e4736"}},
		{"128-bit id with zero high half stays 32 digits", Outgoing{TraceID{0, 0xabc, true}, 3, 0, true}, false, nil,
			map[string]string{"x-b3-traceid": "00000000000000000000000000000abc"}},
		{"b3 single without parent", Outgoing{TraceID{1, 2, true}, 3, 0, false}, true, nil,
			map[string]string{"b3": "00000000000000010000000000000002-0000000000000003-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := append(header.List(nil), tt.start...)
			tt.out.Inject(&h, tt.b3)
			for k, want := range tt.want {
				got, ok := h.Get(k)
				if want == "" && ok {
					t.Errorf("%s = %q, want absent", k, got)
				} else if want != "" && got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
				if n := h.Count(k); n > 1 {
					t.Errorf("%s appears %d times", k, n)
				}
			}
			// What was injected reads back as the same context (traceparent
			// always holds 128 bits).
			in := Extract(h, OpenTelemetry)
			if !in.HasContext || in.TraceID.Hi != tt.out.TraceID.Hi || in.TraceID.Lo != tt.out.TraceID.Lo || in.SpanID != tt.out.SpanID {
				t.Errorf("round trip (w3c) = %+v", in)
			}
			in = Extract(h, Zipkin)
			if !in.HasContext || in.TraceID != tt.out.TraceID || in.SpanID != tt.out.SpanID || in.ParentID != tt.out.ParentID {
				t.Errorf("round trip (b3) = %+v", in)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	all := Sampling{Client: Fraction{100, 100}, Random: Fraction{10000, 10000}, Overall: Fraction{100, 100}}
	none := Sampling{Client: Fraction{100, 100}, Random: Fraction{0, 10000}, Overall: Fraction{100, 100}}
	// 0x0000270f = 9999: 9999 % 10000 = 9999; 0x00000001 % 10000 = 1.
	const lowRID = "00000001-1111-4111-8111-111111111111"
	const highRID = "0000270f-1111-4111-8111-111111111111"
	tests := []struct {
		name    string
		h       header.List
		s       Sampling
		want    Reason
		wantRID string
	}{
		{"no request id", hdrs(), all, NotTraceable, ""},
		{"random 100%", hdrs("x-request-id", lowRID), all, RandomSampling, "00000001-1111-a111-8111-111111111111"},
		{"random 0%", hdrs("x-request-id", lowRID), none, NotTraceable, lowRID},
		{"random 0.02% by request id: in", hdrs("x-request-id", lowRID), Sampling{Fraction{100, 100}, Fraction{2, 10000}, Fraction{100, 100}}, RandomSampling, "00000001-1111-a111-8111-111111111111"},
		{"random 0.02% by request id: out", hdrs("x-request-id", highRID), Sampling{Fraction{100, 100}, Fraction{2, 10000}, Fraction{100, 100}}, NotTraceable, highRID},
		{"already sampled upstream", hdrs("x-request-id", "00000001-1111-a111-8111-111111111111"), none, RandomSampling, "00000001-1111-a111-8111-111111111111"},
		{"already forced", hdrs("x-request-id", "00000001-1111-9111-8111-111111111111"), none, ServiceForced, "00000001-1111-9111-8111-111111111111"},
		{"client trace id", hdrs("x-request-id", lowRID, "x-client-trace-id", "x"), none, ClientForced, "00000001-1111-b111-8111-111111111111"},
		{"client trace id at 0% client sampling", hdrs("x-request-id", lowRID, "x-client-trace-id", "x"), Sampling{Fraction{0, 100}, Fraction{0, 10000}, Fraction{100, 100}}, NotTraceable, lowRID},
		{"force trace", hdrs("x-request-id", lowRID, "x-envoy-force-trace", "1"), none, ServiceForced, "00000001-1111-9111-8111-111111111111"},
		{"overall 0% vetoes", hdrs("x-request-id", "00000001-1111-a111-8111-111111111111"), Sampling{Fraction{100, 100}, Fraction{10000, 10000}, Fraction{0, 100}}, NotTraceable, lowRID},
		{"not a uuid: sampled but not rewritten", hdrs("x-request-id", "0000000112"), all, RandomSampling, "0000000112"},
		{"not hex", hdrs("x-request-id", "zzzzzzzz-1111-4111-8111-111111111111"), all, NotTraceable, "zzzzzzzz-1111-4111-8111-111111111111"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := append(header.List(nil), tt.h...)
			s := tt.s
			if got := Decide(&h, &s, rng); got != tt.want {
				t.Errorf("reason = %v, want %v", got, tt.want)
			}
			if got := h.Value("x-request-id"); got != tt.wantRID {
				t.Errorf("x-request-id = %q, want %q", got, tt.wantRID)
			}
		})
	}
}

func otelConfig(uri, cluster string) *anypb.Any {
	a, _ := anypb.New(&tracev3.OpenTelemetryConfig{
		ServiceName: "svc",
		HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: uri,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster}, Timeout: durationpb.New(time.Second)}},
	})
	return a
}

func tracingWith(p *anypb.Any, mod func(*hcmv3.HttpConnectionManager_Tracing)) *hcmv3.HttpConnectionManager_Tracing {
	t := &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: p}}}
	if mod != nil {
		mod(t)
	}
	return t
}

func anyOf(m proto.Message) *anypb.Any {
	a, _ := anypb.New(m)
	return a
}

func TestCompile(t *testing.T) {
	good := otelConfig("http://otel.istio-system:4318/v1/traces", "otel")
	c, err := Compile(tracingWith(good, func(t *hcmv3.HttpConnectionManager_Tracing) {
		t.RandomSampling = &typev3.Percent{Value: 1.5}
		t.ClientSampling = &typev3.Percent{Value: 50}
		t.CustomTags = []*tagv3.CustomTag{
			{Tag: "lit", Type: &tagv3.CustomTag_Literal_{Literal: &tagv3.CustomTag_Literal{Value: "v"}}},
			{Tag: "hdr", Type: &tagv3.CustomTag_RequestHeader{RequestHeader: &tagv3.CustomTag_Header{Name: "X-Tenant", DefaultValue: "none"}}},
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sampling.Random != (Fraction{150, 10000}) || c.Sampling.Client != (Fraction{50, 100}) || c.Sampling.Overall != (Fraction{100, 100}) {
		t.Errorf("sampling = %+v", c.Sampling)
	}
	if c.MaxPathTagLen != 256 {
		t.Errorf("max path = %d", c.MaxPathTagLen)
	}
	if p := c.Provider; p.Kind != OpenTelemetry || p.Authority != "otel.istio-system:4318" || p.Path != "/v1/traces" || p.Cluster != "otel" || p.ServiceName != "svc" {
		t.Errorf("provider = %+v", p)
	}
	if len(c.Tags) != 2 || c.Tags[1] != (CustomTag{Tag: "hdr", Header: "x-tenant", Literal: "none"}) {
		t.Errorf("tags = %+v", c.Tags)
	}
	if c, err := Compile(&hcmv3.HttpConnectionManager_Tracing{}); c != nil || err != nil {
		t.Errorf("no provider: %v %v, want nil nil", c, err)
	}
	z, err := Compile(tracingWith(anyOf(&tracev3.ZipkinConfig{CollectorCluster: "zipkin", CollectorEndpoint: "/api/v2/spans",
		CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON}), nil))
	if err != nil {
		t.Fatal(err)
	}
	if p := z.Provider; !p.Shared || p.Authority != "zipkin" || p.TraceID128 {
		t.Errorf("zipkin defaults = %+v (shared_span_context defaults to true, host to the cluster)", p)
	}

	errs := []struct {
		name string
		t    *hcmv3.HttpConnectionManager_Tracing
		want string
	}{
		{"grpc otel", tracingWith(anyOf(&tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{}}), nil), "tracing.provider.typed_config.grpc_service"},
		{"no cluster", tracingWith(otelConfig("http://x/v1/traces", ""), nil), "tracing.provider.typed_config.http_service.http_uri.cluster"},
		{"https", tracingWith(otelConfig("https://x/v1/traces", "c"), nil), "tracing.provider.typed_config.http_service.http_uri.uri"},
		{"zipkin proto", tracingWith(anyOf(&tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "/x", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_PROTO}), nil),
			"tracing.provider.typed_config.collector_endpoint_version"},
		{"zipkin split", tracingWith(anyOf(&tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "/x", SplitSpansForRequest: true}), nil),
			"tracing.provider.typed_config.split_spans_for_request"},
		{"unknown provider", tracingWith(anyOf(&tracev3.DatadogConfig{}), nil), "tracing.provider.typed_config.type_url"},
		{"spawn upstream span", tracingWith(good, func(t *hcmv3.HttpConnectionManager_Tracing) { t.SpawnUpstreamSpan = wrapperspb.Bool(true) }), "tracing.spawn_upstream_span"},
		{"metadata tag", tracingWith(good, func(t *hcmv3.HttpConnectionManager_Tracing) {
			t.CustomTags = []*tagv3.CustomTag{{Tag: "m", Type: &tagv3.CustomTag_Metadata_{Metadata: &tagv3.CustomTag_Metadata{}}}}
		}), "tracing.custom_tags[0].metadata"},
		{"duplicate tag", tracingWith(good, func(t *hcmv3.HttpConnectionManager_Tracing) {
			lit := &tagv3.CustomTag_Literal_{Literal: &tagv3.CustomTag_Literal{Value: "v"}}
			t.CustomTags = []*tagv3.CustomTag{{Tag: "a", Type: lit}, {Tag: "a", Type: lit}}
		}), "tracing.custom_tags[1].tag"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.t)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("err = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	r := Rules()
	tests := []struct {
		name string
		m    proto.Message
		want string // "" = accepted
	}{
		{"supported", tracingWith(otelConfig("http://x/v1", "c"), func(t *hcmv3.HttpConnectionManager_Tracing) { t.Verbose = true }), ""},
		{"otel sampler", tracingWith(anyOf(&tracev3.OpenTelemetryConfig{Sampler: &corev3.TypedExtensionConfig{Name: "x"}}), nil), "provider.typed_config.sampler"},
		{"otel resource detectors", tracingWith(anyOf(&tracev3.OpenTelemetryConfig{ResourceDetectors: []*corev3.TypedExtensionConfig{{Name: "x"}}}), nil), "provider.typed_config.resource_detectors"},
		{"zipkin trace_context_option", tracingWith(anyOf(&tracev3.ZipkinConfig{TraceContextOption: 1}), nil), "provider.typed_config.trace_context_option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Check(tt.m)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			fe, ok := err.(*fieldcheck.Error)
			if !ok || fe.Path != tt.want {
				t.Errorf("err = %v, want path %q", err, tt.want)
			}
		})
	}
}

func TestSpanTags(t *testing.T) {
	sp := &Span{Server: true, Method: "GET", Authority: "reviews:9080", Path: "/reviews/0?x=" + strings.Repeat("a", 300), MaxPath: 20,
		Protocol: "HTTP/1.1", RequestID: "rid", Peer: "10.0.0.1:5555", UpstreamCluster: "alt", UpstreamClusterName: "outbound|9080||reviews",
		Status: 503, Flags: streaminfo.UpstreamConnectionFailure, RequestSize: 3, ResponseSize: 4, Custom: []Tag{{"k", "v"}}}
	got := map[string]string{}
	for _, tg := range sp.Tags("node", "zone-a") {
		got[tg.Key] = tg.Value
	}
	want := map[string]string{
		"node_id": "node", "zone": "zone-a", "guid:x-request-id": "rid", "http.url": "http://reviews:9080/reviews/0?x=aaaaaaa",
		"http.method": "GET", "downstream_cluster": "-", "user_agent": "-", "http.protocol": "HTTP/1.1", "peer.address": "10.0.0.1",
		"request_size": "3", "response_size": "4", "component": "proxy", "upstream_cluster": "alt", "upstream_cluster.name": "outbound|9080||reviews",
		"http.status_code": "503", "response_flags": "UF", "error": "true", "k": "v",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if sp.OperationName() != "ingress" {
		t.Errorf("name = %q", sp.OperationName())
	}
	sp.Server, sp.Host, sp.Status = false, "reviews:9080", 200
	if sp.OperationName() != "egress reviews:9080" || sp.Error() {
		t.Errorf("egress name %q error %v", sp.OperationName(), sp.Error())
	}
}

// An unsampled request on a tracing listener allocates no span: only the
// propagation headers (one string for all of them).
func TestUnsampledAllocs(t *testing.T) {
	c, err := Compile(tracingWith(otelConfig("http://x/v1", "c"), func(t *hcmv3.HttpConnectionManager_Tracing) {
		t.RandomSampling = &typev3.Percent{Value: 0}
	}))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	base := hdrs("x-request-id", "00000001-1111-4111-8111-111111111111", "host", "a", "user-agent", "b")
	h := make(header.List, 0, 16)
	var a Active
	var info streaminfo.Info
	n := testing.AllocsPerRun(100, func() {
		h = append(h[:0], base...)
		a.Reset()
		r := Request{Headers: &h, Ingress: true, Authority: "a"}
		a.Begin(nil, c, &r, rng)
		a.Inject(&h)
		a.Finish(&info, Upstream{})
	})
	if n > 1 {
		t.Errorf("%v allocations per unsampled request, want at most 1", n)
	}
}

// A full queue drops spans and counts them; Close exports what is queued.
func TestQueueDropAndFlush(t *testing.T) {
	var mu sync.Mutex
	got := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spans []ZipkinSpan
		_ = json.NewDecoder(r.Body).Decode(&spans)
		mu.Lock()
		got += len(spans)
		mu.Unlock()
		w.WriteHeader(202)
	}))
	defer srv.Close()
	tr := New(Options{QueueSize: 3, FlushInterval: time.Hour, MinFlushSpans: 100,
		Resolve: func(string) (string, error) { return strings.TrimPrefix(srv.URL, "http://"), nil }})
	c, err := Compile(tracingWith(anyOf(&tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "/api/v2/spans"}), nil))
	if err != nil {
		t.Fatal(err)
	}
	tr.enqueue(c, &Span{}) // before Start: dropped
	tr.Start()
	// The exporter goroutine may take one span off the queue before
	// blocking on its batch; the rest beyond the queue's 3 are dropped.
	for i := 0; i < 10; i++ {
		tr.enqueue(c, &Span{TraceID: TraceID{Lo: uint64(i + 1)}, SpanID: 1, Start: time.Now()})
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := tr.Stats(Zipkin)
	mu.Lock()
	defer mu.Unlock()
	if st.Sent+st.Dropped != 11 || uint64(got) != st.Sent || st.Sent < 3 || st.Sent > 4 {
		t.Errorf("stats %+v, collector got %d: want 3 or 4 sent, the rest dropped", st, got)
	}
	tr.enqueue(c, &Span{}) // after Close: dropped
	if tr.Stats(Zipkin).Dropped != st.Dropped+1 {
		t.Error("span after Close not counted as dropped")
	}
	mc := make(chan prometheus.Metric, 8)
	tr.Collector().Collect(mc)
	if len(mc) != 4 {
		t.Errorf("%d metrics, want sent and dropped per provider", len(mc))
	}
}
