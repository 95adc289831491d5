package matcher

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// NewPath compiles a PathMatcher: its string matcher, which MatchPath
// applies to the path without query string and fragment.
func NewPath(pm *matcherv3.PathMatcher, p string) (String, error) {
	sm := pm.GetPath()
	if sm == nil {
		return String{}, errf(p, "rule is not supported by amime")
	}
	return NewString(sm, p+".path")
}

// MatchPath applies a PathMatcher's string matcher to path (the :path
// pseudo-header) with the query string and fragment removed, as Envoy's
// PathMatcher does. A request without a path does not match.
func MatchPath(s *String, path string) bool {
	if path == "" {
		return false
	}
	return s.Match(PathOnly(path))
}

// PathOnly returns path up to its first '?' or '#', as Envoy's
// PathUtil::removeQueryAndFragment.
func PathOnly(path string) string {
	for i := 0; i < len(path); i++ {
		if c := path[i]; c == '?' || c == '#' {
			return path[:i]
		}
	}
	return path
}

// RoutePath is the path rule of a compiled envoy.config.route.v3.RouteMatch,
// which the router and the filters that select requests by RouteMatch
// (jwt_authn rules) share.
type RoutePath struct {
	// String is Prefix for prefix and path_separated_prefix, Exact for
	// path, Regex for safe_regex. IgnoreCase is !case_sensitive, which
	// Envoy ignores for safe_regex.
	String String
	// Separated is path_separated_prefix: the prefix must be followed by
	// '/' or the end of the path.
	Separated bool
}

// NewRoutePath compiles the path_specifier of rm (prefix, path, safe_regex
// or path_separated_prefix) with its case_sensitive; p is rm's field path.
// Other specifiers are refused: connect_matcher is the router's, as it
// matches the method rather than the path.
func NewRoutePath(rm *routev3.RouteMatch, p string) (RoutePath, error) {
	var r RoutePath
	s := &r.String
	s.IgnoreCase = rm.GetCaseSensitive() != nil && !rm.GetCaseSensitive().GetValue()
	switch ps := rm.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		s.Kind, s.Value = Prefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		s.Kind, s.Value = Exact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		s.Kind, s.Value, r.Separated = Prefix, ps.PathSeparatedPrefix, true
	case *routev3.RouteMatch_SafeRegex:
		re, err := CompileRegex(ps.SafeRegex.GetRegex(), p+".safe_regex.regex", true)
		if err != nil {
			return r, err
		}
		s.Kind, s.Regexp, s.IgnoreCase = Regex, re, false
	default:
		return r, errf(p, "path_specifier is not supported by amime")
	}
	return r, nil
}

// Match reports whether path, without query string and fragment, matches.
func (r *RoutePath) Match(path string) bool {
	s := &r.String
	if s.Kind != Prefix {
		return s.Match(path)
	}
	// HasPrefix inlines here: a call less on the router's hot path.
	return HasPrefix(path, s.Value, s.IgnoreCase) &&
		(!r.Separated || len(path) == len(s.Value) || path[len(s.Value)] == '/')
}
