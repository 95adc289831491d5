package jwtauthn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// istioConfig is what istiod emits for a RequestAuthentication with the
// given jwtRules (issuers): a provider per rule with the JWKS inline and
// the payload in metadata under the issuer, and one rule on "/". With one
// jwtRule the requirement is requires_any{p, allow_missing}; with several,
// requires_any{p1, ..., pn, requires_all{requires_any{pi, allow_missing}...}}.
func istioConfig(t testing.TB, issuers ...string) *jwtv3.JwtAuthentication {
	m := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, BypassCorsPreflight: true}
	var any, all []*jwtv3.JwtRequirement
	for i, iss := range issuers {
		name := "origins-" + string(rune('0'+i))
		p := localProvider(defaultJWKS(t))
		p.Issuer, p.Audiences = iss, nil
		p.PayloadInMetadata = iss
		p.ForwardPayloadHeader = "x-jwt-payload"
		m.Providers[name] = p
		any = append(any, requireProvider(name))
		all = append(all, requiresAny(requireProvider(name), allowMissing()))
	}
	req := requiresAny(requireProvider("origins-0"), allowMissing())
	if len(issuers) > 1 {
		req = requiresAny(append(any, requiresAll(all...))...)
	}
	m.Rules = []*jwtv3.RequirementRule{prefixRule("/", req)}
	return m
}

func TestIstioRequestAuthentication(t *testing.T) {
	k := getKeys(t)
	const other = "https://other.example.com"
	for _, issuers := range [][]string{{testIssuer}, {testIssuer, other}} {
		f := newFilter(t, istioConfig(t, issuers...), nil)
		t.Run(strings.Join(issuers, ","), func(t *testing.T) {
			tests := []struct {
				name      string
				token     string
				wantCode  int
				principal string
			}{
				{"no token passes without principal", "", 0, ""},
				{"valid token passes with principal", sign(t, jose.ES256, k.ec, "ec1", goodClaims()), 0, testIssuer + "/alice"},
				{"invalid signature is 401", sign(t, jose.ES256, k.ec, "ec1", goodClaims())[:40] + "x.y.z", 401, ""},
				{"expired is 401", sign(t, jose.ES256, k.ec, "ec1", goodClaims().with("exp", testNow.Unix()-3600)), 401, ""},
				{"unknown issuer is 401", sign(t, jose.ES256, k.ec, "ec1", goodClaims().with("iss", "https://nobody")), 401, ""},
			}
			if len(issuers) > 1 {
				tests = append(tests, struct {
					name      string
					token     string
					wantCode  int
					principal string
				}{"second issuer passes", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("iss", other, "sub", "bob")), 0, other + "/bob"})
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					res := f.Authenticate(context.Background(), bearer("/", tc.token), nil)
					if res.Code != tc.wantCode {
						t.Fatalf("code = %d (%q), want %d", res.Code, res.Body, tc.wantCode)
					}
					md := res.Metadata()
					got := md[IstioAuthnFilter].GetFields()[KeyPrincipal].GetStringValue()
					if got != tc.principal {
						t.Errorf("principal = %q, want %q", got, tc.principal)
					}
				})
			}
		})
	}
}

func TestTokenLocations(t *testing.T) {
	k := getKeys(t)
	tok := sign(t, jose.ES256, k.ec, "ec1", goodClaims())
	withLoc := func(forward bool, headers []*jwtv3.JwtHeader, params ...string) *jwtv3.JwtAuthentication {
		p := localProvider(defaultJWKS(t))
		p.Forward, p.FromHeaders, p.FromParams = forward, headers, params
		return requiredConfig(p)
	}
	custom := []*jwtv3.JwtHeader{{Name: "X-Goog-IAP-JWT-Assertion", ValuePrefix: "Token "}}
	tests := []struct {
		name       string
		cfg        *jwtv3.JwtAuthentication
		path       string
		hdr        header.Field
		wantStatus Status
		wantPath   string
		wantHeader bool // the token header is still there
	}{
		{"default: access_token param", withLoc(false, nil), "/a?x=1&access_token=" + tok + "&y=2", header.Field{}, StatusOK, "/a?x=1&y=2", false},
		{"default: only param", withLoc(false, nil), "/a?access_token=" + tok, header.Field{}, StatusOK, "/a", false},
		{"default: param forwarded", withLoc(true, nil), "/a?access_token=" + tok, header.Field{}, StatusOK, "/a?access_token=" + tok, false},
		{"from_params", withLoc(false, nil, "jwt"), "/a?jwt=" + tok, header.Field{}, StatusOK, "/a", false},
		{"from_params ignores the default param", withLoc(false, nil, "jwt"), "/a?access_token=" + tok, header.Field{}, StatusMissing, "", false},
		{"custom header with prefix", withLoc(false, custom), "/a", header.Field{Name: "x-goog-iap-jwt-assertion", Value: "Token " + tok}, StatusOK, "/a", false},
		{"custom header forwarded", withLoc(true, custom), "/a", header.Field{Name: "x-goog-iap-jwt-assertion", Value: "Token " + tok}, StatusOK, "/a", true},
		{"custom header without its prefix", withLoc(false, custom), "/a", header.Field{Name: "x-goog-iap-jwt-assertion", Value: tok}, StatusMissing, "", true},
		{"custom header ignores Authorization", withLoc(false, custom), "/a", header.Field{Name: "authorization", Value: "Bearer " + tok}, StatusMissing, "", true},
		{"bad token in query param", withLoc(false, nil), "/a?access_token=e30.e30.e30", header.Field{}, StatusHeaderBadAlg, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, tc.cfg, nil)
			h := header.List{}
			if tc.hdr.Name != "" {
				h = append(h, tc.hdr)
			}
			req := &Request{Method: "GET", Scheme: "https", Host: "h", Path: tc.path, Headers: &h}
			res := f.Authenticate(context.Background(), req, nil)
			if res.Status != tc.wantStatus {
				t.Fatalf("status = %q, want %q", res.Status, tc.wantStatus)
			}
			if tc.wantStatus != StatusOK {
				return
			}
			if req.Path != tc.wantPath || res.PathChanged != (tc.wantPath != tc.path) {
				t.Errorf("path = %q (changed %v), want %q", req.Path, res.PathChanged, tc.wantPath)
			}
			if tc.hdr.Name != "" && h.Has(tc.hdr.Name) != tc.wantHeader {
				t.Errorf("token header present = %v, want %v", h.Has(tc.hdr.Name), tc.wantHeader)
			}
		})
	}
}

func TestCookieLocation(t *testing.T) {
	k := getKeys(t)
	p := localProvider(defaultJWKS(t))
	p.FromCookies = []string{"session"}
	f := newFilter(t, requiredConfig(p), nil)
	h := header.List{{Name: "cookie", Value: "a=b; session=" + sign(t, jose.ES256, k.ec, "ec1", goodClaims()) + "; c=d"}}
	if res := f.Authenticate(context.Background(), &Request{Path: "/", Headers: &h}, nil); !res.Passed() {
		t.Errorf("cookie token: %d %q", res.Code, res.Body)
	}
}

func TestMultipleTokensMustAllVerify(t *testing.T) {
	k := getKeys(t)
	f := newFilter(t, requiredConfig(localProvider(defaultJWKS(t))), nil)
	good := sign(t, jose.ES256, k.ec, "ec1", goodClaims())
	req := bearer("/?access_token=e30.e30.e30", good)
	if res := f.Authenticate(context.Background(), req, nil); res.Passed() {
		t.Error("a good header token and a bad query token passed")
	}
}

func TestRequirements(t *testing.T) {
	k := getKeys(t)
	a := localProvider(defaultJWKS(t))
	a.FromHeaders = []*jwtv3.JwtHeader{{Name: "x-a"}}
	b := localProvider(defaultJWKS(t))
	b.Issuer, b.Audiences = "https://b.example.com", nil
	b.FromHeaders = []*jwtv3.JwtHeader{{Name: "x-b"}}
	ta := sign(t, jose.ES256, k.ec, "ec1", goodClaims())
	tb := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("iss", "https://b.example.com", "aud", "b-aud"))
	bad := "e30.e30.e30"
	audA := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderAndAudiences{
		ProviderAndAudiences: &jwtv3.ProviderWithAudiences{ProviderName: "a", Audiences: []string{"other-aud"}}}}
	m := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"a": a, "b": b},
		Rules: []*jwtv3.RequirementRule{
			prefixRule("/health", nil),
			prefixRule("/all", requiresAll(requireProvider("a"), requireProvider("b"))),
			prefixRule("/any", requiresAny(requireProvider("a"), requireProvider("b"))),
			prefixRule("/aud", audA),
			prefixRule("/failed-ok", allowMissingOrFailed()),
			prefixRule("/missing-ok", allowMissing()),
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, RequirementType: &jwtv3.RequirementRule_Requires{Requires: requireProvider("a")}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/[0-9]+"}}}, RequirementType: &jwtv3.RequirementRule_Requires{Requires: requireProvider("b")}},
		},
		RequirementMap: map[string]*jwtv3.JwtRequirement{"need-b": requireProvider("b")},
	}
	f := newFilter(t, m, nil)
	tests := []struct {
		path     string
		xa, xb   string
		perRoute *PerRoute
		want     int
	}{
		{"/health", "", "", nil, 0},
		{"/health", bad, "", nil, 0},
		{"/unmatched", "", "", nil, 0},
		{"/all", ta, tb, nil, 0},
		{"/all", ta, "", nil, 401},
		{"/all", "", tb, nil, 401},
		{"/any", ta, "", nil, 0},
		{"/any", "", tb, nil, 0},
		{"/any", "", "", nil, 401},
		{"/any", bad, "", nil, 401},
		{"/any", ta, bad, nil, 0},
		{"/aud", ta, "", nil, 403}, // the requirement's audiences replace the provider's
		{"/failed-ok", bad, "", nil, 0},
		{"/failed-ok", "", "", nil, 0},
		{"/missing-ok", "", "", nil, 0},
		{"/missing-ok", ta, "", nil, 0},
		{"/missing-ok", bad, "", nil, 401},
		{"/exact", "", "", nil, 401},
		{"/exact/more", "", "", nil, 0},
		{"/exact?q=1", "", "", nil, 401},
		{"/re/42", "", "", nil, 401},
		{"/re/x", "", "", nil, 0},
		{"/any", "", "", &PerRoute{Disabled: true}, 0},
		{"/health", ta, "", &PerRoute{RequirementName: "need-b"}, 401},
		{"/health", "", tb, &PerRoute{RequirementName: "need-b"}, 0},
		{"/health", "", tb, &PerRoute{RequirementName: "nope"}, 403},
	}
	for _, tc := range tests {
		h := header.List{}
		if tc.xa != "" {
			h.Add("x-a", tc.xa)
		}
		if tc.xb != "" {
			h.Add("x-b", tc.xb)
		}
		res := f.Authenticate(context.Background(), &Request{Method: "GET", Path: tc.path, Headers: &h}, tc.perRoute)
		if res.Code != tc.want {
			t.Errorf("%s a=%t b=%t per-route=%+v: code %d (%q), want %d", tc.path, tc.xa != "", tc.xb != "", tc.perRoute, res.Code, res.Body, tc.want)
		}
	}
	res := f.Authenticate(context.Background(), &Request{Path: "/", Headers: &header.List{}}, &PerRoute{RequirementName: "nope"})
	if want := "Failed JWT authentication: Wrong requirement_name: nope. It should be one of [need-b]"; res.Body != want {
		t.Errorf("body = %q, want %q", res.Body, want)
	}
}

func TestBypassCORSPreflight(t *testing.T) {
	m := requiredConfig(localProvider(defaultJWKS(t)))
	m.BypassCorsPreflight = true
	f := newFilter(t, m, nil)
	h := header.List{{Name: "origin", Value: "https://app"}, {Name: "access-control-request-method", Value: "POST"}}
	if res := f.Authenticate(context.Background(), &Request{Method: "OPTIONS", Path: "/", Headers: &h}, nil); !res.Passed() {
		t.Errorf("preflight: %d %q", res.Code, res.Body)
	}
	h = header.List{{Name: "origin", Value: "https://app"}}
	if res := f.Authenticate(context.Background(), &Request{Method: "OPTIONS", Path: "/", Headers: &h}, nil); res.Passed() {
		t.Error("OPTIONS without access-control-request-method bypassed")
	}
}

func TestOutputs(t *testing.T) {
	k := getKeys(t)
	p := localProvider(defaultJWKS(t))
	p.ForwardPayloadHeader = "X-Jwt-Payload"
	p.PayloadInMetadata = "my_payload"
	p.HeaderInMetadata = "my_header"
	p.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{
		{HeaderName: "x-sub", ClaimName: "sub"},
		{HeaderName: "x-n", ClaimName: "n"},
		{HeaderName: "x-f", ClaimName: "f"},
		{HeaderName: "x-admin", ClaimName: "admin"},
		{HeaderName: "x-team", ClaimName: "org.team"},
		{HeaderName: "x-groups", ClaimName: "groups"},
		{HeaderName: "x-absent", ClaimName: "absent"},
	}
	f := newFilter(t, requiredConfig(p), nil)
	c := goodClaims().with("n", 42, "f", 1.5, "admin", true, "org", map[string]any{"team": "blue"},
		"groups", []string{"g1", "g2"}, "scope", "read write", "azp", "web")
	tok := sign(t, jose.ES256, k.ec, "ec1", c)
	req := bearer("/", tok)
	// Forged copies of the filter's output headers are dropped first.
	req.Headers.Add("x-jwt-payload", "forged")
	req.Headers.Add("x-sub", "root")
	res := f.Authenticate(context.Background(), req, nil)
	if !res.Passed() {
		t.Fatalf("rejected: %d %q", res.Code, res.Body)
	}
	h := req.Headers
	wantHeaders := map[string]string{
		"x-jwt-payload": strings.Split(tok, ".")[1], "x-sub": "alice", "x-n": "42", "x-f": "1.500000",
		"x-admin": "true", "x-team": "blue",
	}
	for name, want := range wantHeaders {
		if h.Count(name) != 1 || h.Value(name) != want {
			t.Errorf("%s = %q (x%d), want %q", name, h.Value(name), h.Count(name), want)
		}
	}
	for _, name := range []string{"x-groups", "x-absent", "authorization"} {
		if h.Has(name) {
			t.Errorf("%s present: %q", name, h.Value(name))
		}
	}

	md := res.Metadata()
	jm := md[Name].GetFields()
	if got := jm["my_payload"].GetStructValue().GetFields()["sub"].GetStringValue(); got != "alice" {
		t.Errorf("payload metadata sub = %q", got)
	}
	if got := jm["my_header"].GetStructValue().GetFields()["kid"].GetStringValue(); got != "ec1" {
		t.Errorf("header metadata kid = %q", got)
	}
	im := md[IstioAuthnFilter].GetFields()
	str := func(k string) string { return im[k].GetStringValue() }
	if str(KeyPrincipal) != testIssuer+"/alice" || str(KeyAudiences) != testAud || str(KeyPresenter) != "web" {
		t.Errorf("istio_authn = principal %q audiences %q presenter %q", str(KeyPrincipal), str(KeyAudiences), str(KeyPresenter))
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(str(KeyRawClaims)), &raw); err != nil || raw["sub"] != "alice" {
		t.Errorf("raw_claims = %q (%v)", str(KeyRawClaims), err)
	}
	cl := im[KeyClaims].GetStructValue().GetFields()
	list := func(v *structpb.Value) []string {
		var out []string
		for _, e := range v.GetListValue().GetValues() {
			out = append(out, e.GetStringValue())
		}
		return out
	}
	if got := strings.Join(list(cl["groups"]), ","); got != "g1,g2" {
		t.Errorf("claims[groups] = %q", got)
	}
	if got := strings.Join(list(cl["scope"]), ","); got != "read,write" {
		t.Errorf("claims[scope] = %q", got)
	}
	if got := strings.Join(list(cl["org"].GetStructValue().GetFields()["team"]), ","); got != "blue" {
		t.Errorf("claims[org][team] = %q", got)
	}
	if _, ok := cl["admin"]; ok {
		t.Error("a boolean claim is in request.auth.claims; Istio keeps strings only")
	}
}

func TestPadForwardPayloadHeader(t *testing.T) {
	k := getKeys(t)
	p := localProvider(defaultJWKS(t))
	p.ForwardPayloadHeader = "x-jwt-payload"
	p.PadForwardPayloadHeader = true
	f := newFilter(t, requiredConfig(p), nil)
	for _, sub := range []string{"a", "ab", "abc"} { // payload lengths differ mod 3
		tok := sign(t, jose.ES256, k.ec, "ec1", goodClaims().with("sub", sub))
		req := bearer("/", tok)
		if res := f.Authenticate(context.Background(), req, nil); !res.Passed() {
			t.Fatalf("rejected: %q", res.Body)
		}
		v := req.Headers.Value("x-jwt-payload")
		b, err := base64.URLEncoding.DecodeString(v)
		if err != nil || len(v)%4 != 0 {
			t.Fatalf("padded payload %q: %v", v, err)
		}
		if !strings.Contains(string(b), `"sub":"`+sub+`"`) {
			t.Errorf("payload %s lacks sub %q", b, sub)
		}
	}
}

func TestParse(t *testing.T) {
	good := requiredConfig(localProvider(defaultJWKS(t)))
	a, err := anypb.New(good)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != TypeURL {
		t.Fatalf("TypeURL %q != %q", TypeURL, a.GetTypeUrl())
	}
	if _, err := Parse(a); err != nil {
		t.Fatalf("Parse: %v", err)
	}

	tests := []struct {
		name    string
		edit    func(m *jwtv3.JwtAuthentication)
		wantErr string
	}{
		{"jwt_cache_config", func(m *jwtv3.JwtAuthentication) {
			m.Providers["p"].JwtCacheConfig = &jwtv3.JwtCacheConfig{JwtCacheSize: 10}
		}, `providers["p"].jwt_cache_config`},
		{"retry_policy", func(m *jwtv3.JwtAuthentication) {
			p := remoteProvider("http://127.0.0.1/jwks", 0)
			p.GetRemoteJwks().RetryPolicy = &corev3.RetryPolicy{}
			m.Providers["p"] = p
		}, `providers["p"].remote_jwks.retry_policy`},
		{"query_parameters", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "x"}}
		}, "rules[0].match.query_parameters"},
		{"filter_state_rules", func(m *jwtv3.JwtAuthentication) {
			m.FilterStateRules = &jwtv3.FilterStateRule{Name: "x"}
		}, "filter_state_rules"},
		{"extract_only_without_validation", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].GetRequires().RequiresType = &jwtv3.JwtRequirement_ExtractOnlyWithoutValidation{ExtractOnlyWithoutValidation: &jwtv3.ExtractOnlyWithoutValidation{}}
		}, "rules[0].requires.extract_only_without_validation"},
		{"unknown provider", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].GetRequires().RequiresType = &jwtv3.JwtRequirement_ProviderName{ProviderName: "nope"}
		}, "Required provider ['nope'] is not configured"},
		{"unknown requirement_name", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].RequirementType = &jwtv3.RequirementRule_RequirementName{RequirementName: "nope"}
		}, "Wrong requirement_name: nope"},
		{"bad regex", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}
		}, "rules[0].match.safe_regex.regex"},
		{"remote without timeout", func(m *jwtv3.JwtAuthentication) {
			p := remoteProvider("http://127.0.0.1/jwks", 0)
			p.GetRemoteJwks().HttpUri.Timeout = nil
			m.Providers["p"] = p
		}, "HttpUri.Timeout: value is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := requiredConfig(localProvider(defaultJWKS(t)))
			tc.edit(m)
			_, err := Compile(m)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Compile error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParsePerRoute(t *testing.T) {
	a, err := anypb.New(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != PerRouteTypeURL {
		t.Fatalf("PerRouteTypeURL %q != %q", PerRouteTypeURL, a.GetTypeUrl())
	}
	got, err := ParsePerRoute(a)
	if err != nil {
		t.Fatal(err)
	}
	if pr, ok := got.(*PerRoute); !ok || pr.RequirementName != "r" || pr.Disabled {
		t.Errorf("ParsePerRoute = %#v", got)
	}
	wrong, _ := anypb.New(&jwtv3.JwtAuthentication{})
	if _, err := ParsePerRoute(wrong); err == nil {
		t.Error("ParsePerRoute accepted a JwtAuthentication")
	}
}
