package config

import "testing"

func TestValidateTelemetry(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "mesh-wide tracing and logging", kind: Telemetry, spec: `
tracing:
- providers: [{name: zipkin}]
  randomSamplingPercentage: 10.5
  customTags:
    env: {literal: {value: prod}}
    user: {header: {name: x-user, defaultValue: anon}}
accessLogging:
- providers: [{name: envoy}]
  filter: {expression: "response.code >= 400"}
metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: REQUEST_COUNT, mode: CLIENT}
    tagOverrides:
      request_protocol: {operation: REMOVE}
      team: {value: "'payments'"}
`},
		{name: "selector", kind: Telemetry, spec: `
selector: {matchLabels: {app: reviews}}
accessLogging: [{disabled: true}]
`},
		{name: "bad values", kind: Telemetry, spec: `
tracing:
- providers: [{name: a}, {name: b}]
  randomSamplingPercentage: 101
  customTags:
    empty: {}
    lit: {literal: {}}
accessLogging:
- providers: [{name: ""}]
  filter: {expression: "response.code >="}
metrics:
- reportingInterval: 0s
  overrides:
  - tagOverrides:
      a: {operation: UPSERT}
      b: {operation: REMOVE, value: x}
`, want: []string{
			"spec.tracing[0].providers: only one provider is supported per tracing rule, got 2",
			"spec.tracing[0].randomSamplingPercentage: must be in 0..100, got 101",
			"spec.tracing[0].customTags[empty]: one of literal, environment, header or formatter is required",
			"spec.tracing[0].customTags[lit].literal.value: is required",
			"spec.metrics[0].reportingInterval: duration must be at least 1ms, got 0s",
			"spec.metrics[0].overrides[0].tagOverrides[a].value: must be set when operation is UPSERT",
			"spec.metrics[0].overrides[0].tagOverrides[b].value: must not be set when operation is REMOVE",
			"spec.accessLogging[0].providers[0].name: is required",
			`spec.accessLogging[0].filter.expression: invalid expression "response.code >=": ERROR: <input>:1:17: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`,
		}},
		{name: "two tracing rules and both targets", kind: Telemetry, spec: `
selector: {matchLabels: {app: a}}
targetRefs: [{kind: Service, name: a}]
tracing: [{}, {}]
`, want: []string{
			"spec: only one of selector, targetRef or targetRefs may be set",
			"spec.tracing: only one tracing rule is supported, got 2",
		}},
	})
}
