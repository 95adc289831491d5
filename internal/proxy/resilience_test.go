package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/amime-mesh/amime/internal/proxy/bootstrap"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
)

// resilienceListener is httpListener with extra HTTP filters before the
// router.
const resilienceListener = `
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
          route_config:
            name: local
            virtual_hosts:
{{.VirtualHosts}}
          http_filters:
{{.Filters}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

type resilienceConfig struct{ VirtualHosts, Filters string }

// logged is a proxy whose JSON access log a test reads once it stops.
type logged struct {
	*running
	path string
}

func startLogged(t *testing.T, vhosts, filters string, clusters ...string) *logged {
	t.Helper()
	path := filepath.Join(t.TempDir(), "access.log")
	tmpl := "static_resources:\n  listeners:" + resilienceListener + "  clusters:" + strings.Join(clusters, "")
	r := startProxy(t, tmpl, resilienceConfig{VirtualHosts: vhosts, Filters: filters}, func(o *Options) {
		o.AccessLog = path
		o.AccessLogFormat = telemetry.JSON
	})
	return &logged{running: r, path: path}
}

// entries stops the proxy, which writes out its access log, and returns
// the log's entries.
func (l *logged) entries(t *testing.T) []map[string]any {
	t.Helper()
	l.cancel()
	err := <-l.done
	l.done <- err // for the cleanup
	data, rerr := os.ReadFile(l.path)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		out = append(out, e)
	}
	return out
}

// countFlags counts the log entries whose response_flags hold flag.
func countFlags(entries []map[string]any, flag string) int {
	n := 0
	for _, e := range entries {
		fs, _ := e["response_flags"].(string)
		for _, f := range strings.Split(fs, ",") {
			if f == flag {
				n++
			}
		}
	}
	return n
}

// scripted is a backend whose handler sees the 1-based number of the
// request it serves.
func scripted(t *testing.T, h func(n int64, w http.ResponseWriter, r *http.Request)) (host, port string, count *atomic.Int64) {
	t.Helper()
	count = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(count.Add(1), w, r)
	}))
	t.Cleanup(srv.Close)
	host, port = hostPort(t, srv.URL)
	return host, port, count
}

// sleepOrDone waits d or until the client goes away, so that test
// servers close promptly.
func sleepOrDone(r *http.Request, d time.Duration) {
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
}

func retryVhost(policy string) string {
	return `
            - name: all
              domains: ["*"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: up
                  retry_policy: ` + policy + "\n"
}

func httpGet(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestRetryHidesFlakyBackend(t *testing.T) {
	// Every other request fails: half the tries.
	var attempts [5]atomic.Int64
	host, port, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if a, err := strconv.Atoi(r.Header.Get("x-envoy-attempt-count")); err == nil && a < len(attempts) {
			attempts[a].Add(1)
		}
		if n%2 == 1 {
			w.WriteHeader(503)
			_, _ = io.WriteString(w, "flaky")
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	l := startLogged(t, retryVhost(`{retry_on: "5xx", num_retries: 3}`), "", staticCluster("up", host, port, ""))
	const n = 200
	failed := 0
	for i := 0; i < n; i++ {
		code, body, h := httpGet(t, l.url(t, "http")+"/x")
		if code != 200 || body != "ok" {
			failed++
		}
		if a := h.Get("x-envoy-attempt-count"); a != "2" {
			t.Fatalf("response x-envoy-attempt-count %q, want 2", a)
		}
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed", failed, n)
	}
	// x-envoy-attempt-count numbers the tries: each first try failed, each
	// second one succeeded.
	if a1, a2 := attempts[1].Load(), attempts[2].Load(); a1 != n || a2 != n {
		t.Errorf("tries seen with attempt count 1: %d, 2: %d; want %d each", a1, a2, n)
	}
	if e := l.entries(t); len(e) != n || countFlags(e, "URX") != 0 {
		t.Errorf("%d log entries, %d with URX", len(e), countFlags(e, "URX"))
	}
}

func TestRetryExhaustedURX(t *testing.T) {
	host, port, count := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		_, _ = fmt.Fprintf(w, "failure %d", n)
	})
	l := startLogged(t, retryVhost(`{retry_on: "gateway-error", num_retries: 2, retry_back_off: {base_interval: 0.001s}}`), "", staticCluster("up", host, port, ""))
	code, body, _ := httpGet(t, l.url(t, "http")+"/x")
	if code != 503 || body != "failure 3" {
		t.Errorf("got %d %q, want the last upstream response (503 \"failure 3\")", code, body)
	}
	if c := count.Load(); c != 3 {
		t.Errorf("backend saw %d tries, want 3", c)
	}
	e := l.entries(t)
	if len(e) != 1 || e[0]["response_flags"] != "URX" || e[0]["response_code_details"] != "via_upstream" {
		t.Errorf("log: %v", e)
	}
}

func TestRetryConnectFailureMovesToOtherHost(t *testing.T) {
	be := backend(t, "live")
	liveHost, livePort := hostPort(t, be.URL)
	deadPort := strconv.Itoa(freePort(t))
	// RANDOM balancing would pick the dead host again half the time; the
	// previous_hosts predicate makes the retry avoid it.
	clusters := fmt.Sprintf(`
  - name: up
    type: STATIC
    connect_timeout: 1s
    lb_policy: RANDOM
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, deadPort, liveHost, livePort)
	policy := `
                    retry_on: connect-failure
                    num_retries: 1
                    host_selection_retry_max_attempts: 20
                    retry_back_off: {base_interval: 0.001s}
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}`
	l := startLogged(t, retryVhost(policy), "", clusters)
	for i := 0; i < 50; i++ {
		resp, err := http.Get(l.url(t, "http") + "/x")
		if err != nil {
			t.Fatal(err)
		}
		if e := decodeEcho(t, resp); e.Name != "live" {
			t.Fatalf("request %d: answered by %q", i, e.Name)
		}
	}
}

func TestRetryPerTryTimeout(t *testing.T) {
	// The first try of each request hangs; later ones answer at once.
	host, port, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-envoy-attempt-count") == "1" || strings.HasSuffix(r.URL.Path, "/always-slow") {
			sleepOrDone(r, 5*time.Second)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	vhosts := `
            - name: all
              domains: ["*"]
              include_request_attempt_count: true
              routes:
              - match: {prefix: "/bounded"}
                route:
                  cluster: up
                  timeout: 0.3s
                  retry_policy: {retry_on: "5xx", num_retries: 10, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: "/"}
                route:
                  cluster: up
                  retry_policy: {retry_on: "5xx", num_retries: 1, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}
`
	l := startLogged(t, vhosts, "", staticCluster("up", host, port, ""))
	if code, body, _ := httpGet(t, l.url(t, "http")+"/x"); code != 200 || body != "ok" {
		t.Errorf("/x: %d %q, want the second try's answer", code, body)
	}
	if code, body, _ := httpGet(t, l.url(t, "http")+"/always-slow"); code != 504 || body != "upstream request timeout" {
		t.Errorf("/always-slow: %d %q, want 504", code, body)
	}
	// The route timeout bounds all tries together.
	start := time.Now()
	code, _, _ := httpGet(t, l.url(t, "http")+"/bounded/always-slow")
	if el := time.Since(start); code != 504 || el > 1500*time.Millisecond {
		t.Errorf("/bounded: %d after %v, want 504 after the 0.3s route timeout", code, el)
	}
	e := l.entries(t)
	if len(e) != 3 {
		t.Fatalf("log: %v", e)
	}
	if e[0]["response_flags"] != "-" || e[1]["response_flags"] != "UT,URX" || e[2]["response_flags"] != "UT" {
		t.Errorf("flags: %q %q %q, want - UT,URX UT", e[0]["response_flags"], e[1]["response_flags"], e[2]["response_flags"])
	}
}

func TestRetryRequestBodies(t *testing.T) {
	// Odd requests fail, even ones echo the body's length and checksum.
	host, port, count := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if n%2 == 1 {
			w.WriteHeader(503)
			return
		}
		_, _ = fmt.Fprintf(w, "%d %x", len(b), bytes.Count(b, []byte("7")))
	})
	l := startLogged(t, retryVhost(`{retry_on: "5xx", num_retries: 1, retry_back_off: {base_interval: 0.001s}}`), "", staticCluster("up", host, port, ""))
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = '0' + byte(i%10)
		}
		return b
	}
	want := func(b []byte) string { return fmt.Sprintf("%d %x", len(b), bytes.Count(b, []byte("7"))) }
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		retried bool
	}{
		{"small, known length", 100 << 10, false, true},
		{"small, chunked", 100 << 10, true, true},
		{"at the buffer limit", 1 << 20, false, true},
		{"over the buffer, known length", 1<<20 + 1, false, false},
		{"over the buffer, chunked", 3 << 19, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if count.Load()%2 == 1 {
				// Line the backend up so the first try fails.
				_, _, _ = httpGet(t, l.url(t, "http")+"/align")
			}
			before := count.Load()
			b := body(tc.size)
			var rd io.Reader = bytes.NewReader(b)
			if tc.chunked {
				rd = io.MultiReader(rd) // hides the length: sent chunked
			}
			resp, err := http.Post(l.url(t, "http")+"/post", "application/octet-stream", rd)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			tries := count.Load() - before
			if tc.retried {
				if resp.StatusCode != 200 || string(got) != want(b) || tries != 2 {
					t.Errorf("got %d %q after %d tries, want 200 %q after 2", resp.StatusCode, got, tries, want(b))
				}
			} else if resp.StatusCode != 503 || tries != 1 {
				t.Errorf("got %d after %d tries, want the first try's 503, no retry", resp.StatusCode, tries)
			}
		})
	}
	if e := l.entries(t); countFlags(e, "URX") != 0 {
		t.Errorf("URX on a request that was not retried for its body: %v", e)
	}
}

// flakyGRPC fails every other call with UNAVAILABLE (a trailers-only
// response) before the service sees it.
func flakyGRPC(t *testing.T) (host, port string, calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if calls.Add(1)%2 == 1 {
			return nil, status.Error(codes.Unavailable, "try again")
		}
		return h(ctx, req)
	}))
	testpb.RegisterTestServiceServer(srv, &testService{ended: make(chan callEnd, 4)})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	host, port, _ = net.SplitHostPort(ln.Addr().String())
	return host, port, calls
}

func TestRetryGRPCUnavailable(t *testing.T) {
	host, port, calls := flakyGRPC(t)
	l := startLogged(t, retryVhost(`{retry_on: "unavailable", num_retries: 2, retry_back_off: {base_interval: 0.001s}}`), "",
		staticCluster("up", host, port, h2ClusterOptions))
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(l.url(t, "http"), "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)
	const n = 20
	payload := bytes.Repeat([]byte("p"), 10<<10)
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: payload}})
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), payload) {
			t.Fatalf("call %d: payload not replayed intact", i)
		}
	}
	if c := calls.Load(); c != 2*n {
		t.Errorf("upstream saw %d calls, want %d", c, 2*n)
	}
}

// faultFilter is an http_filters entry for the fault filter.
func faultFilter(cfg string) string {
	return `          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              ` + cfg + "\n"
}

const faultVhost = `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
`

func TestFaultAbortPercentage(t *testing.T) {
	be := backend(t, "up")
	h, p := hostPort(t, be.URL)
	// Istio's translation: percentage out of a MILLION.
	l := startLogged(t, faultVhost, faultFilter(`abort: {http_status: 503, percentage: {numerator: 500000, denominator: MILLION}}`), staticCluster("up", h, p, ""))
	const n = 400
	aborted := 0
	for i := 0; i < n; i++ {
		code, body, _ := httpGet(t, l.url(t, "http")+"/x")
		switch {
		case code == 503 && body == "fault filter abort":
			aborted++
		case code != 200:
			t.Fatalf("unexpected %d %q", code, body)
		}
	}
	// 50% ± 7%: over 5 standard deviations (10 requests) either way.
	if lo, hi := n*43/100, n*57/100; aborted < lo || aborted > hi {
		t.Errorf("%d of %d aborted, want %d..%d", aborted, n, lo, hi)
	}
	if fi := countFlags(l.entries(t), "FI"); fi != aborted {
		t.Errorf("%d entries with FI, want %d", fi, aborted)
	}
}

func TestFaultDelay(t *testing.T) {
	be := backend(t, "up")
	h, p := hostPort(t, be.URL)
	l := startLogged(t, faultVhost, faultFilter(`delay: {fixed_delay: 0.2s, percentage: {numerator: 100, denominator: HUNDRED}}`), staticCluster("up", h, p, ""))
	for i := 0; i < 3; i++ {
		start := time.Now()
		code, _, _ := httpGet(t, l.url(t, "http")+"/x")
		if el := time.Since(start); code != 200 || el < 200*time.Millisecond {
			t.Errorf("got %d after %v, want 200 after at least 200ms", code, el)
		}
	}
	if di := countFlags(l.entries(t), "DI"); di != 3 {
		t.Errorf("%d entries with DI, want 3", di)
	}
}

func TestFaultAbortGRPCStatus(t *testing.T) {
	svc := &testService{ended: make(chan callEnd, 4)}
	host, port := grpcUpstream(t, svc)
	l := startLogged(t, faultVhost, faultFilter(`abort: {grpc_status: 8, percentage: {numerator: 100}}`), staticCluster("up", host, port, h2ClusterOptions))
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(l.url(t, "http"), "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "fault filter abort" {
		t.Errorf("call: %v, want RESOURCE_EXHAUSTED \"fault filter abort\"", err)
	}
	e := l.entries(t)
	if len(e) != 1 || e[0]["response_flags"] != "FI" || e[0]["response_code"] != 200.0 {
		t.Errorf("log: %v", e)
	}
}

func TestFaultRouteOverride(t *testing.T) {
	be := backend(t, "up")
	h, p := hostPort(t, be.URL)
	// The route's configuration replaces the filter's whole: /calm has no
	// abort, /teapot its own.
	vhosts := `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/calm"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    delay: {fixed_delay: 0.001s, percentage: {numerator: 100}}
              - match: {prefix: "/teapot"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    abort: {http_status: 418, percentage: {numerator: 100}}
              - match: {prefix: "/"}
                route: {cluster: up}
`
	l := startLogged(t, vhosts, faultFilter(`abort: {http_status: 500, percentage: {numerator: 100}}`), staticCluster("up", h, p, ""))
	for path, want := range map[string]int{"/calm": 200, "/teapot": 418, "/other": 500} {
		if code, _, _ := httpGet(t, l.url(t, "http")+path); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}
}

func TestResilienceConfigRejected(t *testing.T) {
	for name, tc := range map[string]resilienceConfig{
		"fault header_abort":         {VirtualHosts: faultVhost, Filters: faultFilter(`abort: {header_abort: {}, percentage: {numerator: 1}}`)},
		"fault max_active_faults":    {VirtualHosts: faultVhost, Filters: faultFilter(`max_active_faults: 3`)},
		"retry per_try_idle_timeout": {VirtualHosts: retryVhost(`{retry_on: "5xx", per_try_idle_timeout: 1s}`)},
		"retry unknown condition":    {VirtualHosts: retryVhost(`{retry_on: "5xx,http3-post-connect-failure"}`)},
		"unknown per-route filter": {VirtualHosts: `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
                typed_per_filter_config:
                  envoy.filters.http.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
`},
	} {
		t.Run(name, func(t *testing.T) {
			tmpl := "static_resources:\n  listeners:" + resilienceListener + "  clusters:" + staticCluster("up", "127.0.0.1", "1", "")
			var buf bytes.Buffer
			if err := template.Must(template.New("b").Parse(tmpl)).Execute(&buf, tc); err != nil {
				t.Fatal(err)
			}
			b, err := bootstrap.Parse(buf.Bytes())
			if err == nil {
				_, err = New(Options{Bootstrap: b, Log: testLogger(t)})
			}
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}

// istioRetry is the policy Istio's translation gives every route.
const istioRetry = `{retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", num_retries: 2, retriable_status_codes: [503]}`

func TestRetryPolicyKeepsGRPCStreamsInteractive(t *testing.T) {
	// Buffering for replay must not hold back a stream: a ping-pong call
	// only progresses if each message goes through as it is sent.
	svc := &testService{ended: make(chan callEnd, 4)}
	host, port := grpcUpstream(t, svc)
	l := startLogged(t, retryVhost(istioRetry), "", staticCluster("up", host, port, h2ClusterOptions))
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(l.url(t, "http"), "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		// 100 KiB each: the stream outgrows the replay buffer midway.
		body := bytes.Repeat([]byte{byte('a' + i)}, 100<<10)
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		m, err := stream.Recv()
		if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
			t.Fatalf("recv %d: %v", i, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
}

func TestRetryPerTryTimeoutHTTP2(t *testing.T) {
	// An h2c backend whose first try of each request hangs.
	var tries atomic.Int64
	srv := httptest.NewUnstartedServer(h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("x-envoy-attempt-count") == "1" {
			sleepOrDone(r, 5*time.Second)
			return
		}
		_, _ = w.Write(b)
	}), &http2.Server{}))
	srv.Start()
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.URL)
	l := startLogged(t, retryVhost(`{retry_on: "reset", num_retries: 1, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}`), "",
		staticCluster("up", host, port, h2ClusterOptions))
	resp, err := http.Post(l.url(t, "http")+"/x", "text/plain", strings.NewReader("replayed body"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "replayed body" || tries.Load() != 2 {
		t.Errorf("got %d %q after %d tries, want the second try's echo", resp.StatusCode, got, tries.Load())
	}
}
