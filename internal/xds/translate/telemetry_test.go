package translate

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// hcmOf returns the HTTP connection manager of a listener's first chain.
func hcmOf(t *testing.T, r *Resources, dir corev3.TrafficDirection) *hcmv3.HttpConnectionManager {
	t.Helper()
	for _, l := range r.Listeners {
		if l.GetTrafficDirection() != dir {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				m := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(m) {
					if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
						t.Fatal(err)
					}
					return m
				}
			}
		}
	}
	t.Fatalf("no %s HTTP connection manager", dir)
	return nil
}

func TestTelemetry(t *testing.T) {
	mc, err := config.DecodeMeshConfig([]byte(`
accessLogFile: /var/log/mesh.log
accessLogEncoding: JSON
defaultConfig: {tracing: {sampling: 5}}
extensionProviders:
- name: otel
  opentelemetry: {service: observability/collector.observability.svc.cluster.local, port: 4318, http: {path: v1/traces, headers: [{name: x-tenant, value: t1}]}}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
- name: json-file
  envoyFileAccessLog: {path: /tmp/json.log, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
- name: ghost
  zipkin: {service: ghost.example.com, port: 9411}
defaultProviders: {tracing: [otel]}
`))
	if err != nil {
		t.Fatal(err)
	}
	tel := func(ns, name string, sel map[string]string, spec *telemetry.Telemetry) *config.Object {
		if sel != nil {
			spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		return object(config.Telemetry, ns, name, spec)
	}
	reg := registry.Build([]*config.Object{
		httpService("default", "reviews.default.svc.cluster.local", 9080),
		httpService("observability", "collector.observability.svc.cluster.local", 4318),
		httpService("istio-system", "zipkin.istio-system.svc.cluster.local", 9411),
	}, nil, nil)
	proxy := func(labels map[string]string) Proxy {
		p := sidecar("default")
		p.Labels = labels
		p.Mesh.Config = mc
		p.Inbound = []InboundPort{{Name: "http", Protocol: registry.ParseProtocol("HTTP"), Port: 9080, ListenPort: 15006, TargetPort: 9080}}
		return p
	}
	translateFor := func(t *testing.T, tels []*config.Object, labels map[string]string) (*Resources, []string) {
		t.Helper()
		r, err := Translate(Input{Registry: reg, Telemetries: tels}, proxy(labels))
		if err != nil {
			t.Fatal(err)
		}
		return r, r.Warnings
	}
	otel := func(t *testing.T, m *hcmv3.HttpConnectionManager) *tracev3.OpenTelemetryConfig {
		t.Helper()
		if m.GetTracing().GetProvider().GetName() != "envoy.tracers.opentelemetry" {
			t.Fatalf("provider %v", m.GetTracing().GetProvider())
		}
		c := &tracev3.OpenTelemetryConfig{}
		if err := m.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	file := func(t *testing.T, m *hcmv3.HttpConnectionManager) []string {
		t.Helper()
		var out []string
		for _, al := range m.GetAccessLog() {
			f := &fileaccesslogv3.FileAccessLog{}
			if err := al.GetTypedConfig().UnmarshalTo(f); err != nil {
				t.Fatal(err)
			}
			s := f.GetPath()
			if js := f.GetLogFormat().GetJsonFormat(); js != nil {
				s += " json:" + js.GetFields()["response_code"].GetStringValue() + js.GetFields()["code"].GetStringValue()
			}
			if ef := al.GetFilter().GetExtensionFilter(); ef != nil {
				cel := &celfilterv3.ExpressionFilter{}
				if err := ef.GetTypedConfig().UnmarshalTo(cel); err != nil {
					t.Fatal(err)
				}
				s += " if " + cel.GetExpression()
			}
			out = append(out, s)
		}
		return out
	}

	t.Run("mesh defaults", func(t *testing.T) {
		r, warns := translateFor(t, nil, nil)
		for _, dir := range []corev3.TrafficDirection{corev3.TrafficDirection_OUTBOUND, corev3.TrafficDirection_INBOUND} {
			m := hcmOf(t, r, dir)
			if got := m.GetTracing().GetRandomSampling().GetValue(); got != 5 {
				t.Errorf("%s sampling %v, want defaultConfig.tracing.sampling 5", dir, got)
			}
			if !proto3Equal(m.GetTracing().GetSpawnUpstreamSpan(), wrapperspb.Bool(false)) {
				t.Errorf("%s spawn_upstream_span %v", dir, m.GetTracing().GetSpawnUpstreamSpan())
			}
			c := otel(t, m)
			uri := c.GetHttpService().GetHttpUri()
			if uri.GetUri() != "http://collector.observability.svc.cluster.local:4318/v1/traces" ||
				uri.GetCluster() != "outbound|4318||collector.observability.svc.cluster.local" || uri.GetTimeout().AsDuration().Seconds() != 5 {
				t.Errorf("%s http_uri %v", dir, uri)
			}
			if h := c.GetHttpService().GetRequestHeadersToAdd(); len(h) != 1 || h[0].GetHeader().GetKey() != "x-tenant" {
				t.Errorf("headers %v", h)
			}
			// accessLogFile alone turns the envoy provider on, in JSON.
			if got := file(t, m); !slices.Equal(got, []string{"/var/log/mesh.log json:%RESPONSE_CODE%"}) {
				t.Errorf("%s access logs %v", dir, got)
			}
		}
		if len(warns) != 0 {
			t.Errorf("warnings %v", warns)
		}
	})

	tels := []*config.Object{
		tel("istio-system", "mesh", nil, &telemetry.Telemetry{
			Tracing: []*telemetry.Tracing{{Providers: []*telemetry.ProviderRef{{Name: "zipkin"}}, RandomSamplingPercentage: wrapperspb.Double(10),
				CustomTags: map[string]*telemetry.Tracing_CustomTag{"team": {Type: &telemetry.Tracing_CustomTag_Literal{Literal: &telemetry.Tracing_Literal{Value: "a"}}}}}},
		}),
		tel("default", "ns", nil, &telemetry.Telemetry{
			AccessLogging: []*telemetry.AccessLogging{
				{Providers: []*telemetry.ProviderRef{{Name: "json-file"}}, Filter: &telemetry.AccessLogging_Filter{Expression: "response.code >= 400"}},
				{Providers: []*telemetry.ProviderRef{{Name: "envoy"}}, Disabled: wrapperspb.Bool(true), Match: &telemetry.AccessLogging_LogSelector{Mode: telemetry.WorkloadMode_CLIENT}},
			},
		}),
		tel("default", "reviews", map[string]string{"app": "reviews"}, &telemetry.Telemetry{
			Tracing: []*telemetry.Tracing{{Match: &telemetry.Tracing_TracingSelector{Mode: telemetry.WorkloadMode_SERVER}, RandomSamplingPercentage: wrapperspb.Double(50)}},
		}),
		// Another namespace's workload policy does not apply.
		tel("other", "reviews", map[string]string{"app": "reviews"}, &telemetry.Telemetry{
			Tracing: []*telemetry.Tracing{{DisableSpanReporting: wrapperspb.Bool(true)}},
		}),
	}
	t.Run("levels and modes", func(t *testing.T) {
		r, warns := translateFor(t, tels, map[string]string{"app": "reviews"})
		out, in := hcmOf(t, r, corev3.TrafficDirection_OUTBOUND), hcmOf(t, r, corev3.TrafficDirection_INBOUND)
		if got := out.GetTracing().GetRandomSampling().GetValue(); got != 10 {
			t.Errorf("outbound sampling %v, want the mesh Telemetry's 10", got)
		}
		if got := in.GetTracing().GetRandomSampling().GetValue(); got != 50 {
			t.Errorf("inbound sampling %v, want the workload's SERVER rule 50", got)
		}
		z := &tracev3.ZipkinConfig{}
		if err := in.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(z); err != nil {
			t.Fatal(err)
		}
		if z.GetCollectorCluster() != "outbound|9411||zipkin.istio-system.svc.cluster.local" || z.GetCollectorEndpoint() != "/api/v2/spans" ||
			z.GetCollectorEndpointVersion() != tracev3.ZipkinConfig_HTTP_JSON || !z.GetTraceId_128Bit() {
			t.Errorf("zipkin %v", z)
		}
		if ct := in.GetTracing().GetCustomTags(); len(ct) != 1 || ct[0].GetTag() != "team" || ct[0].GetLiteral().GetValue() != "a" {
			t.Errorf("custom tags %v", ct)
		}
		if got := file(t, out); !slices.Equal(got, []string{"/tmp/json.log json:%RESPONSE_CODE% if response.code >= 400"}) {
			t.Errorf("outbound access logs %v (the envoy provider is disabled for CLIENT)", got)
		}
		if got := file(t, in); !slices.Equal(got, []string{"/var/log/mesh.log json:%RESPONSE_CODE%", "/tmp/json.log json:%RESPONSE_CODE% if response.code >= 400"}) {
			t.Errorf("inbound access logs %v", got)
		}
		if len(warns) != 0 {
			t.Errorf("warnings %v", warns)
		}
	})

	t.Run("unusable providers warn and report nothing", func(t *testing.T) {
		r, warns := translateFor(t, []*config.Object{
			tel("default", "ns", nil, &telemetry.Telemetry{
				Tracing:       []*telemetry.Tracing{{Providers: []*telemetry.ProviderRef{{Name: "ghost"}}}},
				AccessLogging: []*telemetry.AccessLogging{{Providers: []*telemetry.ProviderRef{{Name: "nope"}}}},
				Metrics:       []*telemetry.Metrics{{Providers: []*telemetry.ProviderRef{{Name: "prometheus"}}}},
			}),
		}, nil)
		m := hcmOf(t, r, corev3.TrafficDirection_OUTBOUND)
		if m.GetTracing() != nil {
			t.Errorf("tracing %v", m.GetTracing())
		}
		if got := file(t, m); !slices.Equal(got, []string{"/var/log/mesh.log json:%RESPONSE_CODE%"}) {
			t.Errorf("access logs %v", got)
		}
		want := []string{
			`Telemetry default/ns: access log provider "nope" is not defined in meshConfig.extensionProviders; no access log`,
			`Telemetry default/ns: metrics: not translated yet (proxies report Istio's standard metrics with their standard labels; overrides and disabling are ignored)`,
			`Telemetry default/ns: provider "ghost": service "ghost.example.com" is not in the registry (add a ServiceEntry for it); nothing is exported`,
		}
		if !slices.Equal(warns, want) {
			t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warns, "\n"), strings.Join(want, "\n"))
		}
	})
}

func proto3Equal(a, b *wrapperspb.BoolValue) bool {
	return (a == nil) == (b == nil) && a.GetValue() == b.GetValue()
}
