package matcher

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Request is the part of an HTTP request that matchers read; the proxy
// fills it from HTTP/1.1 or HTTP/2. The router's route.Request is this
// type, so the router and the filters share one request value.
type Request struct {
	Method    string
	Authority string      // Host / :authority as received, may carry a port
	Path      string      // :path including the query string
	Scheme    string      // "http" / "https"
	Headers   header.List // regular headers, lower-case names
}

// pseudo identifies the Request fields that stand for pseudo-headers.
type pseudo uint8

const (
	notPseudo pseudo = iota
	pseudoMethod
	pseudoAuthority
	pseudoPath
	pseudoScheme
	pseudoUnknown
)

// pseudoOf maps a lower-case header name to the request field it reads.
// "host" is :authority, as in Envoy's request header map, where the legacy
// Host name is an alias of :authority.
func pseudoOf(name string) pseudo {
	switch name {
	case ":method":
		return pseudoMethod
	case ":authority", "host":
		return pseudoAuthority
	case ":path":
		return pseudoPath
	case ":scheme":
		return pseudoScheme
	}
	if strings.HasPrefix(name, ":") {
		return pseudoUnknown
	}
	return notPseudo
}

// HeaderName names a request header, resolved once (lower-cased, and
// whether it is a pseudo-header) so that lookups on the request path do
// not compare pseudo-header names.
type HeaderName struct {
	Name  string // lower case
	field pseudo
}

// NewHeaderName resolves name, in any case.
func NewHeaderName(name string) HeaderName {
	n := header.Lower(name)
	return HeaderName{Name: n, field: pseudoOf(n)}
}

// IsPseudo reports whether the header is one that Request keeps in a field
// (:method, :authority or host, :path, :scheme) or another pseudo-header,
// which Request does not keep.
func (h HeaderName) IsPseudo() bool { return h.field != notPseudo }

// Available reports whether a Request can carry the header: a regular
// header, or one of the pseudo-headers Request keeps in a field.
func (h HeaderName) Available() bool { return h.field != pseudoUnknown }

// First returns the header's first value. An empty pseudo-header counts as
// absent (Request leaves absent ones empty).
func (h HeaderName) First(r *Request) (string, bool) {
	if h.field == notPseudo {
		return r.Headers.Get(h.Name)
	}
	return h.pseudoValue(r)
}

// Joined returns the header's values joined with ",", as Envoy's
// getAllOfHeaderAsString; a single value is returned without copying.
func (h HeaderName) Joined(r *Request) (string, bool) {
	if h.field == notPseudo {
		return joined(r.Headers, h.Name)
	}
	return h.pseudoValue(r)
}

func (h HeaderName) pseudoValue(r *Request) (string, bool) {
	var v string
	switch h.field {
	case pseudoMethod:
		v = r.Method
	case pseudoAuthority:
		v = r.Authority
	case pseudoPath:
		v = r.Path
	case pseudoScheme:
		v = r.Scheme
	}
	return v, v != ""
}

// Header returns the value of a request header (or pseudo-header, by its
// HTTP/2 name), several lines joined with ",". name is lower case.
func (r *Request) Header(name string) (string, bool) {
	return HeaderName{Name: name, field: pseudoOf(name)}.Joined(r)
}

func joined(hs header.List, name string) (string, bool) {
	first, n := -1, 0
	for i := range hs {
		if hs[i].Name == name {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	switch n {
	case 0:
		return "", false
	case 1:
		return hs[first].Value, true
	}
	var b strings.Builder
	for i := first; i < len(hs); i++ {
		if hs[i].Name == name {
			if i != first {
				b.WriteByte(',')
			}
			b.WriteString(hs[i].Value)
		}
	}
	return b.String(), true
}

// HeaderKind is the header_match_specifier of a HeaderMatcher.
type HeaderKind uint8

// The HeaderMatcher specifiers; the legacy prefix/suffix/contains/regex
// forms compile to HeaderString.
const (
	HeaderPresent HeaderKind = iota
	HeaderExact              // deprecated exact_match
	HeaderRange
	HeaderString
)

// Header is a compiled envoy.config.route.v3.HeaderMatcher. Build one with
// NewHeader; the exported fields let other compiled forms reuse MatchValue.
type Header struct {
	HeaderName
	Kind           HeaderKind
	Present        bool   // HeaderPresent: whether the header must be present
	Exact          string // HeaderExact; "" matches any value, as in Envoy
	Start, End     int64  // HeaderRange: [Start, End)
	String         String // HeaderString
	Invert         bool
	MissingAsEmpty bool // treat_missing_header_as_empty
}

// NewHeader compiles hm; p is its field path for errors. Pseudo-headers
// other than :method, :authority, :path and :scheme are refused: the proxy
// does not keep them, so a matcher on them could never see a value.
func NewHeader(hm *routev3.HeaderMatcher, p string) (Header, error) {
	h := Header{HeaderName: NewHeaderName(hm.GetName()), Invert: hm.GetInvertMatch(), MissingAsEmpty: hm.GetTreatMissingHeaderAsEmpty()}
	if !h.Available() {
		return h, errf(p+".name", "pseudo-header %q cannot be matched: only :method, :authority, :path and :scheme are available", hm.GetName())
	}
	var err error
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		h.Kind, h.Exact = HeaderExact, s.ExactMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		h.Kind, h.String.Kind = HeaderString, Regex
		h.String.Regexp, err = CompileRegex(s.SafeRegexMatch.GetRegex(), p+".safe_regex_match.regex", true)
	case *routev3.HeaderMatcher_RangeMatch:
		h.Kind, h.Start, h.End = HeaderRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		h.Kind, h.Present = HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		h.Kind, h.String = HeaderString, String{Kind: Prefix, Value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		h.Kind, h.String = HeaderString, String{Kind: Suffix, Value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		h.Kind, h.String = HeaderString, String{Kind: Contains, Value: s.ContainsMatch}
	case *routev3.HeaderMatcher_StringMatch:
		h.Kind = HeaderString
		h.String, err = NewString(s.StringMatch, p+".string_match")
	default:
		// No specifier: Envoy matches on presence.
		h.Kind, h.Present = HeaderPresent, true
	}
	return h, err
}

// Match reports whether r matches.
func (h *Header) Match(r *Request) bool {
	v, ok := h.Joined(r)
	return h.MatchValue(v, ok)
}

// MatchValue decides on the header's joined value v (ok: present), with
// Envoy's HeaderUtility semantics: present_match compares presence (then
// inverts); any other matcher fails on a missing header, whatever
// invert_match says, unless treat_missing_header_as_empty makes it match
// against "".
func (h *Header) MatchValue(v string, ok bool) bool {
	if h.Kind == HeaderPresent {
		return (ok == h.Present) != h.Invert
	}
	if !ok {
		if !h.MissingAsEmpty {
			return false
		}
		v = ""
	}
	var m bool
	switch h.Kind {
	case HeaderExact:
		m = h.Exact == "" || v == h.Exact
	case HeaderRange:
		n, ok := ParseInt64(v)
		m = ok && n >= h.Start && n < h.End
	case HeaderString:
		m = h.String.Match(v)
	}
	return m != h.Invert
}
