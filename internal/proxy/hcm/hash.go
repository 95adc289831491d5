package hcm

import (
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

// Consistent-hash load balancing: the request hash of Envoy's
// RouteAction.hash_policy, used to pick the host of RING_HASH and MAGLEV
// clusters.

// computeHash sets st.hash and st.hashOK from the route's hash policies
// when the cluster balances by hash. Policies are evaluated in order; each
// that yields a value is folded in as Envoy does (rotate left by one, xor),
// and a terminal policy that yields a value ends the evaluation. A cookie
// policy with a ttl whose cookie is absent generates one, returned to the
// client in a Set-Cookie (st.setCookie).
func (st *stream) computeHash(req *request, rt *route.Route, c *cluster.Cluster) {
	st.hashOK = false
	pols := rt.HashPolicies()
	if len(pols) == 0 || !c.IsHashLB() {
		return
	}
	var hash uint64
	ok := false
	for i := range pols {
		p := &pols[i]
		h, found := st.policyHash(req, p)
		if !found {
			continue
		}
		if ok {
			hash = bits.RotateLeft64(hash, 1) ^ h
		} else {
			hash, ok = h, true
		}
		if p.Terminal {
			break
		}
	}
	st.hash, st.hashOK = hash, ok
}

func (st *stream) policyHash(req *request, p *route.HashPolicy) (uint64, bool) {
	switch p.Kind {
	case route.HashHeader:
		var vals []string
		for _, f := range req.r.Headers {
			if f.Name == p.Name {
				vals = append(vals, f.Value)
			}
		}
		switch len(vals) {
		case 0:
			return 0, false
		case 1:
			return xxhash.Sum64String(vals[0]), true
		}
		// Several values: hash them in sorted order, so their order on
		// the wire does not matter.
		slices.Sort(vals)
		d := xxhash.New()
		for _, v := range vals {
			d.WriteString(v)
		}
		return d.Sum64(), true
	case route.HashSourceIP:
		if st.remIP == "" {
			return 0, false
		}
		return xxhash.Sum64String(st.remIP), true
	case route.HashQueryParameter:
		v, ok := route.QueryParam(req.r.Path, p.Name)
		if !ok {
			return 0, false
		}
		return xxhash.Sum64String(v), true
	case route.HashCookie:
		if v, ok := requestCookie(req, p.Name); ok {
			return xxhash.Sum64String(v), true
		}
		if !p.HasTTL || st.remote == "" {
			return 0, false
		}
		// Envoy's router generates the value from the downstream address
		// and sends it back so the client's next requests carry it.
		v := strconv.FormatUint(xxhash.Sum64String(st.remote), 16)
		st.setCookie = makeSetCookie(p.Name, v, p.Path, int64(p.TTL.Seconds()))
		return xxhash.Sum64String(v), true
	}
	return 0, false
}

// requestCookie returns the value of the first cookie called name in the
// request's Cookie headers, without surrounding double quotes.
func requestCookie(req *request, name string) (string, bool) {
	for _, f := range req.r.Headers {
		if f.Name != "cookie" {
			continue
		}
		for part := range strings.SplitSeq(f.Value, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// makeSetCookie is Envoy's Http::Utility::makeSetCookieValue.
func makeSetCookie(name, value, path string, maxAge int64) string {
	s := name + `="` + value + `"`
	if maxAge > 0 {
		s += "; Max-Age=" + strconv.FormatInt(maxAge, 10)
	}
	if path != "" {
		s += "; Path=" + path
	}
	return s + "; HttpOnly"
}
