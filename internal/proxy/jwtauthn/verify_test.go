package jwtauthn

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
)

// requiredConfig requires provider "p" on every path.
func requiredConfig(p *jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": p},
		Rules:     []*jwtv3.RequirementRule{prefixRule("/", requireProvider("p"))},
	}
}

func TestVerify(t *testing.T) {
	k := getKeys(t)
	f := newFilter(t, requiredConfig(localProvider(defaultJWKS(t))), nil)

	// HS256 "signed" with the RSA public key as the HMAC secret: the
	// classic confusion attack, in the forms a secret would be read as.
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hs := func(secret []byte, kid string) string {
		hdr := `{"alg":"HS256","typ":"JWT"`
		if kid != "" {
			hdr += `,"kid":"` + kid + `"`
		}
		hdr += "}"
		unsigned := b64(hdr) + "." + b64(`{"iss":"`+testIssuer+`","sub":"mallory","aud":"`+testAud+`"}`)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(unsigned))
		return unsigned + "." + b64(string(m.Sum(nil)))
	}
	valid := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())
	parts := strings.Split(valid, ".")
	otherSig := strings.Split(sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("sub", "bob")), ".")[2]

	tests := []struct {
		name  string
		token string
		want  Status
	}{
		{"valid RS256", valid, StatusOK},
		{"valid ES256", sign(t, jose.ES256, k.ec, "ec1", goodClaims()), StatusOK},
		{"valid EdDSA", sign(t, jose.EdDSA, k.ed, "ed1", goodClaims()), StatusOK},
		{"no kid tries keys of the alg", sign(t, jose.ES256, k.ec, "", goodClaims()), StatusOK},
		{"aud list, one allowed", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("aud", []string{"other", "https://api.example.com/"})), StatusOK},
		{"exp within clock skew", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("exp", testNow.Add(-30*time.Second).Unix())), StatusOK},
		{"nbf within clock skew", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("nbf", testNow.Add(30*time.Second).Unix())), StatusOK},
		{"expired", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("exp", testNow.Add(-61*time.Second).Unix())), StatusExpired},
		{"not yet valid", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("nbf", testNow.Add(2*time.Minute).Unix())), StatusNotYetValid},
		{"wrong issuer", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("iss", "https://evil.example.com")), StatusUnknownIssuer},
		{"no issuer", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("iss", nil)), StatusUnknownIssuer},
		{"wrong audience", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("aud", "other")), StatusAudienceNotAllowed},
		{"no audience", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims().with("aud", nil)), StatusAudienceNotAllowed},
		{"bad signature", parts[0] + "." + parts[1] + "." + otherSig, StatusVerificationFail},
		{"tampered payload", parts[0] + "." + b64(`{"iss":"`+testIssuer+`","sub":"root","aud":"`+testAud+`"}`) + "." + parts[2], StatusVerificationFail},
		{"signed by an unknown key", sign(t, jose.RS256, k.rsa2, "rsa1", goodClaims()), StatusVerificationFail},
		{"unknown kid", sign(t, jose.RS256, k.rsa, "nope", goodClaims()), StatusJwksKidAlgMismatch},
		{"kid of a key with another alg", sign(t, jose.RS256, k.rsa, "ec1", goodClaims()), StatusJwksKidAlgMismatch},
		{"alg none", rawToken(`{"alg":"none","typ":"JWT"}`, `{"iss":"`+testIssuer+`","aud":"`+testAud+`"}`, []byte("x")), StatusHeaderNotImplementedAlg},
		{"alg none, empty signature", rawToken(`{"alg":"none"}`, `{"iss":"`+testIssuer+`"}`, nil), StatusBadFormat},
		{"HS256 with the PEM public key", hs(pemKey, ""), StatusJwksKidAlgMismatch},
		{"HS256 with the DER public key and its kid", hs(der, "rsa1"), StatusJwksKidAlgMismatch},
		{"HS256 with the modulus", hs(k.rsa.N.Bytes(), ""), StatusJwksKidAlgMismatch},
		{"two sections", parts[0] + "." + parts[1], StatusBadFormat},
		{"four sections", valid + ".x", StatusBadFormat},
		{"empty section", parts[0] + ".." + parts[2], StatusBadFormat},
		{"not a jwt", "hello", StatusBadFormat},
		{"header not base64", "ab!c." + parts[1] + "." + parts[2], StatusHeaderBadBase64},
		{"header not JSON", rawToken("nope", "{}", []byte("x")), StatusHeaderBadJSON},
		{"header null", rawToken("null", "{}", []byte("x")), StatusHeaderBadJSON},
		{"alg not a string", rawToken(`{"alg":256}`, "{}", []byte("x")), StatusHeaderBadAlg},
		{"no alg", rawToken(`{"typ":"JWT"}`, "{}", []byte("x")), StatusHeaderBadAlg},
		{"kid not a string", rawToken(`{"alg":"RS256","kid":1}`, "{}", []byte("x")), StatusHeaderBadKid},
		{"payload not base64", parts[0] + ".%%%." + parts[2], StatusPayloadBadBase64},
		{"payload not JSON", rawToken(`{"alg":"RS256"}`, "[1,2]", []byte("x")), StatusPayloadBadJSON},
		{"iss not a string", rawToken(`{"alg":"RS256"}`, `{"iss":1}`, []byte("x")), StatusIssNotString},
		{"exp not a number", rawToken(`{"alg":"RS256"}`, `{"exp":"soon"}`, []byte("x")), StatusExpNotInteger},
		{"exp negative", rawToken(`{"alg":"RS256"}`, `{"exp":-5}`, []byte("x")), StatusExpOutOfRange},
		{"nbf null", rawToken(`{"alg":"RS256"}`, `{"nbf":null}`, []byte("x")), StatusNbfNotInteger},
		{"aud not strings", rawToken(`{"alg":"RS256"}`, `{"aud":[1]}`, []byte("x")), StatusAudNotString},
		{"signature not base64", parts[0] + "." + parts[1] + ".***", StatusSignatureBadBase64},
		{"exp case-variant does not shadow exp", rawToken(`{"alg":"RS256","kid":"rsa1"}`, `{"iss":"`+testIssuer+`","aud":"`+testAud+`","exp":1,"EXP":9999999999}`, []byte("x")), StatusExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := bearer("/api", tc.token)
			res := f.Authenticate(context.Background(), req, nil)
			if res.Status != tc.want {
				t.Fatalf("status = %q, want %q", res.Status, tc.want)
			}
			if tc.want == StatusOK {
				if !res.Passed() {
					t.Fatalf("rejected with %d %q", res.Code, res.Body)
				}
				if req.Headers.Has("authorization") {
					t.Error("authorization header forwarded; forward is false")
				}
				return
			}
			wantCode := 401
			if tc.want == StatusAudienceNotAllowed {
				wantCode = 403
			}
			if res.Code != wantCode || res.Body != tc.want.String() {
				t.Errorf("reply = %d %q, want %d %q", res.Code, res.Body, wantCode, tc.want)
			}
			if want := `Bearer realm="http://svc.local/api", error="invalid_token"`; res.WWWAuthenticate != want {
				t.Errorf("www-authenticate = %q, want %q", res.WWWAuthenticate, want)
			}
			if !strings.HasPrefix(res.Details, "jwt_authn_access_denied{") || strings.Contains(res.Details, " ") {
				t.Errorf("details = %q", res.Details)
			}
			if res.Metadata() != nil {
				t.Error("a rejected request has metadata")
			}
		})
	}
}

func TestMissingToken(t *testing.T) {
	f := newFilter(t, requiredConfig(localProvider(defaultJWKS(t))), nil)
	res := f.Authenticate(context.Background(), bearer("/a?b=c", ""), nil)
	if res.Code != 401 || res.Body != "Jwt is missing" {
		t.Fatalf("reply = %d %q, want 401 Jwt is missing", res.Code, res.Body)
	}
	// RFC 6750 §3.1: no error code when no credentials were sent.
	if want := `Bearer realm="http://svc.local/a?b=c"`; res.WWWAuthenticate != want {
		t.Errorf("www-authenticate = %q, want %q", res.WWWAuthenticate, want)
	}
	// A wrong scheme is no token at all.
	req := bearer("/", "")
	req.Headers.Add("authorization", "Basic dXNlcjpwYXNz")
	if res := f.Authenticate(context.Background(), req, nil); res.Status != StatusMissing {
		t.Errorf("Basic credentials: status %q, want missing", res.Status)
	}
}

func TestClockSkewConfigured(t *testing.T) {
	k := getKeys(t)
	p := localProvider(defaultJWKS(t))
	p.ClockSkewSeconds = 5
	f := newFilter(t, requiredConfig(p), nil)
	tok := sign(t, jose.ES256, k.ec, "ec1", goodClaims().with("exp", testNow.Add(-30*time.Second).Unix()))
	if res := f.Authenticate(context.Background(), bearer("/", tok), nil); res.Status != StatusExpired {
		t.Errorf("30s past exp with 5s skew: status %q, want expired", res.Status)
	}
}

func TestStripFailureResponse(t *testing.T) {
	m := requiredConfig(localProvider(defaultJWKS(t)))
	m.StripFailureResponse = true
	f := newFilter(t, m, nil)
	res := f.Authenticate(context.Background(), bearer("/", "x.y.z"), nil)
	if res.Code != 401 || res.Body != "" || res.WWWAuthenticate != "" {
		t.Errorf("reply = %d %q %q, want a bare 401", res.Code, res.Body, res.WWWAuthenticate)
	}
}

func TestLocalJWKSWithoutValidKeys(t *testing.T) {
	k := getKeys(t)
	cfg, err := Compile(requiredConfig(localProvider(`{"keys":[{"kty":"RSA","n":"!"}]}`)))
	if err != nil {
		t.Fatalf("Compile: %v (Envoy accepts an unusable local JWKS)", err)
	}
	if len(cfg.Warnings()) != 1 {
		t.Errorf("warnings = %q, want one", cfg.Warnings())
	}
	f, err := New(cfg, Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := f.Authenticate(context.Background(), bearer("/", sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())), nil)
	if res.Status != StatusJwksNoValidKeys {
		t.Errorf("status = %q, want %q", res.Status, StatusJwksNoValidKeys)
	}
}

func TestHMACWithOctKey(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	jwks := jwksJSON(t, jose.JSONWebKey{Key: secret, KeyID: "s1", Algorithm: "HS256"})
	f := newFilter(t, requiredConfig(localProvider(jwks)), nil)
	tok := sign(t, jose.HS256, secret, "s1", goodClaims())
	if res := f.Authenticate(context.Background(), bearer("/", tok), nil); !res.Passed() {
		t.Errorf("HS256 with an oct key: %d %q", res.Code, res.Body)
	}
	forged := sign(t, jose.HS256, []byte("another secret, 32 bytes long!!!"), "s1", goodClaims())
	if res := f.Authenticate(context.Background(), bearer("/", forged), nil); res.Status != StatusVerificationFail {
		t.Errorf("HS256 with another secret: status %q", res.Status)
	}
}
