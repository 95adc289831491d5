package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// idp is a small OpenID provider on loopback: discovery, a JWKS with an
// RS256 and an ES256 key, and tokens signed with them.
type idp struct {
	srv    *httptest.Server
	issuer string
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
}

func startIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{}
	var err error
	if p.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": p.issuer, "jwks_uri": p.issuer + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &p.rsa.PublicKey, KeyID: "rsa-1", Algorithm: "RS256", Use: "sig"},
			{Key: &p.ec.PublicKey, KeyID: "ec-1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL
	return p
}

// token signs claims with alg (RS256 or ES256) under kid.
func (p *idp) token(t *testing.T, alg jose.SignatureAlgorithm, kid string, c jwt.Claims) string {
	t.Helper()
	var key crypto.Signer = p.rsa
	if alg == jose.ES256 {
		key = p.ec
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *idp) claims(sub string, validFor time.Duration) jwt.Claims {
	now := time.Now()
	return jwt.Claims{Issuer: p.issuer, Subject: sub, Audience: jwt.Audience{"reviews"},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(validFor))}
}

// TestJWTAuthorizationSeedScenario is the seed scenario: a JWT
// from an identity provider, a RequestAuthentication pointing at its
// JWKS (fetched by the control plane), and an AuthorizationPolicy
// allowing only GET for one request principal; everything else is
// refused, with Istio's status codes.
func TestJWTAuthorizationSeedScenario(t *testing.T) {
	p := startIDP(t)
	cp := startControlPlane(t, cpOpts{secure: true})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	cp.startWorkload(t, "reviews-v1", "v1", startApp(t, "reviews-v1", "v1"), cp.identity(t, "reviews")...)
	client := cp.startClient(t, cp.identity(t, "productpage")...)
	c := meshClient(client.Listen)
	t.Cleanup(c.CloseIdleConnections)
	waitVersions(t, c, "http://reviews:9080/", 15*time.Second, "v1")

	cp.mustApply(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  jwtRules:
  - issuer: %[1]q
    jwksUri: %[1]s/jwks
    audiences: [reviews]
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: alice-reads, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["%[1]s/alice"]
    to:
    - operation:
        methods: [GET]
`, p.issuer), "requestauthentication.security.istio.io/reviews-jwt created", "authorizationpolicy.security.istio.io/alice-reads created")

	do := func(method, path, token string) (int, string, http.Header) {
		req, _ := http.NewRequest(method, "http://reviews:9080"+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	alice := p.token(t, jose.ES256, "ec-1", p.claims("alice", time.Hour))
	// The policies are in place once a request without token is refused
	// and alice's is let through (the JWKS fetched by the control plane).
	if err := eventually(15*time.Second, func() error {
		if code, body, _ := do("GET", "/", ""); code != 403 || body != "RBAC: access denied" {
			return fmt.Errorf("no token: %d %q", code, body)
		}
		if code, body, _ := do("GET", "/", alice); code != 200 {
			return fmt.Errorf("alice: %d %q", code, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := do("GET", "/", alice); !strings.Contains(body, `"x-jwt-payload"`) {
		t.Errorf("the application did not get x-jwt-payload: %s", body)
	}

	expired := p.claims("alice", -5*time.Minute) // beyond the 60 s clock skew
	expired.IssuedAt, expired.NotBefore = jwt.NewNumericDate(time.Now().Add(-time.Hour)), jwt.NewNumericDate(time.Now().Add(-time.Hour))
	future := p.claims("alice", 2*time.Hour)
	future.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	wrongIss := p.claims("alice", time.Hour)
	wrongIss.Issuer = "https://evil.example.com"
	wrongAud := p.claims("alice", time.Hour)
	wrongAud.Audience = jwt.Audience{"payments"}
	parts := strings.Split(alice, ".")
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	cases := []struct {
		name, method, token string
		code                int
		body                string
	}{
		{"alice RS256", "GET", p.token(t, jose.RS256, "rsa-1", p.claims("alice", time.Hour)), 200, ""},
		{"alice POST", "POST", alice, 403, "RBAC: access denied"},
		{"bob", "GET", p.token(t, jose.ES256, "ec-1", p.claims("bob", time.Hour)), 403, "RBAC: access denied"},
		{"expired", "GET", p.token(t, jose.ES256, "ec-1", expired), 401, "Jwt is expired"},
		{"not yet valid", "GET", p.token(t, jose.ES256, "ec-1", future), 401, "Jwt not yet valid"},
		{"wrong issuer", "GET", p.token(t, jose.ES256, "ec-1", wrongIss), 401, "Jwt issuer is not configured"},
		{"wrong audience", "GET", p.token(t, jose.ES256, "ec-1", wrongAud), 403, "Audiences in Jwt are not allowed"},
		{"unknown kid", "GET", p.token(t, jose.ES256, "ec-9", p.claims("alice", time.Hour)), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"bad signature", "GET", badSig, 401, "Jwt verification fails"},
		{"alg none", "GET", none, 401, ""},
	}
	for _, tc := range cases {
		code, body, h := do(tc.method, "/", tc.token)
		if code != tc.code || (tc.body != "" && body != tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, code, body, tc.code, tc.body)
		}
		if code == 401 && !strings.HasPrefix(h.Get("www-authenticate"), "Bearer realm=") {
			t.Errorf("%s: www-authenticate %q", tc.name, h.Get("www-authenticate"))
		}
	}

	// DENY is checked before ALLOW.
	cp.mustApply(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  action: DENY
  rules:
  - to:
    - operation:
        paths: [/admin*]
`, "authorizationpolicy.security.istio.io/no-admin created")
	if err := eventually(10*time.Second, func() error {
		if code, body, _ := do("GET", "/admin/users", alice); code != 403 {
			return fmt.Errorf("alice GET /admin/users: %d %q", code, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do("GET", "/reviews", alice); code != 200 {
		t.Errorf("alice GET /reviews under the DENY policy: %d %q", code, body)
	}
}
