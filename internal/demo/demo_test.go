package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// chain starts the three services wired directly (no mesh), as their
// sidecars would wire them.
func chain(t *testing.T) (customer, preference, recommendation *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := func(cfg Config) *Server {
		cfg.Listen = "127.0.0.1:0"
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Serve(ctx) }()
		return s
	}
	recommendation = start(Config{Service: "recommendation", Version: "v2", InstanceID: "abcde"})
	preference = start(Config{Service: "preference", Upstream: "http://" + recommendation.Addr()})
	customer = start(Config{Service: "customer", Upstream: "http://" + preference.Addr()})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return
}

func get(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
}

func TestTutorialChain(t *testing.T) {
	c, _, r := chain(t)
	for i := 1; i <= 3; i++ {
		code, body := get(t, "http://"+c.Addr()+"/")
		want := fmt.Sprintf("customer => preference => recommendation v2 from 'abcde': %d\n", i)
		if code != 200 || body != want {
			t.Fatalf("got %d %q, want %q", code, body, want)
		}
	}

	post(t, "http://"+r.Addr()+"/misbehave")
	code, body := get(t, "http://"+c.Addr()+"/")
	if code != 503 || !strings.Contains(body, "recommendation misbehavior from 'abcde'") {
		t.Fatalf("misbehave: %d %q", code, body)
	}
	post(t, "http://"+r.Addr()+"/behave")
	if code, _ := get(t, "http://"+c.Addr()+"/"); code != 200 {
		t.Fatalf("behave: %d", code)
	}
}

func TestErrorPercentage(t *testing.T) {
	_, _, r := chain(t)
	post(t, "http://"+r.Addr()+"/errors?percent=50")
	fails := 0
	const n = 400
	for i := 0; i < n; i++ {
		if code, _ := get(t, "http://"+r.Addr()+"/"); code == 503 {
			fails++
		}
	}
	// 50% ± 10% over 400 (sd 2.5%).
	if fails < n*40/100 || fails > n*60/100 {
		t.Fatalf("%d of %d failed, want about half", fails, n)
	}
}

func TestSlowAndHeaders(t *testing.T) {
	c, _, r := chain(t)
	post(t, "http://"+r.Addr()+"/slow?delay=300ms")
	start := time.Now()
	if code, _ := get(t, "http://"+c.Addr()+"/"); code != 200 {
		t.Fatal(code)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("slow mode: answered in %v", d)
	}
	_, body := get(t, "http://"+r.Addr()+"/headers", "User-Agent", "Safari", "x-custom", "1")
	var h struct {
		Service string
		Headers http.Header
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Service != "recommendation" || h.Headers.Get("x-custom") != "1" {
		t.Fatalf("headers echo: %v %s", err, body)
	}
}

func TestUnknownService(t *testing.T) {
	if _, err := New(Config{Service: "ratings", Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "unknown service") {
		t.Fatalf("err = %v", err)
	}
}
