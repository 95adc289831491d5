package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Circuit breaking and outlier detection, end to end.

const plainVhost = `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up}
`

func TestCircuitBreakerOverflowUO(t *testing.T) {
	var inFlight, peak atomic.Int64
	host, port, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		cur := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if cur <= p || peak.CompareAndSwap(p, cur) {
				break
			}
		}
		sleepOrDone(r, 200*time.Millisecond)
		_, _ = fmt.Fprint(w, "ok")
	})
	cb := `    circuit_breakers:
      thresholds:
      - {max_connections: 1, max_pending_requests: 1}`
	l := startLogged(t, plainVhost, "", staticCluster("up", host, port, cb))
	const n = 20
	var wg sync.WaitGroup
	var ok, overflow atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, _ := httpGet(t, l.url(t, "http")+"/x")
			switch {
			case code == 200 && body == "ok":
				ok.Add(1)
			case code == 503 && body == "upstream connect error or disconnect/reset before headers. reset reason: overflow":
				overflow.Add(1)
			default:
				t.Errorf("got %d %q", code, body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() < 1 || overflow.Load() < 1 || ok.Load()+overflow.Load() != n {
		t.Errorf("%d ok, %d overflow of %d", ok.Load(), overflow.Load(), n)
	}
	if p := peak.Load(); p > 1 {
		t.Errorf("backend saw %d concurrent requests, max_connections is 1", p)
	}
	// Admin /clusters shows the thresholds and nothing left open.
	rec := httptest.NewRecorder()
	l.p.handleClusters(rec, httptest.NewRequest("GET", "/clusters", nil))
	for _, want := range []string{"up::default_priority::max_connections::1\n", "up::default_priority::max_pending_requests::1\n",
		"up::default_priority::max_requests::1024\n", "up::default_priority::cx_open::0\n", "up::default_priority::rq_open::0\n"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/clusters lacks %q:\n%s", want, rec.Body.String())
		}
	}
	e := l.entries(t)
	uo := 0
	for _, en := range e {
		if en["response_flags"] == "UO" {
			uo++
			if en["response_code_details"] != "upstream_reset_before_response_started{overflow}" || en["response_code"] != float64(503) {
				t.Errorf("UO entry: %v", en)
			}
		}
	}
	if int64(uo) != overflow.Load() || countFlags(e, "UO") != uo {
		t.Errorf("%d UO log entries, %d overflow responses", uo, overflow.Load())
	}
}

func TestCircuitBreakerMaxRequests(t *testing.T) {
	release := make(chan struct{})
	host, port, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = fmt.Fprint(w, "ok")
	})
	cb := `    circuit_breakers:
      thresholds:
      - {max_requests: 2}`
	l := startLogged(t, plainVhost, "", staticCluster("up", host, port, cb))
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 200 {
				t.Errorf("held request: %d", code)
			}
		}()
	}
	c := l.p.clusters.Get("up")
	waitFor(t, 5*time.Second, "two requests in flight", func() bool { _, _, rq, _ := c.CB.Counts(); return rq == 2 })
	if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 503 {
		t.Errorf("third request: %d, want 503", code)
	}
	close(release)
	wg.Wait()
	if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 200 {
		t.Errorf("after release: %d", code)
	}
	if e := l.entries(t); countFlags(e, "UO") != 1 {
		t.Errorf("%d UO entries, want 1", countFlags(e, "UO"))
	}
}

func twoHostCluster(h1, p1, h2, p2, extra string) string {
	return fmt.Sprintf(`
  - name: up
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
%s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, extra, h1, p1, h2, p2)
}

func TestOutlierEjectsFailingHost(t *testing.T) {
	goodHost, goodPort, good := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { _, _ = fmt.Fprint(w, "good") })
	badHost, badPort, bad := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	od := `    outlier_detection:
      consecutive_5xx: 3
      interval: 0.05s
      base_ejection_time: 0.5s
      max_ejection_percent: 50`
	l := startLogged(t, plainVhost, "", twoHostCluster(goodHost, goodPort, badHost, badPort, od))
	get := func() int { code, _, _ := httpGet(t, l.url(t, "http")+"/x"); return code }
	// Round robin: the bad host fails its third request within six.
	for range 6 {
		get()
	}
	if b := bad.Load(); b != 3 {
		t.Fatalf("bad host saw %d requests before ejection, want 3", b)
	}
	ejectedAt := time.Now()
	before := good.Load()
	for range 20 {
		if code := get(); code != 200 {
			t.Fatalf("request while bad host ejected: %d", code)
		}
	}
	if time.Since(ejectedAt) < 400*time.Millisecond {
		if b := bad.Load(); b != 3 || good.Load()-before != 20 {
			t.Fatalf("ejected host got traffic: bad %d, good %d", b, good.Load()-before)
		}
	}
	rec := httptest.NewRecorder()
	l.p.handleClusters(rec, httptest.NewRequest("GET", "/clusters", nil))
	if time.Since(ejectedAt) < 400*time.Millisecond && !strings.Contains(rec.Body.String(), "up::"+badHost+":"+badPort+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not show the ejection:\n%s", rec.Body.String())
	}
	// After base_ejection_time (and an interval sweep) it comes back.
	c := l.p.clusters.Get("up")
	waitFor(t, 3*time.Second, "host back in service", func() bool { _, active := c.OutlierEjections(); return active == 0 })
	if d := time.Since(ejectedAt); d < 450*time.Millisecond {
		t.Errorf("host returned after %v, base_ejection_time is 500ms", d)
	}
	for range 4 {
		get()
	}
	if b := bad.Load(); b == 3 {
		t.Error("host did not get traffic after its ejection ended")
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	// Both hosts fail; the default 10% lets one host (of two) be ejected,
	// never both.
	h1, p1, c1 := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	h2, p2, c2 := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	od := `    outlier_detection:
      consecutive_5xx: 2
      base_ejection_time: 30s`
	l := startLogged(t, plainVhost, "", twoHostCluster(h1, p1, h2, p2, od))
	for range 4 {
		httpGet(t, l.url(t, "http")+"/x")
	}
	a, b := c1.Load(), c2.Load()
	for range 10 {
		if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 502 {
			t.Fatalf("got %d, want the upstream 502", code)
		}
	}
	da, db := c1.Load()-a, c2.Load()-b
	if !(da == 10 && db == 0 || da == 0 && db == 10) {
		t.Errorf("after one ejection traffic went %d/%d, want all to the remaining host", da, db)
	}
	if total, active := l.p.clusters.Get("up").OutlierEjections(); total != 1 || active != 1 {
		t.Errorf("ejections %d, active %d; want 1, 1", total, active)
	}
}

func TestCircuitBreakerMaxRetries(t *testing.T) {
	// max_retries 0: the retry the policy asks for is refused, and the
	// upstream's answer goes downstream, as in Envoy (retry overflow).
	host, port, count := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	cb := `    circuit_breakers:
      thresholds:
      - {max_retries: 0}`
	l := startLogged(t, retryVhost(`{retry_on: "5xx", num_retries: 3, retry_back_off: {base_interval: 0.001s}}`), "", staticCluster("up", host, port, cb))
	if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 503 {
		t.Errorf("got %d, want the upstream 503", code)
	}
	if c := count.Load(); c != 1 {
		t.Errorf("backend saw %d tries, want 1", c)
	}
	if ov := l.p.clusters.Get("up").CB.RetryOverflow.Load(); ov != 1 {
		t.Errorf("retry overflow %d, want 1", ov)
	}
}

func TestOutlierCountsRetriedTries(t *testing.T) {
	// Each retried 503 counts toward the host's consecutive 5xx.
	badHost, badPort, bad := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	goodHost, goodPort, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) { _, _ = fmt.Fprint(w, "good") })
	od := `    outlier_detection:
      consecutive_5xx: 2
      base_ejection_time: 30s
      max_ejection_percent: 50`
	l := startLogged(t, retryVhost(`{retry_on: "5xx", num_retries: 1, retry_back_off: {base_interval: 0.001s}}`), "", twoHostCluster(badHost, badPort, goodHost, goodPort, od))
	for range 10 {
		if code, _, _ := httpGet(t, l.url(t, "http")+"/x"); code != 200 {
			t.Fatalf("got %d", code)
		}
	}
	if b := bad.Load(); b != 2 {
		t.Errorf("bad host saw %d tries, want 2 before its ejection", b)
	}
}

func TestCircuitBreakerPendingTimeout(t *testing.T) {
	// A request waiting for a connection is bounded by the route timeout.
	host, port, _ := scripted(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		sleepOrDone(r, 2*time.Second)
	})
	cb := `    circuit_breakers:
      thresholds:
      - {max_connections: 1, max_pending_requests: 10}`
	vhost := `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: up, timeout: 0.3s}
`
	l := startLogged(t, vhost, "", staticCluster("up", host, port, cb))
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = httpGet(t, l.url(t, "http")+"/x")
		}()
	}
	start := time.Now()
	wg.Wait()
	if codes[0] != 504 || codes[1] != 504 {
		t.Errorf("codes %v, want both 504", codes)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("took %v; the pending request outlived the route timeout", d)
	}
	if e := l.entries(t); countFlags(e, "UT") != 2 {
		t.Errorf("%d UT entries, want 2", countFlags(e, "UT"))
	}
}
