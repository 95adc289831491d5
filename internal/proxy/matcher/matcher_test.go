package matcher_test

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

// route.Request is matcher.Request: the router and the filters share one
// request value.
var _ *matcher.Request = &route.Request{}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

// expectMatches checks match on values that must and must not match.
func expectMatches(t *testing.T, match func(string) bool, yes, no []string) {
	t.Helper()
	for _, v := range yes {
		if !match(v) {
			t.Errorf("%q does not match", v)
		}
	}
	for _, v := range no {
		if match(v) {
			t.Errorf("%q matches", v)
		}
	}
}

func TestString(t *testing.T) {
	fold := func(sm *matcherv3.StringMatcher) *matcherv3.StringMatcher { sm.IgnoreCase = true; return sm }
	cases := []struct {
		name string
		sm   *matcherv3.StringMatcher
		yes  []string
		no   []string
	}{
		{"exact", exact("GET"), []string{"GET"}, []string{"get", "GETX", ""}},
		{"exact ignore case", fold(exact("GeT")), []string{"get", "GET"}, []string{"GETS"}},
		{"prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/api"}},
			[]string{"/api", "/api/v1"}, []string{"/ap", "/API"}},
		{"prefix ignore case", fold(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/Api"}}),
			[]string{"/API/x", "/api"}, []string{"/ap"}},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".local"}},
			[]string{"a.local", ".local"}, []string{"local", "a.LOCAL"}},
		{"suffix ignore case", fold(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".Local"}}),
			[]string{"a.LOCAL"}, []string{"a.locals"}},
		{"contains", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "/ns/"}},
			[]string{"spiffe://td/ns/foo", "/ns/"}, []string{"/NS/", "/ns"}},
		{"contains ignore case", fold(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "/NS/"}}),
			[]string{"x/ns/y", "x/Ns/y"}, []string{"x/n/s"}},
		// safe_regex is RE2 FullMatch, not a search.
		{"regex full match", regex(`.*/ns/foo/.*`), []string{"spiffe://cluster.local/ns/foo/sa/x"}, []string{"spiffe://cluster.local/ns/foobar/sa/x"}},
		{"regex alternation anchored", regex(`a|b`), []string{"a", "b"}, []string{"ab", "xa"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := matcher.NewString(tc.sm, "m")
			if err != nil {
				t.Fatal(err)
			}
			expectMatches(t, s.Match, tc.yes, tc.no)
		})
	}
}

func TestStringErrors(t *testing.T) {
	cases := []struct {
		sm   *matcherv3.StringMatcher
		want string
	}{
		{regex(`(`), "m.safe_regex.regex: invalid RE2"},
		{&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}},
			"m: ignore_case has no effect for safe_regex."},
		{&matcherv3.StringMatcher{}, "m: match_pattern is not supported by amime"},
	}
	for _, tc := range cases {
		_, err := matcher.NewString(tc.sm, "m")
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("error = %v, want prefix %q", err, tc.want)
		}
	}
}

func TestHeader(t *testing.T) {
	req := &matcher.Request{
		Method: "GET", Authority: "Reviews:9080", Path: "/a?b=c", Scheme: "https",
		Headers: header.List{{Name: "x-v", Value: "1"}, {Name: "x-m", Value: "a"}, {Name: "x-m", Value: "b"}, {Name: "x-n", Value: " 42 "}},
	}
	hm := func(name string, f func(*routev3.HeaderMatcher)) *routev3.HeaderMatcher {
		h := &routev3.HeaderMatcher{Name: name}
		if f != nil {
			f(h)
		}
		return h
	}
	str := func(sm *matcherv3.StringMatcher) func(*routev3.HeaderMatcher) {
		return func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
	}
	cases := []struct {
		name string
		hm   *routev3.HeaderMatcher
		want bool
	}{
		{":method", hm(":method", str(exact("GET"))), true},
		{":path keeps the query", hm(":path", str(exact("/a?b=c"))), true},
		{":authority ignore case", hm(":authority", str(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "reviews"}})), true},
		{"host is :authority", hm("Host", str(exact("Reviews:9080"))), true},
		{":scheme", hm(":scheme", str(exact("https"))), true},
		{"values joined with a comma", hm("x-m", str(exact("a,b"))), true},
		{"name is case-insensitive", hm("X-V", str(exact("1"))), true},
		{"no specifier: present", hm("x-v", nil), true},
		{"no specifier: absent", hm("x-missing", nil), false},
		{"present_match false on absent", hm("x-missing", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}
		}), true},
		{"present_match inverted", hm("x-v", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
			h.InvertMatch = true
		}), false},
		{"missing header fails even inverted", hm("x-missing", func(h *routev3.HeaderMatcher) {
			str(exact("1"))(h)
			h.InvertMatch = true
		}), false},
		{"missing as empty", hm("x-missing", func(h *routev3.HeaderMatcher) {
			str(exact(""))(h)
			h.TreatMissingHeaderAsEmpty = true
		}), true},
		{"inverted mismatch", hm("x-v", func(h *routev3.HeaderMatcher) {
			str(exact("2"))(h)
			h.InvertMatch = true
		}), true},
		{"legacy exact_match empty matches any", hm("x-v", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{}
		}), true},
		{"legacy prefix_match", hm("x-m", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "a,"}
		}), true},
		{"legacy safe_regex_match", hm(":path", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `/a\?.*`}}
		}), true},
		{"range with whitespace", hm("x-n", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 42, End: 43}}
		}), true},
		{"range end exclusive", hm("x-n", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 0, End: 42}}
		}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := matcher.NewHeader(tc.hm, "h")
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Match(req); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	// An empty request has no pseudo-headers.
	h, _ := matcher.NewHeader(hm(":method", nil), "h")
	if h.Match(&matcher.Request{}) {
		t.Error(":method present in an empty request")
	}
	if _, err := matcher.NewHeader(hm(":protocol", nil), "h"); err == nil || !strings.HasPrefix(err.Error(), "h.name: pseudo-header") {
		t.Errorf("unknown pseudo-header: %v", err)
	}
}

func TestPath(t *testing.T) {
	s, err := matcher.NewPath(&matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/a/b")}}, "p")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/a/b": true, "/a/b?x=1": true, "/a/b#f": true, "/a/bc": false, "": false} {
		if got := matcher.MatchPath(&s, path); got != want {
			t.Errorf("MatchPath(%q) = %v, want %v", path, got, want)
		}
	}
	if _, err := matcher.NewPath(&matcherv3.PathMatcher{}, "p"); err == nil {
		t.Error("PathMatcher without rule accepted")
	}
}

func TestRoutePath(t *testing.T) {
	fold := func(m *routev3.RouteMatch) *routev3.RouteMatch { m.CaseSensitive = wrapperspb.Bool(false); return m }
	prefix := func(s string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: s}}
	}
	path := func(s string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: s}}
	}
	sep := func(s string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: s}}
	}
	re := func(s string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
	}
	cases := []struct {
		name string
		m    *routev3.RouteMatch
		yes  []string
		no   []string
	}{
		{"prefix", prefix("/api"), []string{"/api", "/api/v1", "/apix"}, []string{"/API", "/ap", ""}},
		{"prefix case insensitive", fold(prefix("/Api")), []string{"/api/v1", "/API"}, []string{"/ap"}},
		{"empty prefix", prefix(""), []string{"", "/"}, nil},
		{"path", path("/a/b"), []string{"/a/b"}, []string{"/a/B", "/a/bc", "/a"}},
		{"path case insensitive", fold(path("/a/B")), []string{"/A/b"}, []string{"/a/bc"}},
		{"separated prefix", sep("/v1"), []string{"/v1", "/v1/", "/v1/x"}, []string{"/v10", "/V1/x", "/v"}},
		{"separated prefix case insensitive", fold(sep("/v1")), []string{"/V1/x"}, []string{"/V10"}},
		// case_sensitive does not apply to safe_regex, which matches the whole path.
		{"regex", fold(re("/r/[a-z]+")), []string{"/r/abc"}, []string{"/r/ABC", "/r/abc/", "x/r/abc"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := matcher.NewRoutePath(tc.m, "match")
			if err != nil {
				t.Fatal(err)
			}
			expectMatches(t, r.Match, tc.yes, tc.no)
		})
	}
	for _, tc := range []struct {
		m    *routev3.RouteMatch
		want string
	}{
		{re("("), "match.safe_regex.regex: invalid RE2"},
		{&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{}}, "match: path_specifier is not supported by amime"},
		{&routev3.RouteMatch{}, "match: path_specifier is not supported by amime"},
	} {
		if _, err := matcher.NewRoutePath(tc.m, "match"); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("error = %v, want prefix %q", err, tc.want)
		}
	}
}

func TestHeaderName(t *testing.T) {
	req := &matcher.Request{Method: "GET", Authority: "a:80", Headers: header.List{{Name: "x-m", Value: "1"}, {Name: "x-m", Value: "2"}}}
	cases := []struct {
		name          string
		pseudo, known bool
		first, joined string
		present       bool
	}{
		{"X-M", false, true, "1", "1,2", true},
		{"x-none", false, true, "", "", false},
		{":method", true, true, "GET", "GET", true},
		{"Host", true, true, "a:80", "a:80", true},
		{":path", true, true, "", "", false}, // empty pseudo-header: absent
		{":protocol", true, false, "", "", false},
	}
	for _, tc := range cases {
		h := matcher.NewHeaderName(tc.name)
		if h.IsPseudo() != tc.pseudo || h.Available() != tc.known {
			t.Errorf("%s: IsPseudo %v Available %v", tc.name, h.IsPseudo(), h.Available())
		}
		if v, ok := h.First(req); v != tc.first || ok != tc.present {
			t.Errorf("%s: First = %q, %v", tc.name, v, ok)
		}
		if v, ok := h.Joined(req); v != tc.joined || ok != tc.present {
			t.Errorf("%s: Joined = %q, %v", tc.name, v, ok)
		}
	}
}

func TestMetadata(t *testing.T) {
	md, err := structpb.NewStruct(map[string]any{
		"request.auth.principal": "issuer/subject",
		"request.auth.claims": map[string]any{
			"groups": []any{"dev", "admin", 3.0, true},
			"scope":  "read",
			"n":      2.5,
			"ok":     true,
			"nil":    nil,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]*structpb.Struct{"istio_authn": md}
	mm := func(filter string, path []string, v *matcherv3.ValueMatcher, invert bool) *matcherv3.MetadataMatcher {
		m := &matcherv3.MetadataMatcher{Filter: filter, Value: v, Invert: invert}
		for _, k := range path {
			m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return m
	}
	strV := func(s string) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(s)}}
	}
	present := func(b bool) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: b}}
	}
	dbl := func(d *matcherv3.DoubleMatcher) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: d}}
	}
	claims := []string{"request.auth.claims"}
	sub := func(k string) []string { return append(append([]string(nil), claims...), k) }
	cases := []struct {
		name string
		m    *matcherv3.MetadataMatcher
		want bool
	}{
		{"string", mm("istio_authn", []string{"request.auth.principal"}, strV("issuer/subject"), false), true},
		{"string mismatch", mm("istio_authn", []string{"request.auth.principal"}, strV("x"), false), false},
		{"inverted", mm("istio_authn", []string{"request.auth.principal"}, strV("x"), true), true},
		{"other filter", mm("jwt", []string{"request.auth.principal"}, strV("issuer/subject"), false), false},
		{"missing filter inverted", mm("jwt", []string{"request.auth.principal"}, strV("issuer/subject"), true), true},
		{"list one_of", mm("istio_authn", sub("groups"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
			ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strV("admin")}}}}, false), true},
		{"list one_of absent", mm("istio_authn", sub("groups"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
			ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strV("ops")}}}}, false), false},
		{"list match on a string", mm("istio_authn", sub("scope"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
			ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strV("read")}}}}, false), false},
		{"string match on a list", mm("istio_authn", sub("groups"), strV("dev"), false), false},
		{"present", mm("istio_authn", sub("scope"), present(true), false), true},
		{"present on null", mm("istio_authn", sub("nil"), present(true), false), true},
		{"present absent", mm("istio_authn", sub("nope"), present(true), false), false},
		{"present_match false matches nothing", mm("istio_authn", sub("nope"), present(false), false), false},
		{"through a non-struct", mm("istio_authn", []string{"request.auth.principal", "x"}, present(true), false), false},
		{"null", mm("istio_authn", sub("nil"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false), true},
		{"null is not absent", mm("istio_authn", sub("nope"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false), false},
		{"double exact", mm("istio_authn", sub("n"), dbl(&matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Exact{Exact: 2.5}}), false), true},
		{"double range", mm("istio_authn", sub("n"), dbl(&matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: 2, End: 2.5}}}), false), false},
		{"bool", mm("istio_authn", sub("ok"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: true}}, false), true},
		{"or", mm("istio_authn", sub("scope"), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
			ValueMatchers: []*matcherv3.ValueMatcher{strV("write"), strV("read")}}}}, false), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := matcher.NewMetadata(tc.m, "m")
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(all); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := matcher.NewMetadata(mm("f", nil, present(true), false), "m"); err == nil || err.Error() != "m.path: at least one path segment is required" {
		t.Errorf("empty path: %v", err)
	}
	if _, err := matcher.NewMetadata(mm("f", []string{"a"}, strV(""), false), "m"); err != nil {
		t.Errorf("valid matcher refused: %v", err)
	}
	if _, err := matcher.NewMetadata(mm("f", []string{"a"}, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: regex("(")}}, false), "m"); err == nil ||
		!strings.HasPrefix(err.Error(), "m.value.string_match.safe_regex.regex:") {
		t.Errorf("bad regex: %v", err)
	}
}

func TestCIDR(t *testing.T) {
	cidr := func(a string, n uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
	}
	cases := []struct {
		c    *corev3.CidrRange
		addr string
		want bool
	}{
		{cidr("10.1.2.3", 8), "10.200.0.1", true}, // host bits past the prefix are ignored
		{cidr("10.0.0.0", 8), "11.0.0.1", false},
		{cidr("10.0.0.1", 40), "10.0.0.1", true}, // prefix_len clamped to 32
		{cidr("10.0.0.1", 40), "10.0.0.2", false},
		{&corev3.CidrRange{AddressPrefix: "192.168.0.0"}, "8.8.8.8", true}, // no prefix_len: /0
		{cidr("10.0.0.0", 8), "::ffff:10.0.0.1", true},                     // IPv4-mapped peer
		{cidr("10.0.0.0", 0), "::1", false},                                // versions differ
		{cidr("2001:db8::", 32), "2001:db8:1::1", true},
		{cidr("2001:db8::", 32), "", false}, // unknown address
	}
	for _, tc := range cases {
		p, err := matcher.NewCIDR(tc.c, "c")
		if err != nil {
			t.Fatal(err)
		}
		var a netip.Addr
		if tc.addr != "" {
			a = netip.MustParseAddr(tc.addr)
		}
		if got := matcher.InCIDR(p, a); got != tc.want {
			t.Errorf("%v contains %q = %v, want %v", p, tc.addr, got, tc.want)
		}
	}
	for _, bad := range []string{"10.0.0", "", "fe80::1%eth0", "10.0.0.0/8"} {
		if _, err := matcher.NewCIDR(cidr(bad, 8), "c"); err == nil || !strings.HasPrefix(err.Error(), "c.address_prefix: malformed IP address") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func BenchmarkHeaderMatch(b *testing.B) {
	h, err := matcher.NewHeader(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "reviews.default.svc.cluster.local"}}}}, "h")
	if err != nil {
		b.Fatal(err)
	}
	req := &matcher.Request{Method: "GET", Authority: "Reviews.default.svc.cluster.local", Path: "/"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !h.Match(req) {
			b.Fatal("no match")
		}
	}
}
