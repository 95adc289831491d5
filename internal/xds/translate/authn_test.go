package translate

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

const testJWKS = `{"keys":[{"kty":"EC","crv":"P-256","x":"x","y":"y"}]}`

func raObj(ns, name string, ra *security.RequestAuthentication) *config.Object {
	return &config.Object{Kind: config.RequestAuthentication, Meta: config.Meta{Namespace: ns, Name: name}, Spec: ra}
}

func jwtConfig(t *testing.T, b *builder) *jwtv3.JwtAuthentication {
	t.Helper()
	f := b.jwtAuthnFilter()
	if f == nil {
		return nil
	}
	if f.GetName() != "envoy.filters.http.jwt_authn" {
		t.Errorf("filter name %q", f.GetName())
	}
	out := &jwtv3.JwtAuthentication{}
	if err := f.GetTypedConfig().UnmarshalTo(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonString quotes s for embedding in test JSON.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestJWTAuthnFilter(t *testing.T) {
	oneProviderRule := `"rules":[{"match":{"prefix":"/"},"requires":{"requiresAny":{"requirements":[{"providerName":"origins-0"},{"allowMissing":{}}]}}}],"bypassCorsPreflight":true`
	local := func(jwks string) string { return `"localJwks":{"inlineString":` + jsonString(jwks) + `}` }
	defaults := `"fromHeaders":[{"name":"Authorization","valuePrefix":"Bearer "}],"fromParams":["access_token"]`
	for _, tc := range []struct {
		name string
		ras  []*config.Object
		jwks map[string]string
		want string // "" = no filter
		warn string
	}{{
		name: "no RequestAuthentication",
	}, {
		name: "every field",
		ras: []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{
			Issuer:                "https://issuer.example",
			Audiences:             []string{"a1", "a2"},
			Jwks:                  testJWKS,
			FromHeaders:           []*security.JWTHeader{{Name: "x-jwt", Prefix: "Token "}},
			FromParams:            []string{"tok"},
			FromCookies:           []string{"session"},
			ForwardOriginalToken:  true,
			OutputPayloadToHeader: "x-payload",
			OutputClaimToHeaders:  []*security.ClaimToHeader{{Header: "x-sub", Claim: "sub"}},
			SpaceDelimitedClaims:  []string{"roles", "scope"},
			Timeout:               durationpb.New(0),
		}}})},
		want: `{"providers":{"origins-0":{"issuer":"https://issuer.example","audiences":["a1","a2"],"forward":true,` +
			`"fromHeaders":[{"name":"x-jwt","valuePrefix":"Token "}],"fromParams":["tok"],"fromCookies":["session"],` +
			`"forwardPayloadHeader":"x-payload","payloadInMetadata":"https://issuer.example",` +
			`"normalizePayloadInMetadata":{"spaceDelimitedClaims":["scope","permission","roles"]},` +
			`"claimToHeaders":[{"headerName":"x-sub","claimName":"sub"}],` + local(testJWKS) + `}},` + oneProviderRule + `}`,
	}, {
		name: "jwksUri from the control plane; default token locations",
		ras:  []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "iss", JwksUri: "https://keys.example/jwks"}}})},
		jwks: map[string]string{"https://keys.example/jwks": testJWKS},
		want: `{"providers":{"origins-0":{"issuer":"iss","payloadInMetadata":"iss",` + defaults + `,` + local(testJWKS) + `}},` + oneProviderRule + `}`,
	}, {
		name: "unfetched jwksUri fails closed",
		ras:  []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "iss", JwksUri: "https://keys.example/jwks"}}})},
		want: `{"providers":{"origins-0":{"issuer":"iss","payloadInMetadata":"iss",` + defaults + `,` + local(FailClosedJWKS) + `}},` + oneProviderRule + `}`,
		warn: `RequestAuthentication foo/ra: jwtRules[0].jwksUri: no key set fetched for "https://keys.example/jwks" (yet); tokens of issuer "iss" are rejected until it is (fail closed)`,
	}, {
		name: "issuer discovery",
		ras:  []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "https://accounts.example"}}})},
		jwks: map[string]string{"https://accounts.example": testJWKS},
		want: `{"providers":{"origins-0":{"issuer":"https://accounts.example","payloadInMetadata":"https://accounts.example",` + defaults + `,` + local(testJWKS) + `}},` + oneProviderRule + `}`,
	}, {
		name: "issuer not discovered fails closed",
		ras:  []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "https://accounts.example"}}})},
		want: `{"providers":{"origins-0":{"issuer":"https://accounts.example","payloadInMetadata":"https://accounts.example",` + defaults + `,` + local(FailClosedJWKS) + `}},` + oneProviderRule + `}`,
		warn: `jwtRules[0].issuer: no key set fetched for "https://accounts.example" (yet)`,
	}, {
		name: "several rules: sorted by issuer, istiod's requirement",
		ras: []*config.Object{
			raObj("foo", "b", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "zeta", Jwks: testJWKS}}}),
			raObj("istio-system", "mesh", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "alpha", Jwks: testJWKS}}}),
			raObj("bar", "elsewhere", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "other", Jwks: testJWKS}}}),
		},
		want: `{"providers":{` +
			`"origins-0":{"issuer":"alpha","payloadInMetadata":"alpha",` + defaults + `,` + local(testJWKS) + `},` +
			`"origins-1":{"issuer":"zeta","payloadInMetadata":"zeta",` + defaults + `,` + local(testJWKS) + `}},` +
			`"rules":[{"match":{"prefix":"/"},"requires":{"requiresAny":{"requirements":[` +
			`{"providerName":"origins-0"},{"providerName":"origins-1"},` +
			`{"requiresAll":{"requirements":[` +
			`{"requiresAny":{"requirements":[{"providerName":"origins-0"},{"allowMissing":{}}]}},` +
			`{"requiresAny":{"requirements":[{"providerName":"origins-1"},{"allowMissing":{}}]}}]}}]}}}],"bypassCorsPreflight":true}`,
	}, {
		name: "selector not matching",
		ras: []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}},
			JwtRules: []*security.JWTRule{{Issuer: "iss", Jwks: testJWKS}},
		})},
	}, {
		name: "targetRef to a Service is not translated",
		ras: []*config.Object{raObj("foo", "ra", &security.RequestAuthentication{
			TargetRef: &typev1beta1.PolicyTargetReference{Kind: "Service", Name: "web"},
			JwtRules:  []*security.JWTRule{{Issuer: "iss", Jwks: testJWKS}},
		})},
		warn: "RequestAuthentication foo/ra: targetRef: not translated",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			b := secBuilder(Input{RequestAuthentications: tc.ras, JWKS: tc.jwks}, Proxy{Labels: map[string]string{"app": "web"}})
			got := jwtConfig(t, b)
			if tc.want == "" {
				if got != nil {
					t.Errorf("filter %s, want none", mustJSON(got))
				}
			} else {
				want := &jwtv3.JwtAuthentication{}
				if err := protojson.Unmarshal([]byte(tc.want), want); err != nil {
					t.Fatalf("bad test JSON: %v", err)
				}
				if !proto.Equal(got, want) {
					t.Errorf("jwt_authn\n got %s\nwant %s", mustJSON(got), mustJSON(want))
				}
			}
			warnings := strings.Join(sortedWarnings(b), "\n")
			if (tc.warn == "") != (warnings == "") || !strings.Contains(warnings, tc.warn) {
				t.Errorf("warnings %q, want %q", warnings, tc.warn)
			}
		})
	}
}

// The fail-closed key set must parse as a JWKS (or the proxy would refuse
// the whole filter) and hold a real RSA key.
func TestFailClosedJWKS(t *testing.T) {
	var set struct {
		Keys []struct {
			Kty, N, E string
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(FailClosedJWKS), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].Kty != "RSA" || set.Keys[0].E != "AQAB" {
		t.Fatalf("keys %+v", set.Keys)
	}
	n, err := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	if err != nil || len(n) != 256 {
		t.Fatalf("modulus: %d bytes, %v; want a 2048-bit key", len(n), err)
	}
}
