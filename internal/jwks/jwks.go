// Package jwks fetches and caches the JSON Web Key Sets that
// RequestAuthentication jwtRules name, for the control plane: the
// translator is a pure function, so key sets reach it as data
// (translate.Input.JWKS, keyed by jwksUri, or by issuer for rules that
// rely on OpenID discovery).
//
// As istiod's JWKS resolver: key sets are fetched over HTTPS (plain HTTP
// only to loopback addresses, for tests and local issuers) with a bounded
// timeout, refreshed every 20 minutes, and the last good key set is kept
// when a refresh fails. A key set that was never fetched is simply absent;
// the translator then fails closed. OnChange tells the control plane when
// a key set changed, so it can push.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	security "istio.io/api/security/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

// Defaults, as istiod's.
const (
	DefaultTimeout         = 5 * time.Second
	DefaultRefreshInterval = 20 * time.Minute
	DefaultEvictAfter      = 24 * time.Hour
	// maxBody bounds what a misbehaving server can make us read.
	maxBody = 1 << 20
	// firstRetry is the delay after the first failed fetch; it doubles on
	// each failure up to the refresh interval.
	firstRetry = time.Second
	// parallel bounds concurrent fetches.
	parallel = 4
)

// Options configure a Resolver. Zero values take the defaults.
type Options struct {
	// Timeout bounds one fetch (discovery and key set together).
	Timeout time.Duration
	// RefreshInterval is how often a key set is fetched again.
	RefreshInterval time.Duration
	// EvictAfter drops key sets nobody asked for in that long.
	EvictAfter time.Duration
	// Client makes the requests (tests pass an httptest TLS server's
	// client); nil uses a client with Go's default TLS settings.
	Client *http.Client
	// OnChange, when set, is called with a key (jwksUri or issuer)
	// whenever its key set is fetched for the first time or changes.
	// It is called from the resolver's goroutines, without locks held.
	OnChange func(key string)
}

// Resolver caches key sets by jwksUri and by issuer (discovery). Resolve
// and ResolveIssuer never block on the network: a key they do not know
// yet is fetched by Run in the background. Safe for concurrent use.
type Resolver struct {
	opts   Options
	client *http.Client
	wake   chan struct{}

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	issuer   bool // the key is an issuer: find the key set by discovery
	jwks     string
	ok       bool
	err      error
	used     time.Time // last Resolve
	due      time.Time // next fetch; zero: now
	retry    time.Duration
	fetching bool
}

// New returns a resolver; call Run to fetch.
func New(opts Options) *Resolver {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.EvictAfter <= 0 {
		opts.EvictAfter = DefaultEvictAfter
	}
	client := opts.Client
	if client == nil {
		client = &http.Client{}
	}
	return &Resolver{opts: opts, client: client, wake: make(chan struct{}, 1), entries: map[string]*entry{}}
}

// Resolve returns the cached key set (JSON) of a jwksUri, and whether
// there is one. An unknown URI is fetched by Run.
func (r *Resolver) Resolve(uri string) (string, bool) { return r.resolve(uri, false) }

// ResolveIssuer returns the cached key set of an issuer found by OpenID
// discovery (<issuer>/.well-known/openid-configuration, then its
// jwks_uri), for jwtRules with neither jwksUri nor jwks.
func (r *Resolver) ResolveIssuer(issuer string) (string, bool) { return r.resolve(issuer, true) }

func (r *Resolver) resolve(key string, issuer bool) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[key]
	if e == nil {
		e = &entry{issuer: issuer, retry: firstRetry}
		r.entries[key] = e
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	e.used = time.Now()
	return e.jwks, e.ok
}

// LastError is the error of the last fetch of key (nil after a success or
// before any fetch).
func (r *Resolver) LastError(key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[key]; e != nil {
		return e.err
	}
	return nil
}

// KeySets returns the key sets the given RequestAuthentications need, by
// jwksUri or, for rules with neither jwksUri nor jwks, by issuer: the
// shape of translate.Input.JWKS. Keys not fetched yet are absent (and
// being fetched).
func (r *Resolver) KeySets(ras []*config.Object) map[string]string {
	out := map[string]string{}
	for _, o := range ras {
		ra, ok := o.Spec.(*security.RequestAuthentication)
		if !ok {
			continue
		}
		for _, rule := range ra.GetJwtRules() {
			var s string
			switch {
			case rule.GetJwks() != "":
				continue
			case rule.GetJwksUri() != "":
				if s, ok = r.Resolve(rule.GetJwksUri()); ok {
					out[rule.GetJwksUri()] = s
				}
			case rule.GetIssuer() != "":
				if s, ok = r.ResolveIssuer(rule.GetIssuer()); ok {
					out[rule.GetIssuer()] = s
				}
			}
		}
	}
	return out
}

// Run fetches and refreshes key sets until ctx is done; it returns once
// every fetch it started has finished.
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, parallel)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for _, key := range r.due(time.Now()) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				r.release(key)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r.refresh(ctx, key)
				// A finished fetch may make the next one due sooner.
				select {
				case r.wake <- struct{}{}:
				default:
				}
			}()
		}
		timer.Reset(r.nextDue(time.Now()))
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// due marks the entries whose fetch is due as fetching and returns them;
// it also evicts entries nobody asked for in a long time.
func (r *Resolver) due(now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var keys []string
	for k, e := range r.entries {
		if e.fetching {
			continue
		}
		if now.Sub(e.used) > r.opts.EvictAfter {
			delete(r.entries, k)
			continue
		}
		if !e.due.After(now) {
			e.fetching = true
			keys = append(keys, k)
		}
	}
	return keys
}

func (r *Resolver) release(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[key]; e != nil {
		e.fetching = false
	}
}

// nextDue is how long until the next fetch is due (at most a minute, so
// eviction runs too).
func (r *Resolver) nextDue(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := time.Minute
	for _, e := range r.entries {
		if e.fetching {
			continue
		}
		if w := e.due.Sub(now); w < d {
			d = max(w, 0)
		}
	}
	return d
}

// refresh fetches one key set and records the outcome; a failure keeps
// the last good key set and retries with backoff.
func (r *Resolver) refresh(ctx context.Context, key string) {
	r.mu.Lock()
	e := r.entries[key]
	issuer := e != nil && e.issuer
	r.mu.Unlock()
	if e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	jwks, err := r.fetch(ctx, key, issuer)
	cancel()

	r.mu.Lock()
	changed := false
	now := time.Now()
	e.fetching = false
	e.err = err
	if err != nil {
		e.due = now.Add(e.retry)
		e.retry = min(e.retry*2, r.opts.RefreshInterval)
	} else {
		changed = !e.ok || e.jwks != jwks
		e.jwks, e.ok = jwks, true
		e.due = now.Add(r.opts.RefreshInterval)
		e.retry = firstRetry
	}
	r.mu.Unlock()
	if changed && r.opts.OnChange != nil {
		r.opts.OnChange(key)
	}
}

func (r *Resolver) fetch(ctx context.Context, key string, issuer bool) (string, error) {
	uri := key
	if issuer {
		var err error
		if uri, err = r.discover(ctx, key); err != nil {
			return "", err
		}
	}
	body, err := r.get(ctx, uri)
	if err != nil {
		return "", err
	}
	if err := checkJWKS(body); err != nil {
		return "", fmt.Errorf("jwks %s: %w", uri, err)
	}
	return string(body), nil
}

// discover reads the issuer's OpenID configuration for its jwks_uri.
func (r *Resolver) discover(ctx context.Context, issuer string) (string, error) {
	uri := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	body, err := r.get(ctx, uri)
	if err != nil {
		return "", fmt.Errorf("discovery for issuer %q: %w", issuer, err)
	}
	var doc struct {
		JwksURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery for issuer %q: %s: %w", issuer, uri, err)
	}
	if doc.JwksURI == "" {
		return "", fmt.Errorf("discovery for issuer %q: %s has no jwks_uri", issuer, uri)
	}
	return doc.JwksURI, nil
}

func (r *Resolver) get(ctx context.Context, uri string) ([]byte, error) {
	if err := checkURL(uri); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", uri, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", uri, maxBody)
	}
	return body, nil
}

// checkURL allows HTTPS anywhere and plain HTTP to loopback only: keys
// fetched in clear text over a network could be replaced on the way.
func checkURL(uri string) error {
	u, err := url.Parse(uri)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %w", uri, err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("refusing %s: plain HTTP is only allowed to loopback addresses; use https", uri)
	}
	return fmt.Errorf("invalid URL %q: scheme must be https", uri)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkJWKS accepts what Envoy's JWKS parser accepts: a key set
// {"keys": [...]} with at least one key, each with a "kty".
func checkJWKS(body []byte) error {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("invalid JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return errors.New("invalid JWKS: no keys")
	}
	for i, k := range set.Keys {
		if kty, _ := k["kty"].(string); kty == "" {
			return fmt.Errorf("invalid JWKS: keys[%d] has no \"kty\"", i)
		}
	}
	return nil
}
