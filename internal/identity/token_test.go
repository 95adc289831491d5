package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	toks, err := LoadOrCreateTokens(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, TokenKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	tok, id, err := toks.Create("shop", "reviews", time.Hour)
	if err != nil || id.String() != "spiffe://cluster.local/ns/shop/sa/reviews" {
		t.Fatalf("Create: %v, %s", err, id)
	}
	// The key persists: a restarted control plane accepts the token.
	again, err := LoadOrCreateTokens(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Verify(tok); err != nil || got != id {
		t.Fatalf("Verify after reload: %s, %v", got, err)
	}

	now := time.Now()
	again.now = func() time.Time { return now.Add(2 * time.Hour) }
	if _, err := again.Verify(tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v, want an expiry error", err)
	}

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, err := NewTokens(otherKey, spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := other.Create("shop", "reviews", time.Hour)
	if _, err := toks.Verify(foreign); err == nil {
		t.Error("a token signed by another key verified")
	}
	if _, _, err := toks.Create("shop", "", time.Hour); err == nil {
		t.Error("a token for an empty service account was issued")
	}
}
