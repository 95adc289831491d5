package jwtauthn

import (
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// rule is a compiled RequirementRule; v is nil when it requires nothing.
type rule struct {
	match routeMatch
	v     *verifier
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

// routeMatch is the subset of RouteMatch jwt_authn rules use. As Envoy's
// router, it matches the path without its query string.
type routeMatch struct {
	kind          pathKind
	value         string
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatch
}

func compileMatch(m *routev3.RouteMatch, path string) (routeMatch, error) {
	rm := routeMatch{caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = pathExact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = pathSeparatedPrefix, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex.GetRegex(), path+".safe_regex.regex")
		if err != nil {
			return rm, err
		}
		rm.kind, rm.re = pathRegex, re
	default:
		return rm, fmt.Errorf("%s: path specifier %T is not supported by amime", path, ps)
	}
	if !rm.caseSensitive {
		rm.value = strings.ToLower(rm.value)
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatch(h, fmt.Sprintf("%s.headers[%d]", path, i))
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, hm)
	}
	return rm, nil
}

// compileRegex compiles an RE2 expression matching the whole input, as
// Envoy's safe_regex does.
func compileRegex(expr, path string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return re, nil
}

func (m *routeMatch) matches(req *Request) bool {
	p := req.Path
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	switch m.kind {
	case pathPrefix:
		if !hasPrefix(p, m.value, m.caseSensitive) {
			return false
		}
	case pathExact:
		if len(p) != len(m.value) || !hasPrefix(p, m.value, m.caseSensitive) {
			return false
		}
	case pathSeparatedPrefix:
		if !hasPrefix(p, m.value, m.caseSensitive) {
			return false
		}
		if len(p) > len(m.value) && p[len(m.value)] != '/' {
			return false
		}
	case pathRegex:
		if !m.re.MatchString(p) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matches(req.Headers) {
			return false
		}
	}
	return true
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if caseSensitive {
		return s[:len(prefix)] == prefix
	}
	return header.EqualFold(s[:len(prefix)], prefix)
}

// headerMatch is a compiled HeaderMatcher.
type headerMatch struct {
	name    string
	present *bool // present_match
	str     stringMatch
	invert  bool
}

type stringMatch struct {
	kind       uint8 // 0 exact, 1 prefix, 2 suffix, 3 contains, 4 regex
	value      string
	re         *regexp.Regexp
	ignoreCase bool
}

func compileHeaderMatch(h *routev3.HeaderMatcher, path string) (headerMatch, error) {
	hm := headerMatch{name: header.Lower(h.GetName()), invert: h.GetInvertMatch()}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		hm.str = stringMatch{kind: 0, value: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.str = stringMatch{kind: 1, value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.str = stringMatch{kind: 2, value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.str = stringMatch{kind: 3, value: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		hm.str.kind = 4
		hm.str.re, err = compileRegex(s.SafeRegexMatch.GetRegex(), path+".safe_regex_match.regex")
	case *routev3.HeaderMatcher_PresentMatch:
		v := s.PresentMatch
		hm.present = &v
	case *routev3.HeaderMatcher_StringMatch:
		hm.str, err = compileStringMatch(s.StringMatch, path+".string_match")
	case nil:
		// No specifier: the header must be present.
		v := true
		hm.present = &v
	default:
		return hm, fmt.Errorf("%s: header match %T is not supported by amime", path, s)
	}
	return hm, err
}

func compileStringMatch(m *matcherv3.StringMatcher, path string) (stringMatch, error) {
	sm := stringMatch{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = 0, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = 1, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = 2, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = 3, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		if sm.ignoreCase {
			return sm, fmt.Errorf("%s: ignore_case has no effect for safe_regex", path)
		}
		re, err := compileRegex(p.SafeRegex.GetRegex(), path+".safe_regex.regex")
		if err != nil {
			return sm, err
		}
		sm.kind, sm.re = 4, re
	default:
		return sm, fmt.Errorf("%s: string match %T is not supported by amime", path, p)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (s *stringMatch) matches(v string) bool {
	if s.kind == 4 {
		return s.re.MatchString(v)
	}
	if s.ignoreCase {
		v = strings.ToLower(v)
	}
	switch s.kind {
	case 0:
		return v == s.value
	case 1:
		return strings.HasPrefix(v, s.value)
	case 2:
		return strings.HasSuffix(v, s.value)
	default:
		return strings.Contains(v, s.value)
	}
}

// matches applies the matcher to every value of the header joined with
// ",", as Envoy's HeaderUtility does for repeated headers.
func (h *headerMatch) matches(l *header.List) bool {
	var r bool
	n := 0
	if l != nil {
		n = l.Count(h.name)
	}
	switch {
	case h.present != nil:
		r = (n > 0) == *h.present
	case n == 0:
		return false // an absent header never matches, inverted or not
	case n == 1:
		r = h.str.matches(l.Value(h.name))
	default:
		var vals []string
		for _, f := range *l {
			if f.Name == h.name {
				vals = append(vals, f.Value)
			}
		}
		r = h.str.matches(strings.Join(vals, ","))
	}
	return r != h.invert
}
