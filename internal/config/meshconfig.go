package config

import (
	"encoding/json"
	"errors"
	"fmt"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// DecodeMeshConfig reads Istio's MeshConfig, as the "mesh" key of the
// istio ConfigMap holds it, from YAML or JSON. The whole ConfigMap
// (kind: ConfigMap, data.mesh) is accepted too, so `kubectl get cm istio
// -o yaml` output works as is. Unknown fields are errors naming the field.
func DecodeMeshConfig(data []byte) (*meshconfig.MeshConfig, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if json.Unmarshal(j, &cm) == nil && cm.Kind == "ConfigMap" {
		mesh, ok := cm.Data["mesh"]
		if !ok {
			return nil, errors.New("mesh config: ConfigMap has no data.mesh")
		}
		if j, err = yaml.YAMLToJSON([]byte(mesh)); err != nil {
			return nil, fmt.Errorf("mesh config: data.mesh: %w", err)
		}
	}
	mc := &meshconfig.MeshConfig{}
	if string(j) == "null" {
		return mc, nil
	}
	verr := &ValidationError{Kind: "MeshConfig"}
	decodeMessage(j, mc, "mesh", verr)
	if len(verr.Errors) == 0 {
		validateMeshConfig(&validator{errs: verr.Errors}, mc, verr)
	}
	if len(verr.Errors) > 0 {
		return nil, verr
	}
	return mc, nil
}

func validateMeshConfig(v *validator, mc *meshconfig.MeshConfig, verr *ValidationError) {
	p := fpath("mesh")
	names := map[string]bool{}
	for i, ep := range mc.ExtensionProviders {
		ip := p.f("extensionProviders").i(i)
		switch {
		case ep.GetName() == "":
			v.add(ip.f("name"), "is required")
		case names[ep.GetName()]:
			v.add(ip.f("name"), "%q is defined twice", ep.GetName())
		}
		names[ep.GetName()] = true
		service := func(fp fpath, svc string, port uint32) {
			if svc == "" {
				v.add(fp.f("service"), "is required")
			}
			v.addIf(fp.f("port"), checkPort(port))
		}
		switch x := ep.GetProvider().(type) {
		case *meshconfig.MeshConfig_ExtensionProvider_Zipkin:
			service(ip.f("zipkin"), x.Zipkin.GetService(), x.Zipkin.GetPort())
		case *meshconfig.MeshConfig_ExtensionProvider_Opentelemetry:
			service(ip.f("opentelemetry"), x.Opentelemetry.GetService(), x.Opentelemetry.GetPort())
		case *meshconfig.MeshConfig_ExtensionProvider_EnvoyOtelAls:
			service(ip.f("envoyOtelAls"), x.EnvoyOtelAls.GetService(), x.EnvoyOtelAls.GetPort())
		case nil:
			v.add(ip, "one provider type (zipkin, opentelemetry, envoyFileAccessLog, prometheus, …) is required")
		}
	}
	dp := mc.GetDefaultProviders()
	for _, d := range []struct {
		field string
		list  []string
	}{{"tracing", dp.GetTracing()}, {"metrics", dp.GetMetrics()}, {"accessLogging", dp.GetAccessLogging()}} {
		for i, n := range d.list {
			if !names[n] && !builtinProvider(n) {
				v.add(p.f("defaultProviders").f(d.field).i(i), "provider %q is not defined in extensionProviders", n)
			}
		}
	}
	if s := mc.GetDefaultConfig().GetTracing().GetSampling(); s < 0 || s > 100 {
		v.add(p.f("defaultConfig").f("tracing").f("sampling"), "must be in 0..100, got %g", s)
	}
	verr.Errors = v.errs
}

// builtinProvider: providers Istio defines without extensionProviders
// ("envoy": the mesh's accessLogFile; "prometheus": the standard metrics).
func builtinProvider(name string) bool { return name == "envoy" || name == "prometheus" }
