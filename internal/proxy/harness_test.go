package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/bootstrap"
)

// echo is what the test backend answers: what it saw of the request.
type echo struct {
	Name    string
	Method  string
	Path    string
	Host    string
	Proto   string
	Headers http.Header
	Body    string
}

// backend starts a real HTTP/1.1 server on 127.0.0.1 that echoes requests
// as JSON, tagged with name.
func backend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if d := r.URL.Query().Get("sleep"); d != "" {
			dur, _ := time.ParseDuration(d)
			time.Sleep(dur)
		}
		if code := r.URL.Query().Get("status"); code != "" {
			var c int
			fmt.Sscan(code, &c)
			w.WriteHeader(c)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{Name: name, Method: r.Method, Path: r.RequestURI, Host: r.Host, Proto: r.Proto, Headers: r.Header, Body: string(body)})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func hostPort(t testing.TB, rawURL string) (string, string) {
	t.Helper()
	u := strings.TrimPrefix(rawURL, "http://")
	h, p, err := net.SplitHostPort(u)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// freePort returns a port that was free a moment ago (for bootstraps that
// must name a port; the proxy itself is started with port 0 where it can).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// running is a proxy started by a test.
type running struct {
	p      *Proxy
	cancel context.CancelFunc
	done   chan error
}

// startProxy renders tmpl with data, starts a proxy from it and waits until
// its listeners are bound. The proxy is drained when the test ends.
func startProxy(t testing.TB, tmpl string, data any, mod ...func(*Options)) *running {
	t.Helper()
	var buf bytes.Buffer
	if err := template.Must(template.New("b").Parse(tmpl)).Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	b, err := bootstrap.Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	opts := Options{Bootstrap: b, DrainDuration: 2 * time.Second, Log: testLogger(t)}
	for _, m := range mod {
		m(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop within 10s")
		}
	})
	waitFor(t, 5*time.Second, "listeners bound", func() bool {
		return len(b.GetStaticResources().GetListeners()) == 0 || p.ListenerAddr(b.GetStaticResources().GetListeners()[0].GetName()) != nil
	})
	return r
}

func (r *running) url(t testing.TB, listener string) string {
	t.Helper()
	a := r.p.ListenerAddr(listener)
	if a == nil {
		t.Fatalf("listener %q not bound", listener)
	}
	return "http://" + a.String()
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func decodeEcho(t *testing.T, resp *http.Response) echo {
	t.Helper()
	defer resp.Body.Close()
	var e echo
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("status %d, body %q: %v", resp.StatusCode, body, err)
	}
	return e
}

// httpListener is a bootstrap fragment: one HTTP listener with inline routes.
const httpListener = `
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
          {{- if .WebSocket}}
          upgrade_configs: [{upgrade_type: websocket}]
          {{- end}}
          route_config:
            name: local
            virtual_hosts:
{{.VirtualHosts}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func staticCluster(name, host, port string, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    type: STATIC
    connect_timeout: 1s
%s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, name, extra, name, host, port)
}
