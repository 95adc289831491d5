package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

const (
	testIssuer = "https://issuer.example.com"
	testAud    = "api.example.com"
)

// testNow is the fixed clock of the tests.
var testNow = time.Unix(1_800_000_000, 0)

// keys are one signing key per algorithm family, generated once.
type keys struct {
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
	rsa2 *rsa.PrivateKey // for rotation
}

var (
	keysOnce sync.Once
	testKeys keys
)

func getKeys(t testing.TB) keys {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if testKeys.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if testKeys.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if testKeys.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, testKeys.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
	return testKeys
}

// jwksJSON publishes the public halves of the given keys.
func jwksJSON(t testing.TB, ks ...jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pub(key any, kid, alg string) jose.JSONWebKey {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		key = &k.PublicKey
	case *ecdsa.PrivateKey:
		key = &k.PublicKey
	case ed25519.PrivateKey:
		key = k.Public()
	}
	return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
}

// defaultJWKS has an RS256 key "rsa1", an ES256 key "ec1" and an EdDSA
// key "ed1".
func defaultJWKS(t testing.TB) string {
	k := getKeys(t)
	return jwksJSON(t, pub(k.rsa, "rsa1", "RS256"), pub(k.ec, "ec1", "ES256"), pub(k.ed, "ed1", "EdDSA"))
}

// claims are a token's payload; standard ones are filled by sign.
type claims map[string]any

func goodClaims() claims {
	return claims{
		"iss": testIssuer,
		"sub": "alice",
		"aud": testAud,
		"exp": testNow.Add(time.Hour).Unix(),
		"iat": testNow.Add(-time.Minute).Unix(),
	}
}

func (c claims) with(kv ...any) claims {
	out := claims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// sign makes a compact JWS with go-jose.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c claims) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawToken assembles a token from JSON header and payload and raw
// signature bytes, for forgeries go-jose would not produce.
func rawToken(hdr, payload string, sig []byte) string {
	e := base64.RawURLEncoding
	return e.EncodeToString([]byte(hdr)) + "." + e.EncodeToString([]byte(payload)) + "." + e.EncodeToString(sig)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// provider configurations.

func localProvider(jwks string) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{
		Issuer:    testIssuer,
		Audiences: []string{testAud},
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: jwks},
		}},
	}
}

func remoteProvider(uri string, cache time.Duration) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{
		Issuer: testIssuer,
		JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              uri,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "jwks"},
				Timeout:          durationpb.New(2 * time.Second),
			},
			CacheDuration: durationpb.New(cache),
			AsyncFetch:    &jwtv3.JwksAsyncFetch{FailedRefetchDuration: durationpb.New(20 * time.Millisecond)},
		}},
	}
}

func prefixRule(prefix string, req *jwtv3.JwtRequirement) *jwtv3.RequirementRule {
	r := &jwtv3.RequirementRule{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}}
	if req != nil {
		r.RequirementType = &jwtv3.RequirementRule_Requires{Requires: req}
	}
	return r
}

func requireProvider(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func allowMissing() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
}

func allowMissingOrFailed() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}}
}

func requiresAny(rs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: rs}}}
}

func requiresAll(rs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: rs}}}
}

// newFilter compiles m and starts a Filter on the test clock.
func newFilter(t testing.TB, m *jwtv3.JwtAuthentication, f Fetcher) *Filter {
	t.Helper()
	cfg, err := Compile(m)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	flt, err := New(cfg, Options{Fetcher: f, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(flt.Close)
	return flt
}

// bearer builds a GET request carrying tok in Authorization.
func bearer(path, tok string) *Request {
	h := header.List{{Name: "user-agent", Value: "test"}}
	if tok != "" {
		h.Add("authorization", "Bearer "+tok)
	}
	return &Request{Method: "GET", Scheme: "http", Host: "svc.local", Path: path, Headers: &h}
}

// jwksServer is a JWKS endpoint on 127.0.0.1 whose document and health
// the test changes.
type jwksServer struct {
	*httptest.Server
	doc  atomic.Value // string
	down atomic.Bool
	hits atomic.Int64
}

func newJWKSServer(t testing.TB, doc string) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.doc.Store(doc)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(s.doc.Load().(string)))
	}))
	t.Cleanup(s.Close)
	return s
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
