package translate

import (
	"fmt"
	"math"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// DestinationRule connectionPool and outlierDetection, as Istio's cluster
// builder translates them (applyConnectionPool, applyOutlierDetection).

// policyPart is the part of a TrafficPolicy (or of a port-level setting)
// that effectivePart picks.
type policyPart interface {
	GetLoadBalancer() *networking.LoadBalancerSettings
	GetConnectionPool() *networking.ConnectionPoolSettings
	GetOutlierDetection() *networking.OutlierDetection
	GetTls() *networking.ClientTLSSettings
}

// effectivePart applies Istio's MergeTrafficPolicy to one part of the
// policy, as effectiveLB does for the load balancer: a matching port-level
// setting replaces the rule's, a subset's policy replaces both, and the
// subset's own port-level setting comes last.
func effectivePart[T proto.Message](dr *drEntry, subset *networking.Subset, port uint32, get func(policyPart) T) T {
	var zero T
	if dr == nil {
		return zero
	}
	pick := func(tp *networking.TrafficPolicy, v T) T {
		if tp == nil {
			return v
		}
		if p := get(tp); p.ProtoReflect().IsValid() {
			v = p
		}
		for _, pls := range tp.GetPortLevelSettings() {
			if pls.GetPort().GetNumber() == port {
				return get(pls)
			}
		}
		return v
	}
	v := pick(dr.spec.GetTrafficPolicy(), zero)
	return pick(subset.GetTrafficPolicy(), v)
}

// defaultThreshold is Istio's getDefaultCircuitBreakerThresholds: every
// limit at 2^32-1, so only what the rule sets limits anything.
func defaultThreshold() *clusterv3.CircuitBreakers_Thresholds {
	return &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(math.MaxUint32),
		MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests:        wrapperspb.UInt32(math.MaxUint32),
		MaxRetries:         wrapperspb.UInt32(math.MaxUint32),
	}
}

// applyResilience sets the cluster's circuit breakers (always, with
// Istio's defaults) and outlier detection (when the rule has one).
func applyResilience(c *clusterv3.Cluster, dr *drEntry, subset *networking.Subset, port uint32) {
	t := defaultThreshold()
	cp := effectivePart(dr, subset, port, func(p policyPart) *networking.ConnectionPoolSettings { return p.GetConnectionPool() })
	if v := cp.GetTcp().GetMaxConnections(); v > 0 {
		t.MaxConnections = wrapperspb.UInt32(uint32(v))
	}
	if d := cp.GetTcp().GetConnectTimeout(); d != nil {
		c.ConnectTimeout = d
	}
	if v := cp.GetHttp().GetHttp1MaxPendingRequests(); v > 0 {
		t.MaxPendingRequests = wrapperspb.UInt32(uint32(v))
	}
	if v := cp.GetHttp().GetHttp2MaxRequests(); v > 0 {
		t.MaxRequests = wrapperspb.UInt32(uint32(v))
	}
	if v := cp.GetHttp().GetMaxRetries(); v > 0 {
		t.MaxRetries = wrapperspb.UInt32(uint32(v))
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	applyHTTPConnectionOptions(c, cp.GetHttp())

	od := effectivePart(dr, subset, port, func(p policyPart) *networking.OutlierDetection { return p.GetOutlierDetection() })
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{
		Interval:         od.GetInterval(),
		BaseEjectionTime: od.GetBaseEjectionTime(),
		// Istio turns success-rate ejection off.
		EnforcingSuccessRate: wrapperspb.UInt32(0),
	}
	if v := od.GetMaxEjectionPercent(); v > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(v))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if v := od.GetConsecutiveLocalOriginFailures(); v != nil {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(v.GetValue())
		}
		out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
	}
	if v := od.GetConsecutiveGatewayErrors(); v != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(v.GetValue())
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforcing(v.GetValue()))
	}
	if v := od.GetConsecutive_5XxErrors(); v != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(v.GetValue())
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforcing(v.GetValue()))
	}
	c.OutlierDetection = out
	// Istio: minHealthPercent (default 0, so panic mode is off unless set)
	// becomes the panic threshold.
	if v := od.GetMinHealthPercent(); v >= 0 {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: float64(v)}}
	}
}

// enforcing is Istio's: a detector with a threshold of 0 is disabled.
func enforcing(threshold uint32) uint32 {
	if threshold > 0 {
		return 100
	}
	return 0
}

// applyHTTPConnectionOptions sets connectionPool.http idleTimeout and
// maxRequestsPerConnection as Istio does: the upstream HTTP protocol
// options' common_http_protocol_options, beside the protocol choice
// already there.
func applyHTTPConnectionOptions(c *clusterv3.Cluster, h *networking.ConnectionPoolSettings_HTTPSettings) {
	if h.GetIdleTimeout() == nil && h.GetMaxRequestsPerConnection() <= 0 {
		return
	}
	opts := &httpv3.HttpProtocolOptions{}
	if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		if err := a.UnmarshalTo(opts); err != nil {
			panic(fmt.Sprintf("translate: own protocol options: %v", err)) // built by this package
		}
	}
	opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: h.GetIdleTimeout()}
	if v := h.GetMaxRequestsPerConnection(); v > 0 {
		opts.CommonHttpProtocolOptions.MaxRequestsPerConnection = wrapperspb.UInt32(uint32(v))
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(opts)}
}
