package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

type httpConfig struct {
	WebSocket    bool
	VirtualHosts string
}

func httpBootstrap(vhosts string, ws bool, clusters ...string) (string, httpConfig) {
	return "static_resources:\n  listeners:" + httpListener + "  clusters:" + strings.Join(clusters, ""), httpConfig{WebSocket: ws, VirtualHosts: vhosts}
}

// routingProxy starts two backends (a, b) and a proxy whose routes exercise
// the route actions.
func routingProxy(t *testing.T) *running {
	a, b := backend(t, "a"), backend(t, "b")
	ah, ap := hostPort(t, a.URL)
	bh, bp := hostPort(t, b.URL)
	deadPort := fmt.Sprint(freePort(t))
	vhosts := `
            - name: api
              domains: ["api.example.com", "api.example.com:*"]
              routes:
              - match: {prefix: "/direct"}
                direct_response: {status: 418, body: {inline_string: "teapot"}}
              - match: {prefix: "/redirect"}
                redirect: {host_redirect: "other.example.com", response_code: FOUND}
              - match: {prefix: "/v2", headers: [{name: x-version, string_match: {exact: "2"}}]}
                route: {cluster: b, prefix_rewrite: "/rewritten"}
              - match: {prefix: "/split"}
                route:
                  weighted_clusters:
                    clusters: [{name: a, weight: 80}, {name: b, weight: 20}]
              - match: {prefix: "/dead"}
                route: {cluster: dead}
              - match: {prefix: "/empty"}
                route: {cluster: empty}
              - match: {prefix: "/nocluster"}
                route: {cluster: missing}
              - match: {prefix: "/slow"}
                route: {cluster: a, timeout: 0.2s}
              - match: {prefix: "/"}
                route: {cluster: a}
                request_headers_to_add: [{header: {key: x-added, value: "yes"}}]
                response_headers_to_add: [{header: {key: x-resp, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]
`
	tmpl, cfg := httpBootstrap(vhosts, true,
		staticCluster("a", ah, ap, ""),
		staticCluster("b", bh, bp, ""),
		staticCluster("dead", "127.0.0.1", deadPort, ""),
		`
  - name: empty
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: empty}
`)
	return startProxy(t, tmpl, cfg)
}

func TestHTTP1Routing(t *testing.T) {
	r := routingProxy(t)
	base := r.url(t, "http")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(t *testing.T, method, path, host string, hdr map[string]string, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		req.Host = host
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	t.Run("forward with headers", func(t *testing.T) {
		resp := do(t, "POST", "/hello?x=1", "api.example.com", nil, "payload")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := resp.Header.Get("x-resp"); got != "127.0.0.1" {
			t.Errorf("x-resp = %q, want the downstream address 127.0.0.1", got)
		}
		if resp.Header.Get("x-envoy-upstream-service-time") == "" {
			t.Error("x-envoy-upstream-service-time missing")
		}
		if got := resp.Header.Get("server"); got != "envoy" {
			t.Errorf("server = %q, want envoy (server_name default)", got)
		}
		e := decodeEcho(t, resp)
		if e.Name != "a" || e.Method != "POST" || e.Path != "/hello?x=1" || e.Body != "payload" || e.Host != "api.example.com" {
			t.Errorf("upstream saw %+v", e)
		}
		if e.Headers.Get("x-added") != "yes" {
			t.Error("request_headers_to_add not applied")
		}
		if id := e.Headers.Get("x-request-id"); len(id) != 36 || id[14] != '4' {
			t.Errorf("x-request-id = %q, want a v4 UUID", id)
		}
		if e.Headers.Get("x-forwarded-proto") != "http" {
			t.Errorf("x-forwarded-proto = %q", e.Headers.Get("x-forwarded-proto"))
		}
		if e.Headers.Get("x-envoy-expected-rq-timeout-ms") != "15000" {
			t.Errorf("x-envoy-expected-rq-timeout-ms = %q, want Envoy's default 15000", e.Headers.Get("x-envoy-expected-rq-timeout-ms"))
		}
	})
	t.Run("request id kept", func(t *testing.T) {
		e := decodeEcho(t, do(t, "GET", "/", "api.example.com", map[string]string{"x-request-id": "abc"}, ""))
		if e.Headers.Get("x-request-id") != "abc" {
			t.Errorf("x-request-id = %q, want the client's", e.Headers.Get("x-request-id"))
		}
	})
	t.Run("header match and prefix rewrite", func(t *testing.T) {
		e := decodeEcho(t, do(t, "GET", "/v2/items?q=1", "api.example.com", map[string]string{"x-version": "2"}, ""))
		if e.Name != "b" || e.Path != "/rewritten/items?q=1" {
			t.Errorf("got backend %s path %s", e.Name, e.Path)
		}
		if e.Headers.Get("x-envoy-original-path") != "/v2/items?q=1" {
			t.Errorf("x-envoy-original-path = %q", e.Headers.Get("x-envoy-original-path"))
		}
		e = decodeEcho(t, do(t, "GET", "/v2/items", "api.example.com", map[string]string{"x-version": "1"}, ""))
		if e.Name != "a" {
			t.Errorf("header mismatch routed to %s", e.Name)
		}
	})
	t.Run("host with port", func(t *testing.T) {
		e := decodeEcho(t, do(t, "GET", "/", "api.example.com:8080", nil, ""))
		if e.Name != "a" {
			t.Errorf("got %s", e.Name)
		}
	})

	cases := []struct {
		name, path, host string
		status           int
		body             string
		header           [2]string
	}{
		{"direct response", "/direct", "api.example.com", 418, "teapot", [2]string{}},
		{"redirect", "/redirect/x", "api.example.com", 302, "", [2]string{"Location", "http://other.example.com/redirect/x"}},
		{"no route: unknown host", "/", "nope.example.com", 404, "", [2]string{}},
		{"connect failure", "/dead", "api.example.com", 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", [2]string{}},
		{"no healthy upstream", "/empty", "api.example.com", 503, "no healthy upstream", [2]string{}},
		{"cluster not found", "/nocluster", "api.example.com", 503, "", [2]string{}},
		{"upstream timeout", "/slow?sleep=2s", "api.example.com", 504, "upstream request timeout", [2]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, "GET", tc.path, tc.host, nil, "")
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(body) != tc.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if tc.header[0] != "" && resp.Header.Get(tc.header[0]) != tc.header[1] {
				t.Errorf("%s = %q, want %q", tc.header[0], resp.Header.Get(tc.header[0]), tc.header[1])
			}
		})
	}

	t.Run("weighted split", func(t *testing.T) {
		counts := map[string]int{}
		const n = 500
		for i := 0; i < n; i++ {
			counts[decodeEcho(t, do(t, "GET", "/split", "api.example.com", nil, "")).Name]++
		}
		// 80/20 ± 7% over 500 requests (binomial sd ≈ 1.8%).
		if a := float64(counts["a"]) / n; a < 0.73 || a > 0.87 {
			t.Errorf("split a=%d b=%d, want about 80/20", counts["a"], counts["b"])
		}
	})
}

func TestHTTP1Wire(t *testing.T) {
	r := routingProxy(t)
	addr := strings.TrimPrefix(r.url(t, "http"), "http://")
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}
	read := func(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	t.Run("pipelined requests answered in order", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "GET /one HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET /two HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		for _, want := range []string{"/one", "/two"} {
			resp, body := read(t, br, "GET")
			if resp.StatusCode != 200 || !strings.Contains(body, `"Path":"`+want+`"`) {
				t.Fatalf("want %s, got %d %s", want, resp.StatusCode, body)
			}
		}
	})
	t.Run("chunked request body", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "POST /c HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
		resp, body := read(t, br, "POST")
		if resp.StatusCode != 200 || !strings.Contains(body, `"Body":"hello world"`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "POST /e HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		if l, _ := br.ReadString('\n'); l != "\r\n" {
			t.Fatalf("100 head not terminated: %q", l)
		}
		fmt.Fprint(c, "abc")
		resp, body := read(t, br, "POST")
		if resp.StatusCode != 200 || !strings.Contains(body, `"Body":"abc"`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
	t.Run("HEAD has no body", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "HEAD / HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET /after HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		resp, body := read(t, br, "HEAD")
		if resp.StatusCode != 200 || body != "" {
			t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
		}
		resp, body = read(t, br, "GET")
		if !strings.Contains(body, `"/after"`) {
			t.Fatalf("after HEAD: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("HTTP/1.0 closes by default", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "GET /old HTTP/1.0\r\nHost: api.example.com\r\n\r\n")
		resp, body := read(t, br, "GET")
		if resp.StatusCode != 200 || !strings.Contains(body, `"/old"`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection not closed after HTTP/1.0 response: %v", err)
		}
	})

	bad := []struct {
		name, req string
		status    int
	}{
		{"content-length and chunked", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"unknown transfer-encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"bad version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"headers too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
	}
	for _, tc := range bad {
		t.Run("malformed/"+tc.name, func(t *testing.T) {
			c, br := dial(t)
			fmt.Fprint(c, tc.req)
			resp, _ := read(t, br, "GET")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !resp.Close {
				t.Error("response does not close the connection (net/http consumes the Connection: close header into resp.Close)")
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection still open after a malformed request: %v", err)
			}
		})
	}
}

// TestOriginalDstCluster forwards to the address a header names, as an
// ORIGINAL_DST cluster with use_http_header does (Envoy's
// x-envoy-original-dst-host), and refuses a value that is not ip:port.
func TestOriginalDstCluster(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	tmpl, cfg := httpBootstrap(`
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: passthrough}}]
`, false, `
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    original_dst_lb_config: {use_http_header: true}
`)
	r := startProxy(t, tmpl, cfg)
	base := r.url(t, "http")
	for _, tc := range []struct {
		dst, want string
		status    int
	}{
		{strings.TrimPrefix(a.URL, "http://"), "a", 200},
		{strings.TrimPrefix(b.URL, "http://"), "b", 200},
		{"not-an-address", "", 503},
	} {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Header.Set("x-envoy-original-dst-host", tc.dst)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status {
			t.Fatalf("dst %s: status %d, want %d", tc.dst, resp.StatusCode, tc.status)
		}
		if tc.status == 200 {
			if e := decodeEcho(t, resp); e.Name != tc.want {
				t.Errorf("dst %s reached %s", tc.dst, e.Name)
			}
		} else {
			resp.Body.Close()
		}
	}
}
