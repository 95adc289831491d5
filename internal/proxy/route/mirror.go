package route

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Mirror is one compiled RouteAction.request_mirror_policies entry
// (Envoy's ShadowPolicy): a fire-and-forget copy of the request is sent to
// Cluster for the fraction Numerator/Denominator of requests.
//
// runtime_fraction.runtime_key is refused: amime has no runtime layer, so
// only default_value applies. TraceSampled is parsed (default true, as in
// Envoy) but has no effect until amime traces.
type Mirror struct {
	Cluster      string
	Numerator    uint64
	Denominator  uint64 // 100, 10 000 or 1 000 000
	TraceSampled bool
}

// Sampled reports whether a request drawing random is mirrored: Envoy's
// ProtobufPercentHelper::evaluateFractionalPercent (random % denominator <
// numerator).
func (m *Mirror) Sampled(random uint64) bool {
	if m.Numerator >= m.Denominator {
		return true
	}
	return random%m.Denominator < m.Numerator
}

// MirrorPolicies returns the route's request mirror policies, nil when it
// has none. The slice must not be modified.
func (r *Route) MirrorPolicies() []Mirror { return r.e.mirrors }

func compileMirrors(ra *routev3.RouteAction, p string) ([]Mirror, error) {
	if len(ra.RequestMirrorPolicies) == 0 {
		return nil, nil
	}
	out := make([]Mirror, 0, len(ra.RequestMirrorPolicies))
	for i, mp := range ra.RequestMirrorPolicies {
		mpath := p + ".request_mirror_policies[" + itoa(i) + "]"
		if mp.Cluster == "" {
			// Envoy also allows cluster_header; amime does not (field check).
			return nil, errf(mpath+".cluster", "a request mirror policy needs a cluster")
		}
		m := Mirror{Cluster: mp.Cluster, Numerator: 1, Denominator: 1, TraceSampled: true}
		if rf := mp.RuntimeFraction; rf != nil {
			if rf.RuntimeKey != "" {
				return nil, errf(mpath+".runtime_fraction.runtime_key", "runtime keys are not supported by amime (no runtime layer)")
			}
			dv := rf.GetDefaultValue()
			m.Numerator = uint64(dv.GetNumerator())
			switch dv.GetDenominator() {
			case typev3.FractionalPercent_HUNDRED:
				m.Denominator = 100
			case typev3.FractionalPercent_TEN_THOUSAND:
				m.Denominator = 10000
			case typev3.FractionalPercent_MILLION:
				m.Denominator = 1000000
			default:
				return nil, errf(mpath+".runtime_fraction.default_value.denominator", "unknown denominator %v", dv.GetDenominator())
			}
		}
		if mp.TraceSampled != nil {
			m.TraceSampled = mp.TraceSampled.GetValue()
		}
		out = append(out, m)
	}
	return out, nil
}
