package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Options are a Filter's collaborators.
type Options struct {
	// Fetcher fetches remote_jwks; required when a provider has one.
	Fetcher Fetcher
	// Now is the clock for exp/nbf (nil: time.Now).
	Now func() time.Time
}

// Filter is a running jwt_authn filter: a Config plus the remote JWKS it
// keeps fresh. It is safe for concurrent use; Close stops its fetchers.
type Filter struct {
	cfg    *Config
	keys   []keySource // by provider index
	remote []*remoteKeys
	now    func() time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a Filter. Each remote_jwks is fetched at once in a goroutine
// owned by the Filter, then refreshed every cache_duration (every
// async_fetch.failed_refetch_duration, 1s by default, after a failure).
func New(cfg *Config, opts Options) (*Filter, error) {
	f := &Filter{cfg: cfg, now: opts.Now, keys: make([]keySource, len(cfg.providers))}
	if f.now == nil {
		f.now = time.Now
	}
	for _, p := range cfg.providers {
		if p.remote == nil {
			f.keys[p.index] = localKeys{set: p.local}
			continue
		}
		if opts.Fetcher == nil {
			return nil, fmt.Errorf("provider %q: remote_jwks needs a Fetcher", p.name)
		}
		r := newRemoteKeys(p.remote, opts.Fetcher)
		f.keys[p.index] = r
		f.remote = append(f.remote, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	for _, r := range f.remote {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			r.run(ctx)
		}()
	}
	return f, nil
}

// Close stops the JWKS refreshers and waits for them.
func (f *Filter) Close() {
	f.cancel()
	f.wg.Wait()
}

// WaitReady waits until every remote JWKS whose provider does not set
// async_fetch.fast_listener has had its first fetch attempt: the listener
// should not take requests before (Envoy's default). It returns the fetch
// errors of providers left without keys; tokens of those providers fail
// until a refresh succeeds.
func (f *Filter) WaitReady(ctx context.Context) error {
	var errs []error
	for _, r := range f.remote {
		if r.cfg.fastListener {
			continue
		}
		select {
		case <-r.ready:
		case <-ctx.Done():
			return fmt.Errorf("jwks of provider %q: %w", r.cfg.provider, ctx.Err())
		}
		if r.cur.Load() == nil {
			r.mu.Lock()
			errs = append(errs, r.lastErr)
			r.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// Request is what the filter reads from, and edits in, a request.
type Request struct {
	Method string
	// Scheme is x-forwarded-proto (or the request's scheme): it and Host
	// and Path make the realm of the www-authenticate challenge.
	Scheme string
	Host   string // :authority
	// Path is :path with its query; a token taken from a query parameter
	// is removed from it (unless forward) and Result.PathChanged is set.
	Path string
	// Headers are the request headers, names lower-case. On success the
	// filter edits them in place: the token header is removed (unless
	// forward), forward_payload_header and claim_to_headers are added.
	Headers *header.List
}

// Result is the filter's decision for one request.
type Result struct {
	// Status is the verification outcome (StatusOK when nothing was
	// required or the requirement was met).
	Status Status
	// Code is 0 to continue, else the local reply's status: 401, or 403
	// for StatusAudienceNotAllowed and an unknown per-route requirement.
	Code int
	// Body and WWWAuthenticate are the local reply's body and
	// www-authenticate header (empty with strip_failure_response).
	Body            string
	WWWAuthenticate string
	// Details is the response code detail for access logs,
	// jwt_authn_access_denied{<reason with underscores>}.
	Details string
	// PathChanged reports that Request.Path lost a token parameter.
	PathChanged bool
	// ClearRouteCache asks the connection manager to route again: a
	// provider with clear_route_cache added claim headers or metadata.
	ClearRouteCache bool

	verified []verified
}

// Passed reports whether the request continues down the filter chain.
func (r *Result) Passed() bool { return r.Code == 0 }

type verified struct {
	p *provider
	t *jwt
}

// Authenticate applies the filter to one request. perRoute is the route's
// most specific typed_per_filter_config entry for the filter (nil if
// none). ctx bounds the wait for a first remote JWKS fetch.
func (f *Filter) Authenticate(ctx context.Context, req *Request, perRoute *PerRoute) Result {
	c := f.cfg
	if c.bypassCORS && isCORSPreflight(req) {
		return Result{}
	}
	var v *verifier
	if perRoute != nil {
		if perRoute.Disabled {
			return Result{}
		}
		var ok bool
		if v, ok = c.reqMap[perRoute.RequirementName]; !ok {
			msg := "Wrong requirement_name: " + perRoute.RequirementName + ". It should be one of [" + c.reqNames + "]"
			r := Result{Status: StatusVerificationFail, Code: 403, Details: details(msg)}
			if !c.stripFailure {
				r.Body = "Failed JWT authentication: " + msg
			}
			return r
		}
	} else {
		for i := range c.rules {
			if c.rules[i].match.matches(req) {
				v = c.rules[i].v
				break
			}
		}
	}
	if v == nil {
		return Result{}
	}
	e := evaluation{ctx: ctx, f: f, req: req, now: uint64(f.now().Unix())}
	st := e.eval(v)
	if st == StatusOK {
		return Result{PathChanged: e.pathChanged, ClearRouteCache: e.clearRoute, verified: e.verified}
	}
	r := Result{Status: st, Code: 401, Details: details(st.String())}
	if st == StatusAudienceNotAllowed {
		r.Code = 403
	}
	if !c.stripFailure {
		r.Body = st.String()
		r.WWWAuthenticate = challenge(req, st)
	}
	return r
}

func isCORSPreflight(req *Request) bool {
	return req.Method == "OPTIONS" && req.Headers != nil &&
		req.Headers.Value("origin") != "" && req.Headers.Value("access-control-request-method") != ""
}

// maxRealmPath is Envoy's bound on the path quoted in the realm.
const maxRealmPath = 256

func challenge(req *Request, st Status) string {
	p := req.Path
	if len(p) > maxRealmPath {
		p = p[:maxRealmPath]
	}
	s := `Bearer realm="` + req.Scheme + "://" + req.Host + p + `"`
	if st != StatusMissing {
		s += `, error="invalid_token"`
	}
	return s
}

func details(msg string) string {
	return "jwt_authn_access_denied{" + strings.Join(strings.Fields(msg), "_") + "}"
}

// evaluation is the state of one request's verification.
type evaluation struct {
	ctx         context.Context
	f           *Filter
	req         *Request
	now         uint64
	parsed      []parsedToken // memo: requirements often share a token
	verified    []verified
	pathChanged bool
	clearRoute  bool
}

type parsedToken struct {
	raw string
	t   *jwt
	st  Status
}

// eval runs a requirement tree, with Envoy's semantics for each node.
func (e *evaluation) eval(v *verifier) Status {
	switch v.kind {
	case kindProvider:
		return e.authenticate(v.ext, v.provider, v.audOver, false)
	case kindAllowMissing:
		if st := e.authenticate(v.ext, nil, nil, false); st != StatusMissing {
			return st
		}
		return StatusOK
	case kindAllowFailed:
		e.authenticate(v.ext, nil, nil, true)
		return StatusOK
	case kindAll:
		for _, c := range v.children {
			if st := e.eval(c); st != StatusOK {
				return st
			}
		}
		return StatusOK
	case kindAny:
		final := StatusMissing
		for _, c := range v.children {
			st := e.eval(c)
			if st == StatusOK {
				return StatusOK
			}
			// Report a real error over "missing" or "wrong issuer" (some
			// other alternative's token), and wrong issuer over missing.
			if (st != StatusMissing && st != StatusUnknownIssuer) || final == StatusMissing {
				final = st
			}
		}
		if v.allowFailed || (v.allowMissing && final == StatusMissing) {
			return StatusOK
		}
		return final
	}
	return StatusOK
}

// token is one JWT found in a request, with where it came from.
type token struct {
	value string
	iss   *issuers
	hdr   string // header it came from, or ""
	param string // query parameter it came from, or ""
}

// authenticate verifies every token ext finds. p is nil for the
// provider-less requirements (allow_missing...), which pick a provider by
// the token's issuer. All tokens must verify (a request with a good and a
// bad token fails: the backend might read the bad one), except with
// allowFailed.
func (e *evaluation) authenticate(ext *extractor, p *provider, audOver audiences, allowFailed bool) Status {
	h := e.req.Headers
	if h != nil {
		// Headers this filter writes must not come from the client.
		for _, n := range ext.sanitize {
			h.Del(n)
		}
	}
	var buf [4]token
	toks := ext.extract(e.req, buf[:0])
	if len(toks) == 0 {
		return StatusMissing
	}
	st := StatusOK
	for i := range toks {
		if s := e.verifyOne(&toks[i], p, audOver); s != StatusOK {
			st = s
			if !allowFailed {
				return st
			}
		}
	}
	return st
}

func (e *evaluation) verifyOne(tok *token, p *provider, audOver audiences) Status {
	t, st := e.parse(tok.value)
	if st != StatusOK {
		return st
	}
	if !tok.iss.allowed(t.iss) {
		return StatusUnknownIssuer
	}
	if p == nil {
		if p = e.f.cfg.findByIssuer(t.iss); p == nil {
			return StatusUnknownIssuer
		}
	}
	if st := t.checkTime(e.now, p.clockSkew); st != StatusOK {
		return st
	}
	aud := p.audiences
	if audOver != nil {
		aud = audOver
	}
	if !aud.allowed(t.aud) {
		return StatusAudienceNotAllowed
	}
	ks, st := e.f.keys[p.index].keys(e.ctx)
	if st != StatusOK {
		return st
	}
	if st := ks.verify(t); st != StatusOK {
		return st
	}
	e.good(tok, t, p)
	return StatusOK
}

func (e *evaluation) parse(raw string) (*jwt, Status) {
	for i := range e.parsed {
		if e.parsed[i].raw == raw {
			return e.parsed[i].t, e.parsed[i].st
		}
	}
	t, st := parseJWT(raw)
	e.parsed = append(e.parsed, parsedToken{raw: raw, t: t, st: st})
	return t, st
}

// good applies a verified token's outputs to the request.
func (e *evaluation) good(tok *token, t *jwt, p *provider) {
	h := e.req.Headers
	if h != nil && p.payloadHeader != "" {
		v := t.payloadB64
		if p.padPayload {
			v = strings.TrimRight(v, "=")
			if n := len(v) % 4; n != 0 {
				v += "=="[:4-n]
			}
		}
		h.Add(p.payloadHeader, v)
	}
	added := false
	for _, ch := range p.claimToHeaders {
		if v, ok := t.claimString(ch.path); ok && h != nil {
			h.Add(ch.header, v)
			added = true
		}
	}
	if !p.forward {
		switch {
		case tok.hdr != "" && h != nil:
			h.Del(tok.hdr)
		case tok.param != "":
			if np, ok := removeQueryParam(e.req.Path, tok.param); ok {
				e.req.Path = np
				e.pathChanged = true
			}
		}
	}
	if p.clearRouteCache && (added || p.payloadInMeta != "") {
		e.clearRoute = true
	}
	e.verified = append(e.verified, verified{p: p, t: t})
}

// extract appends the request's tokens found in ext's locations to dst.
func (ext *extractor) extract(req *Request, dst []token) []token {
	if h := req.Headers; h != nil {
		for i := range ext.headers {
			loc := &ext.headers[i]
			for _, f := range *h {
				if f.Name != loc.name {
					continue
				}
				v := f.Value
				if loc.prefix != "" {
					// As Envoy: the prefix may be anywhere in the value,
					// the token starts at the next base64url character.
					j := strings.Index(v, loc.prefix)
					if j < 0 {
						continue
					}
					v = v[j+len(loc.prefix):]
					if k := strings.IndexFunc(v, isTokenChar); k >= 0 {
						v = v[k:]
					}
				}
				dst = append(dst, token{value: v, iss: loc.iss, hdr: loc.name})
			}
		}
		if len(ext.cookies) > 0 {
			for i := range ext.cookies {
				if v, ok := cookie(h, ext.cookies[i].name); ok {
					dst = append(dst, token{value: v, iss: ext.cookies[i].iss})
				}
			}
		}
	}
	if len(ext.params) > 0 {
		if q := strings.IndexByte(req.Path, '?'); q >= 0 {
			query := req.Path[q+1:]
			if k := strings.IndexByte(query, '#'); k >= 0 {
				query = query[:k]
			}
			for i := range ext.params {
				if v, ok := queryParam(query, ext.params[i].name); ok {
					dst = append(dst, token{value: v, iss: ext.params[i].iss, param: ext.params[i].name})
				}
			}
		}
	}
	return dst
}

func isTokenChar(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

// queryParam returns the first value of name in a raw query, decoded.
func queryParam(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if unescape(k) == name {
			return unescape(v), true
		}
	}
	return "", false
}

func unescape(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// removeQueryParam drops every name=value pair of name from path's query,
// keeping the other pairs as they were sent.
func removeQueryParam(path, name string) (string, bool) {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return path, false
	}
	frag := ""
	if k := strings.IndexByte(query, '#'); k >= 0 {
		query, frag = query[:k], query[k:]
	}
	var b strings.Builder
	removed := false
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, _, _ := strings.Cut(kv, "=")
		if unescape(k) == name {
			removed = true
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(kv)
	}
	if !removed {
		return path, false
	}
	if b.Len() == 0 {
		return base + frag, true
	}
	return base + "?" + b.String() + frag, true
}

// cookie returns the value of the named cookie from the cookie headers.
func cookie(h *header.List, name string) (string, bool) {
	for _, f := range *h {
		if f.Name != "cookie" {
			continue
		}
		for s := f.Value; s != ""; {
			var part string
			part, s, _ = strings.Cut(s, ";")
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == name {
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v, true
			}
		}
	}
	return "", false
}

// claimString reads a claim by its dotted path for claim_to_headers:
// strings as they are, numbers as integers when integral (else with six
// decimals, as Envoy's std::to_string), booleans as true/false; other
// types and empty strings add no header.
func (t *jwt) claimString(path []string) (string, bool) {
	v, ok := t.claim(path)
	if !ok {
		return "", false
	}
	switch x := v.(type) {
	case string:
		return x, x != ""
	case float64:
		if x >= 0 && x < 1<<64 && x == float64(uint64(x)) {
			return strconv.FormatUint(uint64(x), 10), true
		}
		return strconv.FormatFloat(x, 'f', 6, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}
