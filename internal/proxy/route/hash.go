package route

import (
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// HashPolicyKind is what a RouteAction.hash_policy entry hashes.
type HashPolicyKind int

const (
	HashHeader HashPolicyKind = iota
	HashCookie
	HashSourceIP
	HashQueryParameter
)

// HashPolicy is one compiled RouteAction.hash_policy entry, executed by the
// proxy to compute the request hash for RING_HASH and MAGLEV clusters.
type HashPolicy struct {
	Kind HashPolicyKind
	// Name is the header name (lower case), cookie name or query parameter.
	Name string
	// Cookie only: Path and TTL of a generated cookie; HasTTL says ttl is
	// set (a cookie is generated when absent, ttl 0 making it a session
	// cookie).
	Path     string
	TTL      time.Duration
	HasTTL   bool
	Terminal bool
}

func compileHashPolicies(hps []*routev3.RouteAction_HashPolicy, p string) ([]HashPolicy, error) {
	var out []HashPolicy
	for i, hp := range hps {
		pp := p + ".hash_policy[" + itoa(i) + "]"
		c := HashPolicy{Terminal: hp.GetTerminal()}
		switch ps := hp.PolicySpecifier.(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			if ps.Header.GetHeaderName() == "" {
				return nil, errf(pp+".header.header_name", "must not be empty")
			}
			c.Kind, c.Name = HashHeader, lower(ps.Header.GetHeaderName())
		case *routev3.RouteAction_HashPolicy_Cookie_:
			if ps.Cookie.GetName() == "" {
				return nil, errf(pp+".cookie.name", "must not be empty")
			}
			c.Kind, c.Name, c.Path = HashCookie, ps.Cookie.GetName(), ps.Cookie.GetPath()
			if d := ps.Cookie.GetTtl(); d != nil {
				if err := d.CheckValid(); err != nil || d.Seconds < 0 || d.Nanos < 0 {
					return nil, errf(pp+".cookie.ttl", "invalid duration")
				}
				c.TTL, c.HasTTL = d.AsDuration(), true
			}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !ps.ConnectionProperties.GetSourceIp() {
				// Envoy ignores a connection_properties policy without
				// source_ip.
				continue
			}
			c.Kind = HashSourceIP
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			if ps.QueryParameter.GetName() == "" {
				return nil, errf(pp+".query_parameter.name", "must not be empty")
			}
			c.Kind, c.Name = HashQueryParameter, ps.QueryParameter.GetName()
		default:
			return nil, errf(pp, "policy_specifier is not supported by amime")
		}
		out = append(out, c)
	}
	return out, nil
}

// HashPolicies returns the route's compiled hash_policy, nil when none.
func (r *Route) HashPolicies() []HashPolicy { return r.e.hashPolicies }

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// QueryParam returns the first value of the query parameter name in path
// (raw, percent-encoded), as the query_parameter hash policy reads it.
func QueryParam(path, name string) (string, bool) { return queryParam(query(path), name) }
