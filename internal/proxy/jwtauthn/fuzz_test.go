package jwtauthn

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzAuthenticate feeds arbitrary Authorization values through the
// Istio-shaped configuration: it must never panic, and a token may only
// pass if it carries exactly a genuinely signed token's header, payload
// and signature (base64 spelling aside).
func FuzzAuthenticate(f *testing.F) {
	k := getKeys(f)
	valid := []string{
		sign(f, jose.ES256, k.ec, "ec1", goodClaims()),
		sign(f, jose.RS256, k.rsa, "", goodClaims()),
		sign(f, jose.EdDSA, k.ed, "ed1", goodClaims()),
	}
	for _, v := range valid {
		f.Add("Bearer " + v)
	}
	f.Add("Bearer " + rawToken(`{"alg":"none"}`, `{"iss":"`+testIssuer+`"}`, []byte("x")))
	f.Add("Bearer e30.e30.e30")
	f.Add("Bearer ...")
	f.Add("Bearer")
	f.Add("")

	flt := newFilter(f, istioConfig(f, testIssuer), nil)
	decode := func(tok string) [3][]byte {
		var out [3][]byte
		for i, p := range strings.SplitN(tok, ".", 3) {
			out[i], _ = base64.RawURLEncoding.DecodeString(strings.TrimRight(p, "="))
		}
		return out
	}
	var genuine [][3][]byte
	for _, v := range valid {
		genuine = append(genuine, decode(v))
	}
	f.Fuzz(func(t *testing.T, authz string) {
		req := bearer("/", "")
		req.Headers.Add("authorization", authz)
		res := flt.Authenticate(context.Background(), req, nil)
		md := res.Metadata()
		if !res.Passed() || md == nil {
			return // rejected, or passed as a request without token
		}
		tok := authz[strings.Index(authz, "Bearer ")+len("Bearer "):]
		tok = strings.TrimLeftFunc(tok, func(r rune) bool { return !isTokenChar(r) })
		got := decode(tok)
		for _, g := range genuine {
			if bytes.Equal(got[0], g[0]) && bytes.Equal(got[1], g[1]) && bytes.Equal(got[2], g[2]) {
				return
			}
		}
		t.Fatalf("forged token passed: %q", authz)
	})
}
