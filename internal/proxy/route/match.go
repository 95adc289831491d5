package route

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

type matchKind uint8

const (
	matchPrefix matchKind = iota
	matchPath
	matchRegex
	matchConnect
	matchSeparatedPrefix
)

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	kind       matchKind
	value      string         // prefix, path or path_separated_prefix
	ignoreCase bool           // !case_sensitive; prefix/path kinds only
	re         *regexp.Regexp // safe_regex, anchored
	grpc       bool
	headers    []headerMatcher
	queries    []queryMatcher
}

// matches reports whether req matches; p is the path without query string
// and fragment (and path parameters when configured).
func (m *routeMatch) matches(req *Request, p string) bool {
	if !m.matchPath(req, p) {
		return false
	}
	if m.grpc && !isGRPC(req) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].match(req) {
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

func (m *routeMatch) matchPath(req *Request, p string) bool {
	switch m.kind {
	case matchPrefix:
		return hasPrefix(p, m.value, m.ignoreCase)
	case matchPath:
		if m.ignoreCase {
			return header.EqualFold(p, m.value)
		}
		return p == m.value
	case matchRegex:
		return m.re.MatchString(p)
	case matchConnect:
		// CONNECT and CONNECT-UDP both use the CONNECT method; other
		// extended CONNECTs reach routing as HTTP/1.1-style upgrades.
		return req.Method == "CONNECT"
	case matchSeparatedPrefix:
		return hasPrefix(p, m.value, m.ignoreCase) && (len(p) == len(m.value) || p[len(m.value)] == '/')
	}
	return false
}

// matchedLen is the length of the :path prefix that prefix_rewrite replaces.
func (m *routeMatch) matchedLen(path string) int {
	switch m.kind {
	case matchPrefix, matchPath, matchSeparatedPrefix:
		return min(len(m.value), len(path))
	}
	return len(pathOnly(path))
}

func hasPrefix(s, prefix string, fold bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if fold {
		return header.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// isGRPC is Envoy's Grpc::Common::isGrpcRequestHeaders: content-type is
// exactly application/grpc or starts with application/grpc+ (so
// application/grpc-web is not gRPC).
func isGRPC(req *Request) bool {
	ct, _ := req.Headers.Get("content-type")
	const g = "application/grpc"
	return strings.HasPrefix(ct, g) && (len(ct) == len(g) || ct[len(g)] == '+')
}

type stringKind uint8

const (
	strExact stringKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       stringKind
	value      string // lower case for a case-insensitive contains
	ignoreCase bool
	re         *regexp.Regexp // anchored: RE2 FullMatch
}

func (s *stringMatcher) match(v string) bool {
	switch s.kind {
	case strExact:
		if s.ignoreCase {
			return header.EqualFold(v, s.value)
		}
		return v == s.value
	case strPrefix:
		return hasPrefix(v, s.value, s.ignoreCase)
	case strSuffix:
		if len(v) < len(s.value) {
			return false
		}
		if s.ignoreCase {
			return header.EqualFold(v[len(v)-len(s.value):], s.value)
		}
		return v[len(v)-len(s.value):] == s.value
	case strContains:
		if s.ignoreCase {
			return containsFold(v, s.value)
		}
		return strings.Contains(v, s.value)
	case strRegex:
		return s.re.MatchString(v)
	}
	return false
}

// containsFold is an ASCII case-insensitive strings.Contains; sub is lower
// case. It does not allocate, unlike lower-casing v first.
func containsFold(v, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(v); i++ {
		if header.EqualFold(v[i:i+n], sub) {
			return true
		}
	}
	return false
}

type headerKind uint8

const (
	hdrPresent headerKind = iota
	hdrLegacyExact
	hdrRange
	hdrString
)

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	ref            headerRef
	kind           headerKind
	present        bool
	legacy         string // deprecated exact_match value; "" matches any value
	start, end     int64
	str            stringMatcher
	invert         bool
	missingAsEmpty bool
}

// match follows Envoy's HeaderUtility: values of a repeated header are
// joined with ","; present_match compares presence (then inverts); any other
// matcher fails on a missing header, whatever invert_match says, unless
// treat_missing_header_as_empty makes it match against "".
func (h *headerMatcher) match(req *Request) bool {
	v, ok := h.ref.joined(req)
	if h.kind == hdrPresent {
		return (ok == h.present) != h.invert
	}
	if !ok {
		if !h.missingAsEmpty {
			return false
		}
		v = ""
	}
	var m bool
	switch h.kind {
	case hdrLegacyExact:
		m = h.legacy == "" || v == h.legacy
	case hdrRange:
		n, ok := atoi64(v)
		m = ok && n >= h.start && n < h.end
	case hdrString:
		m = h.str.match(v)
	}
	return m != h.invert
}

// atoi64 parses like absl::SimpleAtoi: surrounding ASCII whitespace and a
// leading sign are accepted.
func atoi64(s string) (int64, bool) {
	s = strings.Trim(s, " \t\n\v\f\r")
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// queryMatcher is a compiled QueryParameterMatcher.
type queryMatcher struct {
	name       string
	hasPresent bool
	present    bool
	str        *stringMatcher
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
	return q.str.match(v)
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
