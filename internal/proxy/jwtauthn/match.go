package jwtauthn

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// rule is a compiled RequirementRule; v is nil when it requires nothing.
type rule struct {
	match routeMatch
	v     *verifier
}

// routeMatch is the subset of RouteMatch jwt_authn rules use (the config
// rules refuse the rest), matched as Envoy's router matches it: the path
// without query string and fragment, headers with HeaderUtility semantics.
type routeMatch struct {
	path    matcher.RoutePath
	headers []matcher.Header
}

func compileMatch(m *routev3.RouteMatch, path string) (routeMatch, error) {
	var rm routeMatch
	var err error
	if rm.path, err = matcher.NewRoutePath(m, path); err != nil {
		return rm, err
	}
	for i, h := range m.GetHeaders() {
		hm, err := matcher.NewHeader(h, fmt.Sprintf("%s.headers[%d]", path, i))
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, hm)
	}
	return rm, nil
}

func (m *routeMatch) matches(req *Request) bool {
	if !m.path.Match(matcher.PathOnly(req.Path)) {
		return false
	}
	if len(m.headers) == 0 {
		return true
	}
	// Pseudo-header matchers read the request's fields, as in the router.
	mr := matcher.Request{Method: req.Method, Authority: req.Host, Path: req.Path, Scheme: req.Scheme}
	if req.Headers != nil {
		mr.Headers = *req.Headers
	}
	for i := range m.headers {
		if !m.headers[i].Match(&mr) {
			return false
		}
	}
	return true
}
