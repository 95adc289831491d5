package jwtauthn

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// refreshers counts the Filter's JWKS goroutines still running.
func refreshers() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "jwtauthn.(*remoteKeys).run")
}

func TestRemoteJWKS(t *testing.T) {
	k := getKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, pub(k.rsa, "rsa1", "RS256"), pub(k.ec, "ec1", "ES256")))
	client := &http.Client{}
	defer client.CloseIdleConnections()
	f := newFilter(t, requiredConfig(remoteProvider(srv.URL+"/jwks", 50*time.Millisecond)), HTTPFetcher{Client: client})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	check := func(what, tok string, want Status) {
		t.Helper()
		if res := f.Authenticate(ctx, bearer("/", tok), nil); res.Status != want {
			t.Errorf("%s: status %q, want %q", what, res.Status, want)
		}
	}
	oldRSA := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())
	check("valid RS256", oldRSA, StatusOK)
	check("valid ES256", sign(t, jose.ES256, k.ec, "ec1", goodClaims()), StatusOK)
	check("bad signature", sign(t, jose.RS256, k.rsa2, "rsa1", goodClaims()), StatusVerificationFail)

	// The server stops answering: the cached keys keep working and
	// invalid tokens are still refused.
	srv.down.Store(true)
	hits := srv.hits.Load()
	eventually(t, "refresh attempts against the down server", func() bool { return srv.hits.Load() >= hits+2 })
	check("valid token while the JWKS server is down", oldRSA, StatusOK)
	check("forged token while the JWKS server is down", sign(t, jose.RS256, k.rsa2, "rsa1", goodClaims()), StatusVerificationFail)

	// Rotation: the server publishes rsa2 under a new kid and drops rsa1.
	newRSA := sign(t, jose.RS256, k.rsa2, "rsa2", goodClaims())
	srv.doc.Store(jwksJSON(t, pub(k.rsa2, "rsa2", "RS256")))
	srv.down.Store(false)
	eventually(t, "the rotated key to verify", func() bool {
		return f.Authenticate(ctx, bearer("/", newRSA), nil).Status == StatusOK
	})
	check("token of the retired key", oldRSA, StatusJwksKidAlgMismatch)
}

func TestRemoteJWKSNeverFetched(t *testing.T) {
	k := getKeys(t)
	srv := newJWKSServer(t, "")
	srv.down.Store(true)
	f := newFilter(t, requiredConfig(remoteProvider(srv.URL, time.Minute)), HTTPFetcher{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Errorf("WaitReady = %v, want the fetch error", err)
	}
	tok := sign(t, jose.RS256, k.rsa, "rsa1", goodClaims())
	if res := f.Authenticate(ctx, bearer("/", tok), nil); res.Status != StatusJwksFetchFail || res.Code != 401 {
		t.Errorf("without keys: %d %q, want 401 %q", res.Code, res.Status, StatusJwksFetchFail)
	}
	// The server comes up: the next refresh (failed_refetch_duration)
	// brings keys.
	srv.doc.Store(defaultJWKS(t))
	srv.down.Store(false)
	eventually(t, "keys after the server came up", func() bool {
		return f.Authenticate(ctx, bearer("/", tok), nil).Status == StatusOK
	})
}

// blockingFetcher answers once released, and honours ctx.
type blockingFetcher struct {
	release chan struct{}
	doc     string
}

func (b *blockingFetcher) Fetch(ctx context.Context, _, _ string) ([]byte, error) {
	select {
	case <-b.release:
		return []byte(b.doc), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestRequestsWaitForFirstFetch(t *testing.T) {
	k := getKeys(t)
	bf := &blockingFetcher{release: make(chan struct{}), doc: defaultJWKS(t)}
	f := newFilter(t, requiredConfig(remoteProvider("http://jwks.invalid/", time.Minute)), bf)
	tok := sign(t, jose.ES256, k.ec, "ec1", goodClaims())

	// A request whose own deadline passes first fails closed.
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if res := f.Authenticate(short, bearer("/", tok), nil); res.Status != StatusJwksFetchFail {
		t.Errorf("before the first fetch: %q, want %q", res.Status, StatusJwksFetchFail)
	}
	done := make(chan Result, 1)
	go func() { done <- f.Authenticate(context.Background(), bearer("/", tok), nil) }()
	close(bf.release)
	select {
	case res := <-done:
		if !res.Passed() {
			t.Errorf("after the first fetch: %d %q", res.Code, res.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request still waiting after the fetch completed")
	}
}

func TestFetchTimeout(t *testing.T) {
	bf := &blockingFetcher{release: make(chan struct{})} // never released
	p := remoteProvider("http://jwks.invalid/", time.Minute)
	p.GetRemoteJwks().HttpUri.Timeout.Seconds, p.GetRemoteJwks().HttpUri.Timeout.Nanos = 0, int32(20*time.Millisecond)
	f := newFilter(t, requiredConfig(p), bf)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Errorf("WaitReady = %v, want the fetch to time out on http_uri.timeout", err)
	}
}

func TestCloseStopsRefreshers(t *testing.T) {
	before := refreshers()
	bf := &blockingFetcher{release: make(chan struct{})}
	cfg, err := Compile(requiredConfig(remoteProvider("http://jwks.invalid/", time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(cfg, Options{Fetcher: bf})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refresher to start", func() bool { return refreshers() == before+1 })
	f.Close() // with a fetch in flight
	if n := refreshers(); n != before {
		t.Errorf("%d refreshers after Close, want %d", n, before)
	}
	if _, err := New(cfg, Options{}); err == nil {
		t.Error("New without a Fetcher accepted a remote_jwks provider")
	}
}
