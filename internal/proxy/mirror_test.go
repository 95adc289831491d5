package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// mirrorSeen is what a mirror backend received.
type mirrorSeen struct{ Method, Host, Path, Body string }

// mirrorBackend records the requests it serves; delay slows each answer.
type mirrorBackend struct {
	mu   sync.Mutex
	seen []mirrorSeen
}

func (m *mirrorBackend) snapshot() []mirrorSeen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mirrorSeen(nil), m.seen...)
}

func startMirrorBackend(t *testing.T, delay time.Duration) (*mirrorBackend, string, string) {
	t.Helper()
	mb := &mirrorBackend{}
	host, port, _ := scripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mb.mu.Lock()
		mb.seen = append(mb.seen, mirrorSeen{r.Method, r.Host, r.RequestURI, string(b)})
		mb.mu.Unlock()
		if delay > 0 {
			sleepOrDone(r, delay)
		}
		_, _ = io.WriteString(w, "from-mirror")
	})
	return mb, host, port
}

func mirrorVhost(policies string) string {
	return `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route:
                  cluster: up
                  request_mirror_policies:` + policies + "\n"
}

func startMirrorProxy(t *testing.T, vhosts string, clusters ...string) *running {
	t.Helper()
	tmpl := "static_resources:\n  listeners:" + resilienceListener + "  clusters:" + strings.Join(clusters, "")
	return startProxy(t, tmpl, resilienceConfig{VirtualHosts: vhosts})
}

func primaryBackend(t *testing.T) (string, string) {
	t.Helper()
	host, port, _ := scripted(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "from-primary")
	})
	return host, port
}

func doMirrorReq(t *testing.T, method, url, host, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMirrorCopiesRequest(t *testing.T) {
	ph, pp := primaryBackend(t)
	mb, mh, mp := startMirrorBackend(t, 0)
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: mirror`), staticCluster("up", ph, pp, ""), staticCluster("mirror", mh, mp, ""))
	base := r.url(t, "http")
	bigBody := strings.Repeat("x", 100<<10) // past the 64 KiB mirror bound
	cases := []struct{ method, path, host, body, wantHost string }{
		{"GET", "/a?q=1", "svc.example:8080", "", "svc.example-shadow:8080"},
		{"GET", "/b", "svc.example", "", "svc.example-shadow"},
		{"GET", "/v6", "[fd00::1]:8080", "", "[fd00::1]-shadow:8080"},
		{"POST", "/c", "svc.example:8080", "hello mirror", "svc.example-shadow:8080"},
		{"POST", "/big", "svc.example", bigBody, ""},
	}
	for _, c := range cases {
		code, body := doMirrorReq(t, c.method, base+c.path, c.host, c.body)
		if code != 200 || body != "from-primary" {
			t.Fatalf("%s %s: client got %d %q, want the primary's answer", c.method, c.path, code, body)
		}
	}
	waitFor(t, 5*time.Second, "4 mirrored requests", func() bool { return len(mb.snapshot()) >= 4 })
	time.Sleep(100 * time.Millisecond) // a wrongly mirrored large body would show by now
	seen := mb.snapshot()
	if len(seen) != 4 {
		t.Fatalf("mirror saw %d requests, want 4 (the 100 KiB body is not mirrored): %+v", len(seen), seen)
	}
	got := map[string]mirrorSeen{}
	for _, s := range seen {
		got[s.Path] = s
	}
	for _, c := range cases[:4] {
		s, ok := got[c.path]
		if !ok {
			t.Errorf("%s not mirrored", c.path)
			continue
		}
		if s.Host != c.wantHost || s.Method != c.method || s.Body != c.body {
			t.Errorf("%s mirrored as %+v, want host %q method %s body %q", c.path, s, c.wantHost, c.method, c.body)
		}
	}
	if st := r.p.conns.MirrorStats(); st.Sent != 4 || st.Dropped != 1 {
		t.Errorf("mirror stats %+v, want 4 sent and 1 dropped", st)
	}
}

func TestMirrorSlowMirrorDoesNotDelayClient(t *testing.T) {
	ph, pp := primaryBackend(t)
	mb, mh, mp := startMirrorBackend(t, 2*time.Second)
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: mirror`), staticCluster("up", ph, pp, ""), staticCluster("mirror", mh, mp, ""))
	base := r.url(t, "http")
	const n = 20
	start := time.Now()
	var worst time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		code, body := doMirrorReq(t, "POST", base+"/slow", "", "payload")
		if code != 200 || body != "from-primary" {
			t.Fatalf("client got %d %q", code, body)
		}
		worst = max(worst, time.Since(t0))
	}
	if total := time.Since(start); total > time.Second || worst > 300*time.Millisecond {
		t.Fatalf("%d requests took %v (worst %v) with a mirror that sleeps 2s", n, total, worst)
	}
	waitFor(t, 5*time.Second, "mirror requests arrive", func() bool { return len(mb.snapshot()) == n })
}

func TestMirrorPercentage(t *testing.T) {
	ph, pp := primaryBackend(t)
	mb, mh, mp := startMirrorBackend(t, 0)
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: mirror
                    runtime_fraction: {default_value: {numerator: 500000, denominator: MILLION}}`),
		staticCluster("up", ph, pp, ""), staticCluster("mirror", mh, mp, ""))
	base := r.url(t, "http")
	const n = 400
	for i := 0; i < n; i++ {
		if code, body := doMirrorReq(t, "GET", base+"/p", "", ""); code != 200 || body != "from-primary" {
			t.Fatalf("client got %d %q", code, body)
		}
	}
	want := func() uint64 { st := r.p.conns.MirrorStats(); return st.Sent + st.Failed + st.Dropped }
	var last uint64
	waitFor(t, 5*time.Second, "mirrors settle", func() bool {
		cur := want()
		settled := cur == last && uint64(len(mb.snapshot())) == cur
		last = cur
		return settled
	})
	got := len(mb.snapshot())
	if got < n*40/100 || got > n*60/100 {
		t.Fatalf("mirrored %d of %d requests, want 50%% ± 10%%", got, n)
	}
}

func TestMirrorClusterMissingOrDown(t *testing.T) {
	ph, pp := primaryBackend(t)
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dh, dp := hostPort(t, "http://"+ln.Addr().String())
	ln.Close()
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: nosuch
                  - cluster: down`), staticCluster("up", ph, pp, ""), staticCluster("down", dh, dp, ""))
	base := r.url(t, "http")
	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		if code, body := doMirrorReq(t, "POST", base+"/m", "", "body"); code != 200 || body != "from-primary" {
			t.Fatalf("client got %d %q", code, body)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("%d requests took %v", n, d)
	}
	waitFor(t, 5*time.Second, "mirror failures counted", func() bool {
		return r.p.conns.MirrorStats().Failed == 2*n
	})
}

// A mirror that never answers in time cannot pile up requests: beyond the
// in-flight bound mirrors are dropped (and counted), the client unaffected.
func TestMirrorInFlightBound(t *testing.T) {
	ph, pp := primaryBackend(t)
	mb, mh, mp := startMirrorBackend(t, 10*time.Second)
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: mirror`), staticCluster("up", ph, pp, ""), staticCluster("mirror", mh, mp, ""))
	base := r.url(t, "http")
	const n = 300
	start := time.Now()
	for i := 0; i < n; i++ {
		if code, body := doMirrorReq(t, "GET", base+"/flood", "", ""); code != 200 || body != "from-primary" {
			t.Fatalf("client got %d %q", code, body)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("%d requests took %v", n, d)
	}
	waitFor(t, 5*time.Second, "in-flight mirrors reach the backend", func() bool { return len(mb.snapshot()) >= 128 })
	st := r.p.conns.MirrorStats()
	if got := len(mb.snapshot()); got > 128 || st.Dropped != uint64(n-got) {
		t.Fatalf("backend saw %d mirrors, stats %+v; want at most 128 in flight and the rest dropped", got, st)
	}
}

// An HTTP/2 client's streamed body is mirrored too, to an HTTP/2 (h2c)
// mirror cluster.
func TestMirrorHTTP2(t *testing.T) {
	ph, pp := primaryBackend(t)
	type got struct{ proto, host, path, body string }
	seen := make(chan got, 4)
	mh, mp := h2cUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- got{r.Proto, r.Host, r.RequestURI, string(b)}
		_, _ = io.WriteString(w, "from-mirror")
	}))
	r := startMirrorProxy(t, mirrorVhost(`
                  - cluster: mirror`), staticCluster("up", ph, pp, ""), staticCluster("mirror", mh, mp, h2ClusterOptions))
	client := &http.Client{Transport: h2cTransport(t)}
	req, err := http.NewRequest("POST", r.url(t, "http")+"/h2?x=1", hideLength{strings.NewReader("streamed body")})
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "svc.example:8080"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "from-primary" {
		t.Fatalf("client got %d %q", resp.StatusCode, b)
	}
	select {
	case g := <-seen:
		if want := (got{"HTTP/2.0", "svc.example-shadow:8080", "/h2?x=1", "streamed body"}); g != want {
			t.Fatalf("mirror saw %+v, want %+v", g, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no mirror request; stats %+v", r.p.conns.MirrorStats())
	}
}
