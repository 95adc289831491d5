package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fortioResult is the part of `fortio load -json` the test reads.
type fortioResult struct {
	ActualQPS               float64
	RetCodes                map[string]int64
	DurationHistogram       struct{ Count int64 }
	ErrorsDurationHistogram struct{ Count int64 }
	Sizes                   struct {
		Count    int64
		Min, Max float64
	}
}

func TestFortioLoadNoErrors(t *testing.T) {
	fortio := tool(t, "fortio")

	// fortio's echo server as the backend; every other port it would open
	// by default is disabled so parallel runs cannot collide.
	echoAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := startProc(t, "fortio server", fortio, "server", "-http-port", echoAddr,
		"-grpc-port", "disabled", "-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled")
	if err := eventually(10*time.Second, func() error {
		if srv.exited() {
			return nil
		}
		_, _, err := get(echoAddr, "/debug")
		return err
	}); err != nil || srv.exited() {
		t.Fatalf("fortio server not serving on %s (exited=%v): %v", echoAddr, srv.exited(), err)
	}

	p := startProxy(t, newBootstrap(echoAddr), proxyOpts{logLevel: "warn"})

	const payload = 1024
	out := filepath.Join(t.TempDir(), "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fortio, "load", "-qps", "1000", "-c", "16", "-t", "5s",
		"-payload-size", strconv.Itoa(payload), "-json", out, "http://"+p.Listen+"/echo")
	log, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("fortio load did not finish within 30s:\n%s", log)
	}
	data, rerr := os.ReadFile(out)
	if rerr != nil {
		t.Fatalf("fortio load wrote no result (%v): %v\n%s", err, rerr, log)
	}
	var r fortioResult
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("fortio result: %v", err)
	}
	t.Logf("fortio: %d calls, %.0f qps, codes %v", r.DurationHistogram.Count, r.ActualQPS, r.RetCodes)

	if r.DurationHistogram.Count == 0 {
		t.Fatalf("fortio made no calls:\n%s", log)
	}
	var non200 int64
	for code, n := range r.RetCodes {
		if code != "200" {
			non200 += n
		}
	}
	if non200 != 0 || r.RetCodes["200"] != r.DurationHistogram.Count {
		t.Errorf("return codes %v for %d calls; want only 200", r.RetCodes, r.DurationHistogram.Count)
	}
	if r.ErrorsDurationHistogram.Count != 0 {
		t.Errorf("%d calls failed", r.ErrorsDurationHistogram.Count)
	}
	// fortio's echo server returns the POSTed payload: a shorter response
	// means the proxy lost body bytes.
	if r.Sizes.Min < payload {
		t.Errorf("smallest response %v bytes, want at least the %d-byte payload echoed", r.Sizes.Min, payload)
	}
	if err != nil {
		t.Errorf("fortio load: %v\n%s", err, log)
	}
}
