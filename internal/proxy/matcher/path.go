package matcher

import (
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

// PathOnly returns path up to its first '?' or '#'.
func PathOnly(path string) string {
	for i := 0; i < len(path); i++ {
		if c := path[i]; c == '?' || c == '#' {
			return path[:i]
		}
	}
	return path
}
