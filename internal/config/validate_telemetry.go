package config

import (
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/amime-mesh/amime/internal/celattr"
)

// validateTelemetry follows the Telemetry CRD's schema and istiod's
// checks: one tracing rule with one provider (what Envoy can carry on a
// listener), sampling within 0..100, non-empty names, tag overrides whose
// value matches their operation, and access log filters that compile as
// CEL over Envoy's attributes.
func validateTelemetry(v *validator, t *telemetry.Telemetry) {
	p := fpath("spec")
	validatePolicyTarget(v, p, t.Selector, t.TargetRef, t.TargetRefs)
	if len(t.TargetRefs) > 16 {
		v.add(p.f("targetRefs"), "at most 16 items, got %d", len(t.TargetRefs))
	}
	if len(t.Tracing) > 1 {
		v.add(p.f("tracing"), "only one tracing rule is supported, got %d", len(t.Tracing))
	}
	each(v, p, "tracing", t.Tracing, func(tp fpath, tr *telemetry.Tracing) {
		providers(v, tp, tr.Providers)
		if len(tr.Providers) > 1 {
			v.add(tp.f("providers"), "only one provider is supported per tracing rule, got %d", len(tr.Providers))
		}
		if s := tr.RandomSamplingPercentage; s != nil && (s.Value < 0 || s.Value > 100) {
			v.add(tp.f("randomSamplingPercentage"), "must be in 0..100, got %g", s.Value)
		}
		for _, name := range sortedKeys(tr.CustomTags) {
			cp := tp.f("customTags").k(name)
			tag := tr.CustomTags[name]
			if name == "" {
				v.add(cp, "tag name must not be empty")
			}
			switch x := tag.GetType().(type) {
			case *telemetry.Tracing_CustomTag_Literal:
				if x.Literal.GetValue() == "" {
					v.add(cp.f("literal").f("value"), "is required")
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if x.Environment.GetName() == "" {
					v.add(cp.f("environment").f("name"), "is required")
				}
			case *telemetry.Tracing_CustomTag_Header:
				if x.Header.GetName() == "" {
					v.add(cp.f("header").f("name"), "is required")
				}
			case *telemetry.Tracing_CustomTag_Formatter:
				if x.Formatter.GetValue() == "" {
					v.add(cp.f("formatter").f("value"), "is required")
				}
			default:
				v.add(cp, "one of literal, environment, header or formatter is required")
			}
		}
	})
	each(v, p, "metrics", t.Metrics, func(mp fpath, m *telemetry.Metrics) {
		providers(v, mp, m.Providers)
		if m.ReportingInterval != nil {
			v.duration(mp.f("reportingInterval"), m.ReportingInterval)
		}
		each(v, mp, "overrides", m.Overrides, func(op fpath, o *telemetry.MetricsOverrides) {
			if cm, ok := o.GetMatch().GetMetricMatch().(*telemetry.MetricSelector_CustomMetric); ok && cm.CustomMetric == "" {
				v.add(op.f("match").f("customMetric"), "must not be empty")
			}
			for _, name := range sortedKeys(o.TagOverrides) {
				tp := op.f("tagOverrides").k(name)
				to := o.TagOverrides[name]
				switch {
				case name == "":
					v.add(tp, "tag name must not be empty")
				case to.GetOperation() == telemetry.MetricsOverrides_TagOverride_UPSERT && to.GetValue() == "":
					v.add(tp.f("value"), "must be set when operation is UPSERT")
				case to.GetOperation() == telemetry.MetricsOverrides_TagOverride_REMOVE && to.GetValue() != "":
					v.add(tp.f("value"), "must not be set when operation is REMOVE")
				}
			}
		})
	})
	each(v, p, "accessLogging", t.AccessLogging, func(ap fpath, a *telemetry.AccessLogging) {
		providers(v, ap, a.Providers)
		if e := a.GetFilter().GetExpression(); e != "" {
			if _, err := celattr.Compile(e); err != nil {
				v.add(ap.f("filter").f("expression"), "%v", err)
			}
		} else if a.Filter != nil {
			v.add(ap.f("filter").f("expression"), "is required")
		}
	})
}

func providers(v *validator, p fpath, list []*telemetry.ProviderRef) {
	each(v, p, "providers", list, func(pp fpath, r *telemetry.ProviderRef) {
		if r.Name == "" {
			v.add(pp.f("name"), "is required")
		}
	})
}
