package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// raceEnabled is set by race_test.go when the tests run with -race.
var raceEnabled bool

// amimeBin is the binary under test, built once by TestMain, or the one
// AMIME_BIN names (to test a release build).
var amimeBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if bin := os.Getenv("AMIME_BIN"); bin != "" {
		amimeBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "amime-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	amimeBin = filepath.Join(dir, "amime")
	if err := buildAmime(amimeBin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building amime:", err)
		return 1
	}
	return m.Run()
}

// buildAmime builds ./cmd/amime from the module root (found with `go env
// GOMOD`, so the test works from any working directory).
func buildAmime(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	args := []string{"build", "-buildvcs=false", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/amime")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, b)
	}
	return nil
}

// tool finds an external test tool that ./scripts/test installs into
// $(go env GOPATH)/bin. A missing tool fails the test: a skipped
// conformance or load test would hide a regression.
func tool(t *testing.T, name string) string {
	t.Helper()
	var tried []string
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, gp := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(gp, "bin", name)
			tried = append(tried, p)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found (looked in %s and $PATH): run ./scripts/test, which installs it", name, strings.Join(tried, ", "))
	return ""
}

// usedPorts keeps freePort from handing out one port twice in a run.
var (
	portMu    sync.Mutex
	usedPorts = map[int]bool{}
)

// freePort returns a 127.0.0.1 port that was free a moment ago. The proxy
// takes its ports from flags and the bootstrap, so they must be chosen
// before it starts; startProxy retries if one was taken meanwhile.
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !usedPorts[port] {
			usedPorts[port] = true
			return port
		}
	}
}

// lockedBuffer collects a child's stderr while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a child process owned by one test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{} // closed when Wait returned
}

// startProc starts a child. It is always killed and reaped when the test
// ends, and its output is logged if the test failed.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	p.cmd.Dir = t.TempDir()
	// A grandchild holding the pipe must not block Wait forever.
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.cmd.Process.Pid)
		}
		out := p.stderr.String()
		if raceEnabled && strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			// Keep the log readable after a load test: the end matters most.
			const keep = 64 << 10
			if len(out) > keep {
				out = fmt.Sprintf("[... %d bytes cut ...]\n%s", len(out)-keep, out[len(out)-keep:])
			}
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit and returns its exit
// code, or -1 and false if it is still running.
func (p *proc) waitExit(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// eventually polls f every 20ms until it returns nil or d passes, and
// returns its last error.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// amime is a running proxy with the addresses it serves.
type amime struct {
	*proc
	Listen string // the listener (host:port)
	Admin  string
	Health string
}

// proxyOpts tunes startProxy.
type proxyOpts struct {
	drain    time.Duration // --drain-duration; 0 keeps the default
	logLevel string
}

// startProxy writes the bootstrap (its first listener bound to a free
// port), starts the binary with admin and health on free ports, and waits
// until GET /ready answers LIVE.
func startProxy(t *testing.T, b bootstrap, o proxyOpts) *amime {
	t.Helper()
	var lastOut string
	// A port picked by freePort can be taken by another process before the
	// proxy binds it; that is the only failure retried.
	for attempt := 0; attempt < 3; attempt++ {
		a := &amime{
			Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			Admin:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			Health: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		}
		_, port, _ := net.SplitHostPort(a.Listen)
		n, _ := strconv.Atoi(port)
		b.setListenerPort(n)
		args := []string{"proxy", "--bootstrap", writeBootstrap(t, b), "--admin-addr", a.Admin, "--health-addr", a.Health}
		if o.drain > 0 {
			args = append(args, "--drain-duration", o.drain.String())
		}
		if o.logLevel != "" {
			args = append(args, "--log-level", o.logLevel)
		}
		a.proc = startProc(t, "amime", amimeBin, args...)
		err := eventually(15*time.Second, func() error {
			if a.exited() {
				return nil // reported below
			}
			code, body, err := get(a.Admin, "/ready")
			if err != nil {
				return err
			}
			if code != http.StatusOK || strings.TrimSpace(body) != "LIVE" {
				return fmt.Errorf("/ready: %d %q", code, body)
			}
			return nil
		})
		if a.exited() {
			lastOut = a.stderr.String()
			if strings.Contains(lastOut, "address already in use") {
				continue
			}
			t.Fatalf("amime exited before it was ready (code %d); its output is logged below", a.cmd.ProcessState.ExitCode())
		}
		if err != nil {
			t.Fatalf("amime not ready within 15s: %v", err)
		}
		return a
	}
	t.Fatalf("amime could not bind its ports in 3 attempts:\n%s", lastOut)
	return nil
}

func writeBootstrap(t *testing.T, b bootstrap) string {
	t.Helper()
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// plainClient never reuses connections across tests and bounds every call.
var plainClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches http://addr+path and returns the status and body.
func get(addr, path string) (int, string, error) {
	resp, err := plainClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// bootstrap is an Envoy v3 bootstrap as JSON, so table-driven tests can
// set any field, including ones protobuf would refuse to build.
type bootstrap map[string]any

type obj = map[string]any

// newBootstrap returns one HTTP listener (port filled in by startProxy)
// whose every route goes to cluster "backend" at backendAddr.
func newBootstrap(backendAddr string) bootstrap {
	host, portStr, _ := net.SplitHostPort(backendAddr)
	port, _ := strconv.Atoi(portStr)
	hcm := obj{
		"@type":       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix": "ingress_http",
		"codec_type":  "AUTO",
		"route_config": obj{
			"name": "local",
			"virtual_hosts": []any{obj{
				"name":    "backend",
				"domains": []any{"*"},
				"routes": []any{obj{
					"match": obj{"prefix": "/"},
					"route": obj{"cluster": "backend"},
				}},
			}},
		},
		"http_filters": []any{obj{
			"name":         "envoy.filters.http.router",
			"typed_config": obj{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
		}},
	}
	return bootstrap{"static_resources": obj{
		"listeners": []any{obj{
			"name":    "http",
			"address": obj{"socket_address": obj{"address": "127.0.0.1", "port_value": 0}},
			"filter_chains": []any{obj{"filters": []any{obj{
				"name":         "envoy.filters.network.http_connection_manager",
				"typed_config": hcm,
			}}}},
		}},
		"clusters": []any{obj{
			"name":            "backend",
			"type":            "STATIC",
			"connect_timeout": "1s",
			"load_assignment": obj{
				"cluster_name": "backend",
				"endpoints": []any{obj{"lb_endpoints": []any{obj{"endpoint": obj{"address": obj{
					"socket_address": obj{"address": host, "port_value": port},
				}}}}}},
			},
		}},
	}}
}

func (b bootstrap) listener() obj {
	return b["static_resources"].(obj)["listeners"].([]any)[0].(obj)
}

func (b bootstrap) cluster() obj {
	return b["static_resources"].(obj)["clusters"].([]any)[0].(obj)
}

func (b bootstrap) hcm() obj {
	return b.listener()["filter_chains"].([]any)[0].(obj)["filters"].([]any)[0].(obj)["typed_config"].(obj)
}

func (b bootstrap) route() obj {
	vh := b.hcm()["route_config"].(obj)["virtual_hosts"].([]any)[0].(obj)
	return vh["routes"].([]any)[0].(obj)["route"].(obj)
}

func (b bootstrap) setListenerPort(port int) {
	b.listener()["address"].(obj)["socket_address"].(obj)["port_value"] = port
}

// isConnRefused reports whether a dial error is ECONNREFUSED, i.e. nothing
// listens any more (as opposed to a timeout or a reset).
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
