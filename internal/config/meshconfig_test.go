package config

import (
	"strings"
	"testing"
)

func TestDecodeMeshConfig(t *testing.T) {
	mc, err := DecodeMeshConfig([]byte(`
accessLogFile: /dev/stdout
accessLogEncoding: JSON
enableTracing: true
defaultConfig:
  tracing: {sampling: 10}
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4318, http: {path: /v1/traces, timeout: 5s}}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
defaultProviders:
  tracing: [otel]
  accessLogging: [envoy]
`))
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetAccessLogFile() != "/dev/stdout" || mc.GetDefaultConfig().GetTracing().GetSampling() != 10 ||
		mc.GetExtensionProviders()[0].GetOpentelemetry().GetHttp().GetTimeout().AsDuration().Seconds() != 5 {
		t.Fatalf("decoded %v", mc)
	}

	// The ConfigMap as kubectl prints it.
	mc, err = DecodeMeshConfig([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    rootNamespace: mesh-root\n"))
	if err != nil || mc.GetRootNamespace() != "mesh-root" {
		t.Fatalf("configmap: %v %v", mc, err)
	}

	for _, tc := range []struct{ in, want string }{
		{"accessLogFiel: x", `mesh: unknown field "accessLogFiel"`},
		{"extensionProviders: [{name: a, zipkin: {port: 70000}}, {name: a}]", "mesh.extensionProviders[0].zipkin.service: is required"},
		{"extensionProviders: [{name: a, zipkin: {port: 70000}}, {name: a}]", `mesh.extensionProviders[1].name: "a" is defined twice`},
		{"extensionProviders: [{name: a, zipkin: {port: 70000}}, {name: a}]", "mesh.extensionProviders[1]: one provider type"},
		{"defaultProviders: {tracing: [nope]}", `mesh.defaultProviders.tracing[0]: provider "nope" is not defined in extensionProviders`},
		{"defaultConfig: {tracing: {sampling: 200}}", "mesh.defaultConfig.tracing.sampling: must be in 0..100, got 200"},
		{"kind: ConfigMap\ndata: {}", "ConfigMap has no data.mesh"},
	} {
		_, err := DecodeMeshConfig([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.in, err, tc.want)
		}
	}
}
