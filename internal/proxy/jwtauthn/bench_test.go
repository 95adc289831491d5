package jwtauthn

import (
	"context"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// BenchmarkAuthenticateES256 is the hot path of an Istio
// RequestAuthentication: one valid ES256 token in Authorization.
func BenchmarkAuthenticateES256(b *testing.B) {
	k := getKeys(b)
	f := newFilter(b, istioConfig(b, testIssuer), nil)
	tok := sign(b, jose.ES256, k.ec, "ec1", goodClaims())
	h := make(header.List, 0, 8)
	req := &Request{Method: "GET", Scheme: "http", Host: "svc", Headers: &h}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h.Reset()
		h.Add("authorization", "Bearer "+tok)
		req.Path = "/"
		if res := f.Authenticate(ctx, req, nil); !res.Passed() {
			b.Fatal(res.Body)
		}
	}
}

// BenchmarkAuthenticateNoToken is a request without a token under the
// same policy: the common case of mesh-internal traffic.
func BenchmarkAuthenticateNoToken(b *testing.B) {
	f := newFilter(b, istioConfig(b, testIssuer), nil)
	h := header.List{{Name: "user-agent", Value: "x"}}
	req := &Request{Method: "GET", Scheme: "http", Host: "svc", Path: "/", Headers: &h}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := f.Authenticate(ctx, req, nil); !res.Passed() {
			b.Fatal(res.Body)
		}
	}
}
