package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// preferenceCalls reads the preference sidecar's access log and counts its
// calls to recommendation, and those with a given response flag or code.
func (m *upMesh) preferenceCalls(t *testing.T, match string) (total, matched int) {
	return m.logCount(t, "preference-v1-*-sidecar.log", match)
}

// logCount counts a sidecar access log's lines for recommendation, and
// those containing match.
func (m *upMesh) logCount(t *testing.T, glob, match string) (total, matched int) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(m.dataDir, "logs", glob))
	if len(files) == 0 {
		t.Fatalf("no %s under %s/logs", glob, m.dataDir)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			// recommendation:8080, or recommendation-shadow:8080 for mirrors
			if !strings.Contains(line, `"authority":"recommendation`) {
				continue
			}
			total++
			if strings.Contains(line, match) {
				matched++
			}
		}
		fh.Close()
	}
	return total, matched
}

// startTrackedUp starts `amime up` for one test on free ports (the
// gateway's 8080 must be free) and stops it cleanly when the test ends,
// also after a failure, so the next test finds 8080 free; startProc's and
// the tracker's cleanups kill what stop missed.
func startTrackedUp(t *testing.T) (*upMesh, *upTracked) {
	t.Helper()
	requireGatewayPortFree(t)
	tracked := newUpTracked(t)
	xds, api, control := upPorts(t)
	m := startUp(t, t.TempDir(), xds, api, control)
	tracked.add(m.children(t))
	t.Cleanup(func() {
		if !m.exited() {
			m.stop(t)
		}
	})
	return m, tracked
}

// TestUpResilience walks the tutorial's retry and fault steps through the
// gateway, reading the sidecars' access logs for what users do not see.
func TestUpResilience(t *testing.T) {
	m, _ := startTrackedUp(t)
	m.apply(t, "destination-rule-recommendation-v1-v2.yaml")

	// Retries: v2 answers 503 to everything; retries (to another host)
	// hide it, so users only ever see v1.
	v2 := m.status(t, "recommendation-v2", 2)
	for _, a := range v2 {
		if code, body, err := upHTTP(http.MethodPost, "http://"+a+"/misbehave"); err != nil || code != 200 {
			t.Fatalf("misbehave %s: %d %s %v", a, code, body, err)
		}
	}
	m.apply(t, "virtual-service-recommendation-retries.yaml")
	// v2's own sidecar logs the 503s its app answered (inbound); the
	// client-side logs show one line per request, after retries.
	_, before503 := m.logCount(t, "recommendation-v2-*-sidecar.log", `"response_code":503`)
	by, _ := m.count(t, 100, "") // fails the test on any non-200 answer
	if by["v1"] != 100 {
		t.Errorf("with v2 failing and retries on: %v, want 100 v1", by)
	}
	if err := eventually(5*time.Second, func() error {
		if _, n := m.logCount(t, "recommendation-v2-*-sidecar.log", `"response_code":503`); n <= before503 {
			return errNoRetries
		}
		return nil
	}); err != nil {
		t.Errorf("no 503 in v2's sidecar log: the retries were not exercised")
	}
	for _, a := range v2 {
		if code, _, err := upHTTP(http.MethodPost, "http://"+a+"/behave"); err != nil || code != 200 {
			t.Fatalf("behave %s: %d %v", a, code, err)
		}
	}

	// Fault abort at 50%: the preference sidecar injects 503 (flag FI) on
	// about half of its calls; Istio's default retries hide most of them
	// from users, so the ratio is read from the access log.
	m.apply(t, "virtual-service-recommendation-503.yaml")
	m.waitRun(t, "fault injection active", 1, func() (bool, error) {
		_, n := m.preferenceCalls(t, `"response_flags":"FI"`)
		_, _, err := m.get("", "/", "")
		return n > 0, err
	})
	total0, fi0 := m.preferenceCalls(t, `"response_flags":"FI"`)
	const requests = 1000
	for i := 0; i < requests; i++ {
		if _, _, err := m.get("", "/", ""); err != nil {
			t.Fatal(err)
		}
	}
	var total, fi int
	// The access log is flushed every second: wait until the calls of the
	// requests (at least one each) are there.
	if err := eventually(10*time.Second, func() error {
		total, fi = m.preferenceCalls(t, `"response_flags":"FI"`)
		if total-total0 < requests {
			return errNoRetries
		}
		return nil
	}); err != nil {
		t.Fatalf("preference logged %d calls to recommendation for %d requests", total-total0, requests)
	}
	// Over ≥ 1000 calls the standard deviation is ≤ 1.6%: ±5% is 3 of them.
	if s := share(fi-fi0, total-total0); s < 0.45 || s > 0.55 {
		t.Errorf("fault abort: %d of %d calls aborted, want 50%% ± 5%%", fi-fi0, total-total0)
	}

	// Fault delay: 7 s on half the calls. 20 requests at once, so the test
	// waits about 7 s, not 70.
	m.apply(t, "virtual-service-recommendation-delay.yaml")
	// A request that times out at 1.5 s was delayed: the rule is active.
	impatient := &http.Client{Timeout: 1500 * time.Millisecond}
	m.waitRun(t, "the delay rule active", 1, func() (bool, error) {
		resp, err := impatient.Get("http://" + upGateway + "/")
		if err != nil {
			return true, nil
		}
		resp.Body.Close()
		return false, nil
	})
	var mu sync.Mutex
	slow := 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			code, _, err := m.get("", "/", "")
			if err != nil || code != 200 {
				t.Errorf("delayed request: %d %v", code, err)
				return
			}
			if time.Since(start) >= 7*time.Second {
				mu.Lock()
				slow++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Binomial(20, 0.5): outside 4..16 has probability 0.3%.
	if slow < 4 || slow > 16 {
		t.Errorf("fault delay: %d of 20 requests took ≥ 7s, want about half", slow)
	}
}

var errNoRetries = errorString("not yet")

type errorString string

func (e errorString) Error() string { return string(e) }

// TestUpMirrorAndOutlier walks the tutorial's dark launch (mirroring) and
// outlier detection steps.
func TestUpMirrorAndOutlier(t *testing.T) {
	m, _ := startTrackedUp(t)

	// Mirroring: users get v1 only; v2 receives the copies, addressed to
	// recommendation-shadow as Envoy names them.
	m.apply(t, "destination-rule-recommendation-outlier-detection.yaml") // defines version-v1/version-v2
	m.apply(t, "virtual-service-recommendation-v1-mirror-v2.yaml")
	m.waitRun(t, "v1 only", 20, func() (bool, error) {
		v, _, err := m.version("")
		return v == "v1", err
	})
	shadow0, _ := m.logCount(t, "recommendation-v2-*-sidecar.log", "")
	_, shadowed0 := m.logCount(t, "recommendation-v2-*-sidecar.log", `"authority":"recommendation-shadow:8080"`)
	by, _ := m.count(t, 50, "")
	if by["v1"] != 50 {
		t.Errorf("mirroring: users got %v, want only v1", by)
	}
	if err := eventually(10*time.Second, func() error {
		if _, n := m.logCount(t, "recommendation-v2-*-sidecar.log", `"authority":"recommendation-shadow:8080"`); n-shadowed0 < 50 {
			return errNoRetries
		}
		return nil
	}); err != nil {
		_, n := m.logCount(t, "recommendation-v2-*-sidecar.log", `"authority":"recommendation-shadow:8080"`)
		t.Errorf("v2 received %d mirrored requests for 50 user requests (lines before: %d)", n-shadowed0, shadow0)
	}

	// Outlier detection: a v2 instance that answers 503 is ejected after
	// one error (consecutive5xxErrors: 1) and gets no request for
	// baseEjectionTime (15 s), while retries keep users from seeing it.
	m.cli(t, "delete", "virtualservice", "recommendation")
	m.waitRun(t, "v2 reachable again without the mirror rule", 1, func() (bool, error) {
		v, _, err := m.version("")
		return v == "v2", err
	})
	v2 := m.status(t, "recommendation-v2", 2)
	for _, a := range v2 {
		if code, _, err := upHTTP(http.MethodPost, "http://"+a+"/misbehave"); err != nil || code != 200 {
			t.Fatalf("misbehave %s: %d %v", a, code, err)
		}
	}
	direct503 := func() int {
		total := 0
		files, _ := filepath.Glob(filepath.Join(m.dataDir, "logs", "recommendation-v2-*-sidecar.log"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"authority":"recommendation:8080"`) && strings.Contains(line, `"response_code":503`) {
					total++
				}
			}
		}
		return total
	}
	m.count(t, 20, "") // fails the test on any non-200 answer
	if err := eventually(10*time.Second, func() error {
		if direct503() == 0 {
			return errNoRetries
		}
		return nil
	}); err != nil {
		t.Fatal("v2's errors never reached its sidecar log")
	}
	time.Sleep(1500 * time.Millisecond) // the access log is flushed every second: a time-based flush, not readiness
	base := direct503()
	by, _ = m.count(t, 50, "")
	if by["v1"] != 50 {
		t.Errorf("with v2 ejected: users got %v, want only v1", by)
	}
	time.Sleep(1500 * time.Millisecond) // one more flush
	if after := direct503(); after > base {
		t.Errorf("the ejected v2 instance still got %d requests", after-base)
	}
}

// TestUpCircuitBreaker walks the tutorial's circuit breaker step: v2 allows
// 1 connection and 1 pending request; 20 concurrent requests to a slow v2
// overflow at the preference sidecar (Envoy's flag UO).
func TestUpCircuitBreaker(t *testing.T) {
	m, _ := startTrackedUp(t)
	m.apply(t, "destination-rule-recommendation-circuit-breaker.yaml")
	m.apply(t, "virtual-service-recommendation-v2.yaml")
	m.waitRun(t, "v2 only", 10, func() (bool, error) {
		v, _, err := m.version("")
		return v == "v2", err
	})
	for _, a := range m.status(t, "recommendation-v2", 2) {
		if code, _, err := upHTTP(http.MethodPost, "http://"+a+"/slow?delay=1s"); err != nil || code != 200 {
			t.Fatalf("slow %s: %d %v", a, code, err)
		}
	}
	_, uo0 := m.preferenceCalls(t, `"response_flags":"UO"`)
	overflowed := func() error {
		if _, uo := m.preferenceCalls(t, `"response_flags":"UO"`); uo <= uo0 {
			return errNoRetries
		}
		return nil
	}
	// Bursts of 30 concurrent requests, up to three: one normally shows the
	// overflow; a loaded machine may spread a burst out.
	var err error
	for burst := 0; burst < 3; burst++ {
		var wg sync.WaitGroup
		for i := 0; i < 30; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _ = m.get("", "/", "") // users may see 503s: that is the breaker working
			}()
		}
		wg.Wait()
		if err = eventually(3*time.Second, overflowed); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal("no overflow (UO) in the preference sidecar's log for 3 bursts of 30 concurrent requests against 1 connection + 1 pending")
	}
}

// TestUpStickyCookie walks the tutorial's sticky-user step: with a
// consistent hash on cookie "user", one user stays on one instance while
// different users spread.
func TestUpStickyCookie(t *testing.T) {
	m, tracked := startTrackedUp(t)
	m.cli(t, "scale", "recommendation-v2", "--replicas", "2")
	tracked.add(m.children(t))
	m.apply(t, "destination-rule-recommendation-sticky-cookie.yaml")
	instanceFor := func(user string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+upGateway+"/", nil)
		req.Header.Set("Cookie", "user="+user)
		resp, err := m.client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		sm := upReply.FindStringSubmatch(strings.TrimSpace(b.String()))
		if resp.StatusCode != 200 || sm == nil {
			return "", fmt.Errorf("%d %q", resp.StatusCode, b.String())
		}
		return sm[1] + "/" + sm[2], nil
	}
	// The rule has arrived when alice lands on one instance 20 times in a
	// row (improbable by chance over three instances).
	first := ""
	m.waitRun(t, "alice sticky", 20, func() (bool, error) {
		inst, err := instanceFor("alice")
		if err != nil {
			return false, err
		}
		if inst != first {
			first = inst
			return false, nil
		}
		return true, nil
	})
	for i := 0; i < 30; i++ {
		inst, err := instanceFor("alice")
		if err != nil {
			t.Fatal(err)
		}
		if inst != first {
			t.Fatalf("alice moved from %s to %s", first, inst)
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 30; i++ {
		inst, err := instanceFor(fmt.Sprintf("user-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		seen[inst] = true
	}
	if len(seen) < 2 {
		t.Errorf("30 different users all landed on %v", seen)
	}
}
