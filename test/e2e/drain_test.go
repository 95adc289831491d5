package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMDrains checks graceful shutdown the way Envoy documents
// draining: listeners stop accepting, requests in flight finish, HTTP/1.1
// responses sent while draining carry "Connection: close", idle keep-alive
// connections are closed cleanly, and the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	const (
		inFlight = 20
		drain    = 5 * time.Second
		// The backend holds each slow request for hold, and past that
		// until the test has checked the draining proxy (at most holdMax),
		// so the responses are written while it drains.
		hold    = time.Second
		holdMax = 3 * time.Second
	)
	arrived := make(chan struct{}, inFlight)
	release := make(chan struct{})
	var fastSeen atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			fastSeen.Add(1)
			fmt.Fprint(w, "fast")
			return
		}
		start := time.Now()
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(holdMax):
		}
		time.Sleep(time.Until(start.Add(hold)))
		fmt.Fprint(w, "slow done")
	}))
	t.Cleanup(backend.Close)
	p := startProxy(t, newBootstrap(strings.TrimPrefix(backend.URL, "http://")), proxyOpts{drain: drain})

	// A keep-alive connection that served one request and is now idle.
	idle, err := net.DialTimeout("tcp", p.Listen, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	if resp := roundTrip(t, idle, idleR, "/fast"); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("before SIGTERM: status %d, Connection: close=%v; want 200 keep-alive", resp.StatusCode, resp.Close)
	}

	// inFlight requests, each on its own keep-alive connection.
	type result struct {
		code  int
		body  string
		close bool
		err   error
	}
	results := make(chan result, inFlight)
	client := &http.Client{Timeout: drain + 5*time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: inFlight}}
	defer client.CloseIdleConnections()
	for range inFlight {
		go func() {
			resp, err := client.Get("http://" + p.Listen + "/slow")
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results <- result{code: resp.StatusCode, body: string(b), close: resp.Close, err: err}
		}()
	}
	for i := range inFlight {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d requests reached the backend", i, inFlight)
		}
	}

	sigAt := time.Now()
	p.signal(t, syscall.SIGTERM)

	// Envoy's /ready answers 503 DRAINING while draining; amime closes its
	// listeners before it says so.
	if err := eventually(2*time.Second, func() error {
		code, body, err := get(p.Admin, "/ready")
		if err == nil && (code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "DRAINING") {
			err = fmt.Errorf("/ready: %d %q", code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("admin never reported DRAINING after SIGTERM: %v", err)
	}

	t.Run("new connections refused", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", p.Listen, time.Second)
		if err == nil {
			c.Close()
			t.Fatal("a new connection was accepted after SIGTERM")
		}
		if !isConnRefused(err) {
			t.Errorf("dial after SIGTERM: %v, want connection refused", err)
		}
	})

	t.Run("idle keep-alive connection closed cleanly", func(t *testing.T) {
		// ConnTracker.Drain closes idle HTTP/1.1 connections as soon as it
		// starts, so the keep-alive client sees a clean close (FIN: EOF, not
		// a reset) while the proxy still waits for the slow requests, and a
		// request it sends on that connection afterwards is never served.
		_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := idleR.Read(make([]byte, 1))
		switch {
		case n > 0:
			t.Fatalf("idle keep-alive connection received data after SIGTERM")
		case errors.Is(err, syscall.ECONNRESET):
			t.Fatalf("idle keep-alive connection was reset, want a clean close (FIN)")
		case !errors.Is(err, io.EOF):
			t.Fatalf("idle keep-alive connection not closed after SIGTERM: %v", err)
		}
		if p.exited() {
			t.Errorf("the idle connection was closed only when the proxy exited; want at drain start")
		}
		// The write may succeed (the kernel does not know yet) or fail;
		// either way no response may come back.
		_, _ = io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: e2e\r\n\r\n")
		if n, _ := idleR.Read(make([]byte, 1)); n > 0 {
			t.Errorf("a request sent on the closed keep-alive connection got a response")
		}
		if got := fastSeen.Load(); got != 1 {
			t.Errorf("backend saw %d /fast requests, want 1 (none after SIGTERM)", got)
		}
	})

	close(release)
	t.Run("in-flight requests complete", func(t *testing.T) {
		var missingClose int
		for range inFlight {
			var r result
			select {
			case r = <-results:
			case <-time.After(drain + 2*time.Second):
				t.Fatal("in-flight requests did not finish")
			}
			if r.err != nil || r.code != http.StatusOK || r.body != "slow done" {
				t.Errorf("in-flight request: %d %q, %v; want 200 \"slow done\"", r.code, r.body, r.err)
				continue
			}
			if !r.close {
				missingClose++
			}
		}
		// Envoy sets Connection: close on every HTTP/1.1 response whose
		// headers it encodes while draining, so clients stop reusing the
		// connection instead of racing its close.
		if missingClose > 0 {
			t.Errorf("%d of %d responses written after SIGTERM lack \"Connection: close\"", missingClose, inFlight)
		}
	})

	code, exited := p.waitExit(time.Until(sigAt.Add(drain + 2*time.Second)))
	if !exited {
		t.Fatalf("amime still running %v after SIGTERM (drain duration %v)", time.Since(sigAt).Round(time.Millisecond), drain)
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// roundTrip sends one GET on a raw connection and reads the response.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, path string) *http.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: e2e\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
