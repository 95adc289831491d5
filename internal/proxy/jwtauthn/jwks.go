package jwtauthn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Fetcher fetches a remote JWKS document. The integrator implements it by
// sending a GET for uri through the named cluster (remote_jwks.http_uri);
// ctx carries the http_uri timeout. A non-2xx answer must be an error.
type Fetcher interface {
	Fetch(ctx context.Context, cluster, uri string) ([]byte, error)
}

// HTTPFetcher fetches JWKS with a plain HTTP client, ignoring the cluster:
// for tests and static set-ups where the URI is directly reachable.
type HTTPFetcher struct {
	Client *http.Client // nil: http.DefaultClient
}

// maxJWKSSize bounds a fetched document; real key sets are a few KiB.
const maxJWKSSize = 1 << 20

// Fetch implements Fetcher.
func (h HTTPFetcher) Fetch(ctx context.Context, _ string, uri string) ([]byte, error) {
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request %s: %w", uri, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks fetch %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("jwks fetch %s: status %d", uri, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("jwks fetch %s: %w", uri, err)
	}
	if len(b) > maxJWKSSize {
		return nil, fmt.Errorf("jwks fetch %s: document larger than %d bytes", uri, maxJWKSSize)
	}
	return b, nil
}

// jwk is one usable verification key.
type jwk struct {
	kid, alg string
	kty      string // "RSA", "EC", "OKP" or "oct"
	crv      string // EC curve name
	key      any    // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte
}

// keySet is an immutable parsed JWKS, swapped whole on refresh.
type keySet struct {
	keys []jwk
}

var errNoValidKeys = errors.New(StatusJwksNoValidKeys.String())

// parseJWKS parses a JWKS document. Keys that do not parse, or whose alg
// does not fit their type, are skipped as Envoy skips them; a set left
// without keys is an error.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks is an invalid JSON: %w", err)
	}
	ks := &keySet{}
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if j, ok := toJWK(&k); ok {
			ks.keys = append(ks.keys, j)
		}
	}
	if len(ks.keys) == 0 {
		return nil, errNoValidKeys
	}
	return ks, nil
}

func toJWK(k *jose.JSONWebKey) (jwk, bool) {
	j := jwk{kid: k.KeyID, alg: k.Algorithm}
	key := k.Key
	// A JWKS should hold public keys only; if it carries private ones,
	// verify with their public half.
	switch pk := key.(type) {
	case *rsa.PrivateKey:
		key = &pk.PublicKey
	case *ecdsa.PrivateKey:
		key = &pk.PublicKey
	case ed25519.PrivateKey:
		key = pk.Public()
	}
	switch pk := key.(type) {
	case *rsa.PublicKey:
		j.kty = "RSA"
		if j.alg != "" && !strings.HasPrefix(j.alg, "RS") && !strings.HasPrefix(j.alg, "PS") {
			return j, false
		}
	case *ecdsa.PublicKey:
		j.kty = "EC"
		switch pk.Curve {
		case elliptic.P256():
			j.crv = "P-256"
		case elliptic.P384():
			j.crv = "P-384"
		case elliptic.P521():
			j.crv = "P-521"
		default:
			return j, false
		}
		if j.alg != "" && curveFor(j.alg) != j.crv {
			return j, false
		}
	case ed25519.PublicKey:
		j.kty = "OKP"
		if j.alg != "" && j.alg != "EdDSA" {
			return j, false
		}
	case []byte:
		j.kty = "oct"
		if j.alg != "" && !strings.HasPrefix(j.alg, "HS") {
			return j, false
		}
	default:
		return j, false
	}
	j.key = key
	return j, true
}

func curveFor(alg string) string {
	switch alg {
	case "ES256":
		return "P-256"
	case "ES384":
		return "P-384"
	case "ES512":
		return "P-521"
	}
	return ""
}

// fits reports whether the key's type can verify alg. It is what keeps a
// public key from ever being used as an HMAC secret (the HS256-with-the-
// RSA-public-key forgery): HS* only ever meets "oct" keys.
func (k *jwk) fits(alg string) bool {
	switch k.kty {
	case "RSA":
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case "EC":
		return curveFor(alg) == k.crv
	case "OKP":
		return alg == "EdDSA"
	case "oct":
		return strings.HasPrefix(alg, "HS")
	}
	return false
}

// verify checks t's signature against the set, choosing keys as Envoy
// does: a key with a different kid is skipped when both have one, a key
// with a different alg is skipped when it names one; no candidate at all
// is StatusJwksKidAlgMismatch, candidates that all fail are
// StatusVerificationFail.
func (ks *keySet) verify(t *jwt) Status {
	var jws *jose.JSONWebSignature
	matched := false
	for i := range ks.keys {
		k := &ks.keys[i]
		if t.kid != "" && k.kid != "" && k.kid != t.kid {
			continue
		}
		if k.alg != "" && k.alg != t.alg {
			continue
		}
		matched = true
		if !k.fits(t.alg) {
			continue
		}
		if k.kty == "OKP" && len(t.sig) != ed25519.SignatureSize {
			return StatusEd25519SignatureWrongLength
		}
		if jws == nil {
			var err error
			// Only the token's own (already vetted) alg is accepted.
			if jws, err = jose.ParseSignedCompact(t.raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(t.alg)}); err != nil {
				return StatusVerificationFail
			}
		}
		if _, err := jws.Verify(k.key); err == nil {
			return StatusOK
		}
	}
	if matched {
		return StatusVerificationFail
	}
	return StatusJwksKidAlgMismatch
}

// keySource gives a provider's current keys.
type keySource interface {
	// keys returns the current set, waiting (bounded by ctx) for a first
	// remote fetch still in flight; nil with the status to fail with when
	// there is none.
	keys(ctx context.Context) (*keySet, Status)
}

// localKeys is local_jwks: parsed once at configuration time.
type localKeys struct{ set *keySet }

func (l localKeys) keys(context.Context) (*keySet, Status) {
	if l.set == nil {
		return nil, StatusJwksNoValidKeys
	}
	return l.set, StatusOK
}

// remoteKeys is remote_jwks: refreshed in the background by run. A failed
// refresh keeps the last good set; with no good set ever, tokens fail.
type remoteKeys struct {
	cfg   *remoteConfig
	fetch Fetcher
	cur   atomic.Pointer[keySet]
	ready chan struct{} // closed once the first fetch attempt is over
	once  sync.Once

	// lastErr is the last fetch error, for Filter.WaitReady's report.
	mu      sync.Mutex
	lastErr error
}

func newRemoteKeys(cfg *remoteConfig, f Fetcher) *remoteKeys {
	return &remoteKeys{cfg: cfg, fetch: f, ready: make(chan struct{})}
}

func (r *remoteKeys) keys(ctx context.Context) (*keySet, Status) {
	if ks := r.cur.Load(); ks != nil {
		return ks, StatusOK
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, StatusJwksFetchFail
	}
	if ks := r.cur.Load(); ks != nil {
		return ks, StatusOK
	}
	return nil, StatusJwksFetchFail
}

// run fetches now, then again every cache_duration after a success and
// every failed_refetch_duration after a failure, until ctx ends.
func (r *remoteKeys) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.once.Do(func() { close(r.ready) })
			return
		case <-t.C:
		}
		next := r.cfg.cacheDuration
		if err := r.refresh(ctx); err != nil {
			next = r.cfg.failedRefetch
		}
		r.once.Do(func() { close(r.ready) })
		t.Reset(next)
	}
}

func (r *remoteKeys) refresh(ctx context.Context) error {
	fctx, cancel := ctx, context.CancelFunc(func() {})
	if r.cfg.timeout > 0 {
		fctx, cancel = context.WithTimeout(ctx, r.cfg.timeout)
	}
	defer cancel()
	b, err := r.fetch.Fetch(fctx, r.cfg.cluster, r.cfg.uri)
	if err == nil {
		var ks *keySet
		if ks, err = parseJWKS(b); err == nil {
			r.cur.Store(ks)
		}
	}
	if err != nil {
		err = fmt.Errorf("provider %q: jwks %s: %w", r.cfg.provider, r.cfg.uri, err)
	}
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	return err
}
