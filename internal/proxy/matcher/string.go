// Package matcher holds compiled forms of Envoy's generic matchers, shared by
// the router and the filters: envoy.type.matcher.v3 StringMatcher,
// PathMatcher, ValueMatcher and MetadataMatcher, envoy.config.route.v3
// HeaderMatcher and RouteMatch path specifiers, envoy.config.core.v3
// CidrRange; and the request they read.
//
// Constructors validate what protoc-gen-validate does not (regexes, CIDR
// addresses, pseudo-header names) and return an *Error naming the field
// path; the caller passes the path of the message it compiles. Match
// methods are safe for concurrent use and do not allocate, except a header
// matcher reading a header that occurs several times (its values are
// joined, as Envoy does).
package matcher

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Error is a configuration error at a field path; the router reports its
// own errors with it too (route.Error).
type Error struct {
	Path   string
	Reason string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

func errf(path, format string, args ...any) error {
	return &Error{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// StringKind is the match_pattern of a StringMatcher.
type StringKind uint8

// The StringMatcher patterns.
const (
	Exact StringKind = iota
	Prefix
	Suffix
	Contains
	Regex
)

// String is a compiled envoy.type.matcher.v3.StringMatcher. The fields are
// exported so that other compiled forms can be matched with it; build one
// from configuration with NewString.
type String struct {
	Kind  StringKind
	Value string // lower case for a case-insensitive Contains
	// IgnoreCase compares ASCII letters case-insensitively, as Envoy's
	// absl::EqualsIgnoreCase; not used with Regex.
	IgnoreCase bool
	Regexp     *regexp.Regexp // Regex: anchored, so it is RE2 FullMatch
}

// NewString compiles sm; p is its field path for errors.
func NewString(sm *matcherv3.StringMatcher, p string) (String, error) {
	s := String{IgnoreCase: sm.GetIgnoreCase()}
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.Kind, s.Value = Exact, m.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.Kind, s.Value = Prefix, m.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.Kind, s.Value = Suffix, m.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.Kind, s.Value = Contains, m.Contains
		if s.IgnoreCase {
			s.Value = header.Lower(s.Value)
		}
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy rejects the combination rather than ignoring ignore_case.
		if s.IgnoreCase {
			return s, errf(p, "ignore_case has no effect for safe_regex.")
		}
		re, err := CompileRegex(m.SafeRegex.GetRegex(), p+".safe_regex.regex", true)
		if err != nil {
			return s, err
		}
		s.Kind, s.Regexp = Regex, re
	default:
		return s, errf(p, "match_pattern is not supported by amime")
	}
	return s, nil
}

// Match reports whether v matches.
func (s *String) Match(v string) bool {
	switch s.Kind {
	case Exact:
		if s.IgnoreCase {
			return header.EqualFold(v, s.Value)
		}
		return v == s.Value
	case Prefix:
		return HasPrefix(v, s.Value, s.IgnoreCase)
	case Suffix:
		return HasSuffix(v, s.Value, s.IgnoreCase)
	case Contains:
		if s.IgnoreCase {
			return ContainsFold(v, s.Value)
		}
		return strings.Contains(v, s.Value)
	case Regex:
		return s.Regexp.MatchString(v)
	}
	return false
}

// HasPrefix is strings.HasPrefix, ASCII case-insensitive when fold is set.
func HasPrefix(s, prefix string, fold bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if fold {
		return header.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// HasSuffix is strings.HasSuffix, ASCII case-insensitive when fold is set.
func HasSuffix(s, suffix string, fold bool) bool {
	if len(s) < len(suffix) {
		return false
	}
	if fold {
		return header.EqualFold(s[len(s)-len(suffix):], suffix)
	}
	return s[len(s)-len(suffix):] == suffix
}

// ContainsFold is an ASCII case-insensitive strings.Contains; sub is lower
// case. It does not allocate, unlike lower-casing v first.
func ContainsFold(v, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(v); i++ {
		if header.EqualFold(v[i:i+n], sub) {
			return true
		}
	}
	return false
}

// CompileRegex compiles an RE2 expression with Go's regexp (RE2 syntax);
// anchored makes it match the whole input, as Envoy's safe_regex matchers
// use RE2::FullMatch. p is the field path for errors.
func CompileRegex(expr, p string, anchored bool) (*regexp.Regexp, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, errf(p, "invalid RE2: %v", err)
	}
	if anchored {
		if re, err = regexp.Compile(`^(?:` + expr + `)$`); err != nil {
			return nil, errf(p, "invalid RE2: %v", err)
		}
	}
	return re, nil
}

// ParseInt64 parses like absl::SimpleAtoi, which Envoy's range matchers
// use: surrounding ASCII whitespace and a leading sign are accepted.
func ParseInt64(s string) (int64, bool) {
	s = strings.Trim(s, " \t\n\v\f\r")
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
