package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// When an upstream closes all its idle keep-alive connections at once (a
// sidecar draining after a listener update, a restart), a request without
// a body that finds them dead is replayed past each, onto a fresh
// connection: the client never sees the race.
func TestStaleIdleConnectionsReplayed(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("sleep") != "" {
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	h, p := hostPort(t, up.URL)
	tmpl, cfg := httpBootstrap(`
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: a}}]
`, false, staticCluster("a", h, p, ""))
	r := startProxy(t, tmpl, cfg)
	base := r.url(t, "http")

	// Four requests at once leave four idle upstream connections.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{}}
			resp, err := c.Get(base + "/?sleep=1")
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	up.CloseClientConnections()

	for i := range 3 {
		resp, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d after the upstream closed its idle connections: %d %q", i, resp.StatusCode, body)
		}
	}
}
