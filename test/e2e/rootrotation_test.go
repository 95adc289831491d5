package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRootRotation rotates the mesh root under traffic: the control plane
// pushes the trust bundle holding both roots to every proxy (SDS secret
// ROOTCA), proxies renew onto the new root, the old root is retired, and
// no request fails on the way; a proxy that joins afterwards, trusting only
// the new root, works too.
func TestRootRotation(t *testing.T) {
	cp := startControlPlane(t, cpOpts{secure: true})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	// Short certificates: renewals come every few seconds.
	reviews := cp.startWorkload(t, "reviews-v1", "v1", startApp(t, "reviews-v1", "v1"),
		append(cp.identity(t, "reviews"), "--cert-ttl", "6s")...)
	client := cp.startClient(t, append(cp.identity(t, "productpage"), "--cert-ttl", "6s")...)
	c := meshClient(client.Listen)
	t.Cleanup(c.CloseIdleConnections)
	const target = "http://reviews:9080/"
	waitVersions(t, c, target, 15*time.Second, "v1")

	// Steady traffic for the whole rotation; every failure is kept.
	var (
		sent     atomic.Int64
		failMu   sync.Mutex
		failures []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A new connection now and then, so handshakes with the
			// current certificates happen throughout.
			hc := meshClient(client.Listen)
			defer hc.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if i%25 == 0 {
					hc.CloseIdleConnections()
				}
				sent.Add(1)
				if _, err := call(hc, target); err != nil {
					failMu.Lock()
					failures = append(failures, err.Error())
					failMu.Unlock()
				}
			}
		}()
	}
	var once sync.Once
	stopLoad := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer stopLoad()
	count := func(p *proc, s string) int { return strings.Count(p.stderr.String(), s) }
	before := map[*proc]int{reviews.proc: count(reviews.proc, "workload certificate obtained"), client.proc: count(client.proc, "workload certificate obtained")}

	out := cp.mustCLI(t, "ca", "rotate-root")
	if !strings.Contains(out, "root 1:") || !strings.Contains(out, "root 2:") {
		t.Fatalf("rotate-root printed %q, want two roots during the overlap", out)
	}
	// Both proxies take the two-root bundle over SDS, then renew (their
	// new certificates come from the new root).
	if err := eventually(20*time.Second, func() error {
		for _, p := range []*proc{reviews.proc, client.proc} {
			if count(p, "trust bundle updated") == 0 {
				return fmt.Errorf("%s: no trust bundle update", p.name)
			}
			if count(p, "workload certificate obtained") < before[p]+2 {
				return fmt.Errorf("%s: not renewed twice since the rotation", p.name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out = cp.mustCLI(t, "ca", "retire-old")
	if !strings.Contains(out, "root 1:") || strings.Contains(out, "root 2:") {
		t.Fatalf("retire-old printed %q, want one root", out)
	}
	// Traffic goes on over new connections with only the new root trusted.
	n := sent.Load()
	if err := eventually(15*time.Second, func() error {
		if sent.Load() < n+200 {
			return fmt.Errorf("%d requests since retire-old", sent.Load()-n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A proxy joining now trusts only the new root.
	late := cp.startClient(t, append(cp.identity(t, "ratings"), "--node-id", "sidecar~127.0.0.1~ratings.default")...)
	lc := meshClient(late.Listen)
	t.Cleanup(lc.CloseIdleConnections)
	if r, err := call(lc, target); err != nil || r.Name != "reviews-v1" || !strings.Contains(r.Headers["x-forwarded-client-cert"], "sa/ratings") {
		t.Errorf("late proxy: %+v, %v", r, err)
	}
	stopLoad()
	failMu.Lock()
	defer failMu.Unlock()
	t.Logf("%d requests during the rotation", sent.Load())
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during the rotation; first: %s", len(failures), sent.Load(), failures[0])
	}
}
