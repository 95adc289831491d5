package explain

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// signer makes ES256 tokens and the JWKS that verifies them.
type signer struct {
	key  *ecdsa.PrivateKey
	jwks string
}

func newSigner(t *testing.T) signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return signer{key: key, jwks: string(b)}
}

func (s signer) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := js.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestJWT(t *testing.T) {
	s := newSigner(t)
	ra := `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '` + s.jwks + `'
`
	requirePrincipal := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {requestPrincipals: [https://issuer.example/alice]}}]}]
`
	exp := time.Now().Add(time.Hour).Unix()
	good := s.token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "exp": exp})
	other := newSigner(t).token(t, map[string]any{"iss": "https://issuer.example", "sub": "alice", "exp": exp})
	bob := s.token(t, map[string]any{"iss": "https://issuer.example", "sub": "bob", "exp": exp})
	cases := []struct {
		name, config, token string
		want                []want
		jwtStep             string
	}{
		{"no token passes", ra, "", []want{{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}, "no token"},
		{"valid token", ra, good, []want{{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}, "token verified"},
		{"token signed by another key", ra, other, []want{{percent: 100, status: 401, reason: "JWT authentication failed: Jwt verification fails", by: "RequestAuthentication (issuers https://issuer.example)"}}, "token rejected: 401"},
		{"principal required, token of alice", ra + "---\n" + requirePrincipal, good, []want{{percent: 50, reason: "reaches reviews-v1"}, {percent: 50, reason: "reaches reviews-v2"}}, "token verified"},
		{"principal required, token of bob", ra + "---\n" + requirePrincipal, bob, []want{{percent: 100, status: 403, reason: "RBAC: no ALLOW policy matches", by: "AuthorizationPolicy default/require-jwt"}}, "token verified"},
		{"principal required, no token", ra + "---\n" + requirePrincipal, "", []want{{percent: 100, status: 403, reason: "RBAC: no ALLOW policy matches"}}, "no token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{URL: "http://reviews:9080/r/1"}
			if tc.token != "" {
				req.Headers = map[string][]string{"Authorization": {"Bearer " + tc.token}}
			}
			tr := fixture{config: tc.config}.explain(t, req)
			checkOutcomes(t, tr, tc.want)
			st := findStep(t, tr, "jwt", tc.jwtStep)
			if st.hop == 0 {
				t.Errorf("jwt step on the source's hop")
			}
			if tc.jwtStep == "token verified" {
				if sub := strings.TrimPrefix(st.Why, "request principal https://issuer.example/"); sub != "alice" && sub != "bob" {
					t.Errorf("jwt why %q: want the request principal", st.Why)
				}
			}
		})
	}
}
