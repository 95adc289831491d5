package jwks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	security "istio.io/api/security/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

const (
	keysA = `{"keys":[{"kty":"RSA","kid":"a","e":"AQAB","n":"abc"}]}`
	keysB = `{"keys":[{"kty":"EC","kid":"b","crv":"P-256","x":"x","y":"y"}]}`
)

// keyServer serves a JWKS that tests can change, and an OpenID
// configuration pointing at it.
type keyServer struct {
	srv    *httptest.Server
	mu     sync.Mutex
	body   string
	status int
	delay  time.Duration
	hits   atomic.Int32
}

func newKeyServer(t *testing.T, tls bool) *keyServer {
	t.Helper()
	ks := &keyServer{body: keysA, status: http.StatusOK}
	mux := http.NewServeMux()
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		ks.hits.Add(1)
		ks.mu.Lock()
		body, status, delay := ks.body, ks.status, ks.delay
		ks.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
	mux.HandleFunc("/issuer/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"` + ks.srv.URL + `/issuer","jwks_uri":"` + ks.srv.URL + `/keys"}`))
	})
	if tls {
		ks.srv = httptest.NewTLSServer(mux)
	} else {
		ks.srv = httptest.NewServer(mux)
	}
	t.Cleanup(ks.srv.Close)
	return ks
}

func (ks *keyServer) set(body string, status int) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.body, ks.status = body, status
}

// run starts r.Run and stops it (waiting for it) at the end of the test.
func run(t *testing.T, r *Resolver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResolveFetchesAndCaches(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"https", true}, {"http to loopback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ks := newKeyServer(t, tc.tls)
			r := New(Options{Client: ks.srv.Client()})
			uri := ks.srv.URL + "/keys"
			if _, ok := r.Resolve(uri); ok {
				t.Fatal("Resolve before any fetch: ok")
			}
			run(t, r)
			var got string
			eventually(t, "first fetch", func() bool {
				var ok bool
				got, ok = r.Resolve(uri)
				return ok
			})
			if got != keysA {
				t.Errorf("Resolve = %s, want %s", got, keysA)
			}
			for range 10 {
				r.Resolve(uri)
			}
			if n := ks.hits.Load(); n != 1 {
				t.Errorf("server hit %d times, want 1 (cached)", n)
			}
		})
	}
}

func TestRefreshNotifiesAndKeepsLastGood(t *testing.T) {
	ks := newKeyServer(t, true)
	changes := make(chan string, 10)
	r := New(Options{Client: ks.srv.Client(), RefreshInterval: 20 * time.Millisecond, OnChange: func(k string) { changes <- k }})
	uri := ks.srv.URL + "/keys"
	r.Resolve(uri)
	run(t, r)
	if k := <-changes; k != uri {
		t.Fatalf("OnChange(%q), want %q", k, uri)
	}

	ks.set(keysB, http.StatusOK)
	select {
	case k := <-changes:
		if k != uri {
			t.Fatalf("OnChange(%q), want %q", k, uri)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change notified after the key set changed")
	}
	if got, _ := r.Resolve(uri); got != keysB {
		t.Fatalf("after change Resolve = %s, want %s", got, keysB)
	}

	for _, bad := range []struct {
		body   string
		status int
	}{{"oops", http.StatusInternalServerError}, {"not json", http.StatusOK}, {`{"keys":[]}`, http.StatusOK}} {
		before := ks.hits.Load()
		ks.set(bad.body, bad.status)
		eventually(t, "a failed refresh", func() bool { return ks.hits.Load() > before+1 && r.LastError(uri) != nil })
		if got, ok := r.Resolve(uri); !ok || got != keysB {
			t.Errorf("after failing refresh (%d %q) Resolve = %s, %v; want the last good key set", bad.status, bad.body, got, ok)
		}
	}
	select {
	case k := <-changes:
		t.Errorf("OnChange(%q) after failed refreshes", k)
	default:
	}
}

func TestResolveIssuerDiscovers(t *testing.T) {
	ks := newKeyServer(t, true)
	var notified atomic.Value
	r := New(Options{Client: ks.srv.Client(), OnChange: func(k string) { notified.Store(k) }})
	issuer := ks.srv.URL + "/issuer"
	r.ResolveIssuer(issuer)
	run(t, r)
	var got string
	eventually(t, "discovery", func() bool {
		var ok bool
		got, ok = r.ResolveIssuer(issuer)
		return ok
	})
	if got != keysA {
		t.Errorf("ResolveIssuer = %s, want %s", got, keysA)
	}
	eventually(t, "change notification", func() bool { return notified.Load() == issuer })
}

func TestFetchFailures(t *testing.T) {
	ks := newKeyServer(t, true)
	slow := newKeyServer(t, true)
	slow.mu.Lock()
	slow.delay = time.Minute
	slow.mu.Unlock()
	for _, tc := range []struct {
		name, uri, wantErr string
		issuer             bool
		client             *http.Client
	}{
		{name: "plain HTTP to a remote host", uri: "http://203.0.113.1/keys", wantErr: "only allowed to loopback"},
		{name: "unknown scheme", uri: "ftp://127.0.0.1/keys", wantErr: "scheme must be https"},
		{name: "untrusted certificate", uri: ks.srv.URL + "/keys", client: &http.Client{}, wantErr: "certificate"},
		{name: "not found", uri: ks.srv.URL + "/nothing", wantErr: "404"},
		{name: "timeout", uri: slow.srv.URL + "/keys", client: slow.srv.Client(), wantErr: "deadline exceeded"},
		{name: "discovery not found", uri: ks.srv.URL + "/nowhere", issuer: true, wantErr: "discovery"},
		{name: "issuer is not a URL", uri: "1234@developer.gserviceaccount.com", issuer: true, wantErr: "invalid URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := tc.client
			if client == nil {
				client = ks.srv.Client()
			}
			r := New(Options{Client: client, Timeout: 200 * time.Millisecond})
			resolve := r.Resolve
			if tc.issuer {
				resolve = r.ResolveIssuer
			}
			resolve(tc.uri)
			start := time.Now()
			run(t, r)
			eventually(t, "the fetch to fail", func() bool { return r.LastError(tc.uri) != nil })
			if err := r.LastError(tc.uri); !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if _, ok := resolve(tc.uri); ok {
				t.Error("Resolve ok after a failed fetch")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("fetch took %v: not bounded by the timeout", d)
			}
		})
	}
}

func TestKeySets(t *testing.T) {
	ks := newKeyServer(t, true)
	r := New(Options{Client: ks.srv.Client()})
	issuer := ks.srv.URL + "/issuer"
	uri := ks.srv.URL + "/keys"
	ras := []*config.Object{{Kind: config.RequestAuthentication, Meta: config.Meta{Namespace: "ns", Name: "ra"}, Spec: &security.RequestAuthentication{
		JwtRules: []*security.JWTRule{
			{Issuer: "inline", Jwks: keysB},
			{Issuer: "by-uri", JwksUri: uri},
			{Issuer: issuer},
		},
	}}}
	if got := r.KeySets(ras); len(got) != 0 {
		t.Errorf("KeySets before fetching = %v, want empty", got)
	}
	run(t, r)
	var got map[string]string
	eventually(t, "both key sets", func() bool {
		got = r.KeySets(ras)
		return len(got) == 2
	})
	if got[uri] != keysA || got[issuer] != keysA {
		t.Errorf("KeySets = %v, want %s under %q and %q", got, keysA, uri, issuer)
	}
}

func TestEvictsUnused(t *testing.T) {
	ks := newKeyServer(t, true)
	r := New(Options{Client: ks.srv.Client(), EvictAfter: 50 * time.Millisecond, RefreshInterval: 10 * time.Millisecond})
	uri := ks.srv.URL + "/keys"
	r.Resolve(uri)
	run(t, r)
	eventually(t, "eviction", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.entries) == 0
	})
}
