package route

import (
	"regexp"
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
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
	return matcher.HasPrefix(s, prefix, fold)
}

// isGRPC is Envoy's Grpc::Common::isGrpcRequestHeaders: content-type is
// exactly application/grpc or starts with application/grpc+ (so
// application/grpc-web is not gRPC).
func isGRPC(req *Request) bool {
	ct, _ := req.Headers.Get("content-type")
	const g = "application/grpc"
	return strings.HasPrefix(ct, g) && (len(ct) == len(g) || ct[len(g)] == '+')
}

// The compiled matchers below keep the field layout compile.go fills in;
// their matching is internal/proxy/matcher's, shared with the filters.
type stringKind = matcher.StringKind

const (
	strExact    = matcher.Exact
	strPrefix   = matcher.Prefix
	strSuffix   = matcher.Suffix
	strContains = matcher.Contains
	strRegex    = matcher.Regex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind       stringKind
	value      string // lower case for a case-insensitive contains
	ignoreCase bool
	re         *regexp.Regexp // anchored: RE2 FullMatch
}

func (s *stringMatcher) match(v string) bool {
	m := matcher.String{Kind: s.kind, Value: s.value, IgnoreCase: s.ignoreCase, Regexp: s.re}
	return m.Match(v)
}

type headerKind = matcher.HeaderKind

const (
	hdrPresent     = matcher.HeaderPresent
	hdrLegacyExact = matcher.HeaderExact
	hdrRange       = matcher.HeaderRange
	hdrString      = matcher.HeaderString
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

// match follows Envoy's HeaderUtility (see matcher.Header.MatchValue) on
// the values of the header joined with ",".
func (h *headerMatcher) match(req *Request) bool {
	v, ok := h.ref.joined(req)
	m := matcher.Header{
		Kind: h.kind, Present: h.present, Exact: h.legacy, Start: h.start, End: h.end,
		String: matcher.String{Kind: h.str.kind, Value: h.str.value, IgnoreCase: h.str.ignoreCase, Regexp: h.str.re},
		Invert: h.invert, MissingAsEmpty: h.missingAsEmpty,
	}
	return m.MatchValue(v, ok)
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
