package translate

import (
	"math"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"
)

// faultFilterName is the HTTP filter name Istio gives the fault filter;
// routes carry their fault under this key in typed_per_filter_config.
const faultFilterName = "envoy.filters.http.fault"

// faultFilter is the fault filter of outbound and gateway HTTP connection
// managers, empty: it only acts on routes that configure it, as in Istio.
var faultFilter = mustAny(&faultv3.HTTPFault{})

// previousHostsPredicate is the typed config of Istio's retry host
// predicate envoy.retry_host_predicates.previous_hosts.
var previousHostsPredicate = mustAny(&previoushostsv3.PreviousHostsPredicate{})

func faultHTTPFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: faultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: copyAny(faultFilter)}}
}

// grpcCodes maps Istio's gRPC status names to their codes.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
	"OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// applyFault is Istio's translateFault: the VirtualService fault becomes the
// route's per-filter config for the fault filter.
func (b *builder) applyFault(out *routev3.Route, vs *vsEntry, path string, in *networking.HTTPFaultInjection) {
	f := &faultv3.HTTPFault{}
	if d := in.GetDelay(); d != nil {
		switch {
		case d.GetExponentialDelay() != nil:
			b.warnf(vs.obj, "%s.fault.delay.exponentialDelay: not translated (Istio does not support it either)", path)
		case d.GetFixedDelay() != nil:
			f.Delay = &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: d.GetFixedDelay()},
				Percentage:         faultPercent(d.GetPercentage(), d.GetPercent()),
			}
		}
	}
	if a := in.GetAbort(); a != nil {
		abort := &faultv3.FaultAbort{Percentage: faultPercent(a.GetPercentage(), 0)}
		switch e := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			code, ok := grpcCodes[strings.ToUpper(e.GrpcStatus)]
			if !ok {
				b.warnf(vs.obj, "%s.fault.abort.grpcStatus: unknown status %q; abort not translated", path, e.GrpcStatus)
				abort = nil
				break
			}
			abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
		default:
			b.warnf(vs.obj, "%s.fault.abort: only httpStatus and grpcStatus are translated", path)
			abort = nil
		}
		if abort != nil {
			f.Abort = abort
		}
	}
	if f.Delay == nil && f.Abort == nil {
		return
	}
	if out.TypedPerFilterConfig == nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	out.TypedPerFilterConfig[faultFilterName] = mustAny(f)
}

// faultPercent is Istio's translatePercentToFractionalPercent: a percentage
// with up to four decimals as parts per million; the deprecated integer
// percent as parts per hundred; neither means 100%.
func faultPercent(p *networking.Percent, legacy int32) *typev3.FractionalPercent {
	switch {
	case p != nil:
		return &typev3.FractionalPercent{Numerator: uint32(math.Round(p.GetValue() * 10000)), Denominator: typev3.FractionalPercent_MILLION}
	case legacy > 0:
		return &typev3.FractionalPercent{Numerator: uint32(legacy), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
}
