// Package fault implements the decisions of Envoy's HTTP fault injection
// filter (envoy.filters.http.fault, envoy.extensions.filters.http.fault.v3.
// HTTPFault): a fixed delay and an abort (HTTP or gRPC status), each applied
// to a configured fraction of requests. The connection manager executes the
// decisions; this package parses configuration and draws them.
//
// Implemented: delay.fixed_delay, delay.percentage, abort.http_status,
// abort.grpc_status, abort.percentage. Other HTTPFault fields (header
// controlled faults, upstream_cluster, headers, downstream_nodes,
// max_active_faults, response_rate_limit, runtime keys) are refused by
// Rules.
package fault

import (
	"fmt"
	"math/rand/v2"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
)

// Name is the filter's well-known name, the key Istio uses for it in
// http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.fault"

// TypeURL is the filter configuration's type.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

// Percent is a FractionalPercent: Numerator out of Denominator.
type Percent struct {
	Numerator, Denominator uint64
}

// Hit reports whether a request drawing random r falls in the fraction.
// A numerator above the denominator means always, as in Envoy.
func (p Percent) Hit(r uint64) bool {
	if p.Numerator == 0 || p.Denominator == 0 {
		return false
	}
	return r%p.Denominator < p.Numerator
}

// Config is a compiled HTTPFault.
type Config struct {
	Delay   time.Duration // 0: no delay fault
	DelayOn Percent

	// HTTPStatus is the abort status (0: no abort fault); GRPCStatus is
	// set (>= 0) for a gRPC abort, which Envoy answers with HTTP 200.
	HTTPStatus int
	GRPCStatus int
	AbortOn    Percent
}

// Decision is what the filter does to one request.
type Decision struct {
	Delay      time.Duration // 0: none
	HTTPStatus int           // 0: no abort
	GRPCStatus int           // -1: not a gRPC abort
}

// Decide draws the faults for one request. Envoy draws the delay and the
// abort independently.
func (c *Config) Decide(rng *rand.Rand) Decision {
	d := Decision{GRPCStatus: -1}
	if c.Delay > 0 && c.DelayOn.Hit(rng.Uint64()) {
		d.Delay = c.Delay
	}
	if c.HTTPStatus != 0 && c.AbortOn.Hit(rng.Uint64()) {
		d.HTTPStatus, d.GRPCStatus = c.HTTPStatus, c.GRPCStatus
	}
	return d
}

// Parse decodes and compiles an HTTPFault carried in an Any (the filter's
// typed_config or a typed_per_filter_config entry).
func Parse(a *anypb.Any) (*Config, error) {
	m := &faultv3.HTTPFault{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	return Compile(m)
}

// Compile validates an HTTPFault (Envoy's proto rules) and compiles it.
func Compile(m *faultv3.HTTPFault) (*Config, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("HTTPFault: %w", err)
	}
	c := &Config{GRPCStatus: -1}
	if d := m.GetDelay(); d != nil {
		if d.GetHeaderDelay() != nil {
			return nil, fmt.Errorf("delay.header_delay: not supported by amime")
		}
		c.Delay = d.GetFixedDelay().AsDuration()
		c.DelayOn = percent(d.GetPercentage())
	}
	if a := m.GetAbort(); a != nil {
		switch et := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			c.HTTPStatus = int(et.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			// Envoy's fault filter answers a gRPC abort with HTTP 200.
			c.HTTPStatus, c.GRPCStatus = 200, int(et.GrpcStatus)
		default:
			return nil, fmt.Errorf("abort: http_status or grpc_status is required (header_abort is not supported by amime)")
		}
		c.AbortOn = percent(a.GetPercentage())
	}
	return c, nil
}

// percent converts a FractionalPercent; unset means 0%, as the proto
// default (Envoy then falls back to runtime keys amime does not have).
func percent(p *typev3.FractionalPercent) Percent {
	if p == nil {
		return Percent{}
	}
	var d uint64 = 100
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		d = 10_000
	case typev3.FractionalPercent_MILLION:
		d = 1_000_000
	}
	return Percent{Numerator: uint64(p.GetNumerator()), Denominator: d}
}

// Rules lists the HTTPFault fields this package implements.
func Rules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.extensions.filters.http.fault.v3.HTTPFault":    {"delay", "abort"},
		"envoy.extensions.filters.common.fault.v3.FaultDelay": {"fixed_delay", "percentage"},
		"envoy.extensions.filters.http.fault.v3.FaultAbort":   {"http_status", "grpc_status", "percentage"},
		"envoy.type.v3.FractionalPercent":                     {"numerator", "denominator"},
	}
}
