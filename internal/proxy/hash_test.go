package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// hashBackends starts n backends answering their own name and returns a
// cluster "up" over them with lb_policy lb.
func hashBackends(t *testing.T, n int, lb string) string {
	t.Helper()
	var eps strings.Builder
	for i := range n {
		name := fmt.Sprintf("b%d", i)
		host, port, _ := scripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) { _, _ = fmt.Fprint(w, name) })
		fmt.Fprintf(&eps, "        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}\n", host, port)
	}
	return fmt.Sprintf(`
  - name: up
    type: STATIC
    connect_timeout: 1s
    lb_policy: %s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
%s`, lb, eps.String())
}

func hashVhost(policies string) string {
	return `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: up
                  hash_policy: ` + policies + "\n"
}

func hashGet(t *testing.T, url string, hdr map[string]string) (string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), resp.Header
}

func TestHashPolicySticky(t *testing.T) {
	cases := []struct {
		name, lb, policy string
		req              func(v string) (string, map[string]string)
	}{
		{"header ring", "RING_HASH", `[{header: {header_name: x-user}}]`, func(v string) (string, map[string]string) {
			return "/x", map[string]string{"X-User": v}
		}},
		{"cookie maglev", "MAGLEV", `[{cookie: {name: session}}]`, func(v string) (string, map[string]string) {
			return "/x", map[string]string{"Cookie": "a=b; session=" + v}
		}},
		{"query ring", "RING_HASH", `[{query_parameter: {name: u}}]`, func(v string) (string, map[string]string) {
			return "/x?u=" + v, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := startLogged(t, hashVhost(tc.policy), "", hashBackends(t, 4, tc.lb))
			base := l.url(t, "http")
			first := ""
			for range 50 {
				path, h := tc.req("alice")
				got, _ := hashGet(t, base+path, h)
				if first == "" {
					first = got
				} else if got != first {
					t.Fatalf("same key went to %s then %s", first, got)
				}
			}
			seen := map[string]bool{}
			for i := range 40 {
				path, h := tc.req(fmt.Sprintf("user-%d", i))
				got, _ := hashGet(t, base+path, h)
				seen[got] = true
			}
			if len(seen) < 3 {
				t.Errorf("40 keys reached only %v of 4 backends", seen)
			}
		})
	}
}

func TestHashCookieGenerated(t *testing.T) {
	l := startLogged(t, hashVhost(`[{cookie: {name: sticky, path: /app, ttl: 3600s}, terminal: true}, {header: {header_name: x-never}}]`), "", hashBackends(t, 4, "RING_HASH"))
	base := l.url(t, "http")
	first, h := hashGet(t, base+"/app", nil)
	sc := h.Get("Set-Cookie")
	if !strings.HasPrefix(sc, `sticky="`) || !strings.Contains(sc, "; Max-Age=3600; Path=/app; HttpOnly") {
		t.Fatalf("Set-Cookie = %q", sc)
	}
	cookie := strings.SplitN(sc, ";", 2)[0]
	for range 50 {
		got, h := hashGet(t, base+"/app", map[string]string{"Cookie": cookie})
		if got != first {
			t.Fatalf("with the issued cookie went to %s, first request went to %s", got, first)
		}
		if h.Get("Set-Cookie") != "" {
			t.Fatalf("Set-Cookie again although the cookie was sent: %q", h.Get("Set-Cookie"))
		}
	}
}

func TestHashSourceIP(t *testing.T) {
	l := startLogged(t, hashVhost(`[{connection_properties: {source_ip: true}}]`), "", hashBackends(t, 4, "RING_HASH"))
	first := ""
	for range 20 {
		got, _ := hashGet(t, l.url(t, "http")+"/", nil)
		if first == "" {
			first = got
		} else if got != first {
			t.Fatalf("same source IP went to %s then %s", first, got)
		}
	}
}
