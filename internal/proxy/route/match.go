package route

import (
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	path    matcher.RoutePath // unless connect
	connect bool              // connect_matcher
	// plain is a case-sensitive prefix, matched inline: most routes are
	// (every Istio HTTPRoute without a match block is prefix "/").
	plain   bool
	grpc    bool
	headers []matcher.Header
	queries []queryMatcher
}

// matches reports whether req matches; p is the path without query string
// and fragment (and path parameters when configured).
func (m *routeMatch) matches(req *Request, p string) bool {
	switch {
	case m.plain:
		if !strings.HasPrefix(p, m.path.String.Value) {
			return false
		}
	case m.connect:
		// CONNECT and CONNECT-UDP both use the CONNECT method; other
		// extended CONNECTs reach routing as HTTP/1.1-style upgrades.
		if req.Method != "CONNECT" {
			return false
		}
	case !m.path.Match(p):
		return false
	}
	if m.grpc && !isGRPC(req) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].Match(req) {
			return false
		}
	}
	if len(m.queries) > 0 {
		q := query(req.Path)
		for i := range m.queries {
			if !m.queries[i].match(q) {
				return false
			}
		}
	}
	return true
}

// matchedLen is the length of the :path prefix that prefix_rewrite replaces.
func (m *routeMatch) matchedLen(path string) int {
	if m.connect || m.path.String.Kind == matcher.Regex {
		return len(matcher.PathOnly(path))
	}
	return min(len(m.path.String.Value), len(path))
}

// isGRPC is Envoy's Grpc::Common::isGrpcRequestHeaders: content-type is
// exactly application/grpc or starts with application/grpc+ (so
// application/grpc-web is not gRPC).
func isGRPC(req *Request) bool {
	ct, _ := req.Headers.Get("content-type")
	const g = "application/grpc"
	return strings.HasPrefix(ct, g) && (len(ct) == len(g) || ct[len(g)] == '+')
}

// queryMatcher is a compiled QueryParameterMatcher.
type queryMatcher struct {
	name       string
	hasPresent bool
	present    bool
	str        *matcher.String
}

// match uses the first occurrence of the parameter and its raw (not
// percent-decoded) value, as Envoy's parseQueryString does. present_match
// compares presence with the configured value (Envoy >= 1.34 behaviour).
func (q *queryMatcher) match(query string) bool {
	v, ok := queryParam(query, q.name)
	if q.hasPresent {
		return ok == q.present
	}
	if !ok {
		return false
	}
	if q.str == nil {
		return true
	}
	return q.str.Match(v)
}

// query returns what follows the first '?' of path ("" when none).
func query(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[i+1:]
	}
	return ""
}

// queryParam finds the first parameter called name in a raw query string:
// parameters are split on '&', a parameter without '=' has the empty value.
func queryParam(q, name string) (string, bool) {
	for q != "" {
		var p string
		if i := strings.IndexByte(q, '&'); i >= 0 {
			p, q = q[:i], q[i+1:]
		} else {
			p, q = q, ""
		}
		k, v, _ := strings.Cut(p, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}
