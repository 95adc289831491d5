package e2e

import (
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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// upGateway is where `amime up`'s ingress gateway listens: the default
// Gateway resource fixes it, so these tests cannot pick another port and
// must run one `up` at a time.
const upGateway = "127.0.0.1:8080"

// upChildren is the process count of a default `up`: control plane,
// ingress gateway, and an app plus its sidecar for each of the four
// deployments.
const upChildren = 10

// safariUA is a real Safari user agent; curlUA is what curl sends.
const (
	safariUA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
	curlUA   = "curl/8.5.0"
)

// upMesh is one running `amime up`.
type upMesh struct {
	*proc
	dataDir, xds, api, control string
	console                    string // the console's address
	client                     *http.Client
	// firstRequest is the time to first request that `up` printed.
	firstRequest time.Duration
}

// upReply is the tutorial's answer, "customer => preference =>
// recommendation v1 from 'abcde': 7".
var upReply = regexp.MustCompile(`^customer => preference => recommendation (v\d) from '([^']+)': \d+`)

var upFirstRequest = regexp.MustCompile(`first request through the gateway succeeded ([0-9.]+)s after start`)

// upTracked holds every child PID a test saw, so cleanup can kill what
// `up` left behind whatever failed.
type upTracked struct {
	mu   sync.Mutex
	pids map[int]string // pid -> cmdline when seen
}

func (u *upTracked) add(procs map[int]string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for pid, cmd := range procs {
		u.pids[pid] = cmd
	}
}

// newUpTracked registers, before any `up` starts, the last cleanup: it
// runs after startProc's (which kills `up`) and SIGKILLs surviving
// children, so a failed test leaves no mesh behind to break the next one.
func newUpTracked(t *testing.T) *upTracked {
	u := &upTracked{pids: map[int]string{}}
	t.Cleanup(func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		// `up` is gone by now; its children get their parent-death
		// signal at that moment and need a little time to exit.
		_ = eventually(5*time.Second, func() error {
			for pid, cmd := range u.pids {
				if procAlive(pid, cmd) {
					return errors.New("alive")
				}
			}
			return nil
		})
		for pid, cmd := range u.pids {
			if procAlive(pid, cmd) {
				t.Errorf("child pid %d (%s) outlived `up`; killing it", pid, cmd)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return u
}

// requireGatewayPortFree fails clearly when something holds 8080. A
// previous test's gateway may still be draining, hence the short wait.
func requireGatewayPortFree(t *testing.T) {
	t.Helper()
	err := eventually(10*time.Second, func() error {
		ln, err := net.Listen("tcp", upGateway)
		if err != nil {
			return err
		}
		return ln.Close()
	})
	if err != nil {
		t.Fatalf("%s is taken (%v): `amime up`'s ingress gateway needs it (Gateway istio-system/ingressgateway); stop what listens there (ss -ltnp 'sport = :8080') and rerun", upGateway, err)
	}
}

// startUp runs `amime up` on free ports and waits for its first
// successful request through the gateway, polled by the test itself.
func startUp(t *testing.T, dataDir string, xds, api, control string) *upMesh {
	t.Helper()
	m := &upMesh{dataDir: dataDir, xds: xds, api: api, control: control}
	m.console = freeAddr(t)
	m.proc = startProc(t, "amime up", amimeBin, "up", "--data-dir", dataDir, "--xds-addr", xds, "--api-addr", api, "--control-addr", control,
		"--secure-xds-addr", freeAddr(t), "--console-addr", m.console)
	// A new transport per mesh: keep-alive connections to a previous
	// gateway are dead.
	m.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(m.client.CloseIdleConnections)
	err := eventually(40*time.Second, func() error {
		if m.exited() {
			return nil
		}
		_, body, err := m.get("", "/", "")
		if err != nil {
			return err
		}
		if !upReply.MatchString(body) {
			return fmt.Errorf("answer %q", body)
		}
		return nil
	})
	if m.exited() {
		t.Fatalf("amime up exited (code %d) before serving:\n%s", m.cmd.ProcessState.ExitCode(), m.stderr.String())
	}
	if err != nil {
		t.Fatalf("no tutorial answer through %s within 40s: %v", upGateway, err)
	}
	// `up` prints its summary once its own first request succeeded, which
	// may come just after ours.
	if err := eventually(10*time.Second, func() error {
		if upFirstRequest.FindStringSubmatch(m.stderr.String()) == nil {
			return errors.New("no time to first request in the output")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, m.stderr.String())
	}
	sec, _ := strconv.ParseFloat(upFirstRequest.FindStringSubmatch(m.stderr.String())[1], 64)
	m.firstRequest = time.Duration(sec * float64(time.Second))
	t.Logf("amime up: first request after %v (as printed)", m.firstRequest)
	return m
}

// get sends GET path through the gateway with an optional Host and
// User-Agent, and returns status and body.
func (m *upMesh) get(host, path, ua string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+upGateway+path, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// version sends one tutorial request and returns the recommendation
// version and instance that answered.
func (m *upMesh) version(ua string) (string, string, error) {
	code, body, err := m.get("", "/", ua)
	if err != nil {
		return "", "", err
	}
	sm := upReply.FindStringSubmatch(body)
	if code != http.StatusOK || sm == nil {
		return "", "", fmt.Errorf("%d %q", code, body)
	}
	return sm[1], sm[2], nil
}

// count sends n requests and counts answers by version and by instance;
// any failure fails the test.
func (m *upMesh) count(t *testing.T, n int, ua string) (byVersion, byInstance map[string]int) {
	t.Helper()
	byVersion, byInstance = map[string]int{}, map[string]int{}
	for i := 0; i < n; i++ {
		v, inst, err := m.version(ua)
		if err != nil {
			t.Fatalf("request %d of %d: %v", i+1, n, err)
		}
		byVersion[v]++
		byInstance[v+"/"+inst]++
	}
	return byVersion, byInstance
}

// waitRun polls until n answers in a row satisfy ok: the sign that a
// change reached the proxies, chosen so the old config makes such a run
// improbable.
func (m *upMesh) waitRun(t *testing.T, what string, n int, ok func() (bool, error)) {
	t.Helper()
	run := 0
	var last error
	deadline := time.Now().Add(15 * time.Second)
	for run < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen %d times in a row within 15s (last error: %v)", what, n, last)
		}
		good, err := ok()
		if err != nil {
			last = err
		}
		if good {
			run++
		} else {
			run = 0
		}
	}
}

// cli runs an amime subcommand against this mesh.
func (m *upMesh) cli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch args[0] {
	case "scale":
		args = append(args, "--control-addr", m.control)
	default:
		args = append(args, "--server", "http://"+m.api)
	}
	out, err := exec.CommandContext(ctx, amimeBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("amime %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// apply applies one file of examples/tutorial.
func (m *upMesh) apply(t *testing.T, example string) {
	t.Helper()
	out := m.cli(t, "apply", "-f", tutorialFile(t, example))
	t.Logf("apply %s: %s", example, strings.TrimSpace(out))
}

func tutorialFile(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", "tutorial", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// acked is nil once the control plane serves proxy routes containing
// want and the proxy has ACKed them.
func (m *upMesh) acked(proxy, want string) error {
	_, dump, err := upHTTP(http.MethodGet, "http://"+m.api+"/debug/config_dump?type=RDS&proxy="+proxy)
	if err != nil {
		return err
	}
	if !strings.Contains(dump, want) {
		return fmt.Errorf("%s: no %s in the routes served", proxy, want)
	}
	_, body, err := upHTTP(http.MethodGet, "http://"+m.api+"/debug/proxy-status")
	if err != nil {
		return err
	}
	var st []struct {
		ID    string            `json:"id"`
		Types map[string]string `json:"types"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return err
	}
	for _, p := range st {
		if p.ID == proxy && p.Types["RDS"] == "SYNCED" {
			return nil
		}
	}
	return fmt.Errorf("%s: routes not ACKed: %s", proxy, body)
}

// status reads column col (1: instance, 2: app address) of a
// deployment's rows in `up`'s status table.
func (m *upMesh) status(t *testing.T, deployment string, col int) []string {
	t.Helper()
	_, body, err := upHTTP(http.MethodGet, "http://"+m.control+"/status")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) > col && f[0] == deployment {
			out = append(out, f[col])
		}
	}
	if len(out) == 0 {
		t.Fatalf("no instance of %s in up's status:\n%s", deployment, body)
	}
	return out
}

func upHTTP(method, url string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// children lists the processes whose parent is `up`, read from /proc
// (the kernel here has no /proc/PID/task/TID/children).
func (m *upMesh) children(t *testing.T) map[int]string {
	t.Helper()
	out := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses; fields
		// after the last ')' are state, ppid, ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(m.cmd.Process.Pid) {
			continue
		}
		out[pid] = cmdline(pid)
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// procAlive: pid runs and is still the process seen (pids get reused);
// a zombie waiting for its reaper counts as gone.
func procAlive(pid int, cmd string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
		return false
	}
	return cmdline(pid) == cmd
}

// survivors names the processes that are still alive: those listed, and
// any process naming this mesh's data dir or xDS address (the control
// plane, the sidecars and the gateway), in case one escaped the list.
func (m *upMesh) survivors(listed map[int]string) []string {
	var out []string
	for pid, cmd := range listed {
		if procAlive(pid, cmd) {
			out = append(out, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || listed[pid] != "" || pid == os.Getpid() {
			continue
		}
		cmd := cmdline(pid)
		if strings.HasPrefix(cmd, amimeBin+" ") && (strings.Contains(cmd, m.dataDir) || strings.Contains(cmd, " "+m.xds)) && procAlive(pid, cmd) {
			out = append(out, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	return out
}

// stop sends SIGINT and waits for `up` to exit, as Ctrl-C does.
func (m *upMesh) stop(t *testing.T) {
	t.Helper()
	m.signal(t, syscall.SIGINT)
	code, ok := m.waitExit(30 * time.Second)
	if !ok {
		t.Fatalf("amime up still running 30s after SIGINT")
	}
	if code != 0 {
		t.Errorf("amime up exited with %d after SIGINT, want 0", code)
	}
}

// upPorts returns free xDS, API and control addresses.
// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }

func upPorts(t *testing.T) (xds, api, control string) {
	addr := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }
	return addr(), addr(), addr()
}

func upWriteFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func share(n, total int) float64 { return float64(n) / float64(total) }

// TestUpTutorial walks the tutorial through `amime up`'s gateway with the
// CLI and checks each working step statistically.
func TestUpTutorial(t *testing.T) {
	m, tracked := startTrackedUp(t)

	// Default: no VirtualService, Istio's LEAST_REQUEST over one v1 and
	// one v2 instance. 400 requests rather than 200: with this random
	// balancer ±10% over 200 fails 1 run in 200 by chance alone.
	by, _ := m.count(t, 400, "")
	if s := share(by["v1"], 400); s < 0.40 || s > 0.60 {
		t.Errorf("default balancing: v1 %d, v2 %d of 400; want v1 in 40%%..60%%", by["v1"], by["v2"])
	}

	// Scale v2 to 2: three endpoints, so ~1:2 v1:v2.
	m.cli(t, "scale", "recommendation-v2", "--replicas", "2")
	tracked.add(m.children(t))
	seenV2 := map[string]bool{}
	m.waitRun(t, "the second v2 instance answering", 1, func() (bool, error) {
		v, inst, err := m.version("")
		if v == "v2" {
			seenV2[inst] = true
		}
		return len(seenV2) == 2, err
	})
	by, inst := m.count(t, 600, "")
	if s := share(by["v1"], 600); s < 1.0/3-0.10 || s > 1.0/3+0.10 {
		t.Errorf("after scaling v2 to 2: v1 %d, v2 %d of 600 (%v); want v1 in 23%%..43%%", by["v1"], by["v2"], inst)
	}
	if len(inst) != 3 {
		t.Errorf("after scaling v2 to 2: instances %v, want 3", inst)
	}

	// Blue-green: everything to v2. 30 v2 in a row is improbable
	// ((2/3)^30) before the change arrives.
	m.apply(t, "destination-rule-recommendation-v1-v2.yaml")
	m.apply(t, "virtual-service-recommendation-v2.yaml")
	m.waitRun(t, "only v2", 30, func() (bool, error) { v, _, err := m.version(""); return v == "v2", err })
	if by, _ := m.count(t, 200, ""); by["v2"] != 200 {
		t.Errorf("virtual-service-recommendation-v2: %v of 200, want all v2", by)
	}

	// Canary 90/10; the first v1 shows the change arrived.
	m.apply(t, "virtual-service-recommendation-v1_and_v2.yaml")
	m.waitRun(t, "a v1 answer", 1, func() (bool, error) { v, _, err := m.version(""); return v == "v1", err })
	if by, _ := m.count(t, 1000, ""); share(by["v2"], 1000) < 0.05 || share(by["v2"], 1000) > 0.15 {
		t.Errorf("virtual-service-recommendation-v1_and_v2: %v of 1000, want v2 in 5%%..15%%", by)
	}

	// Header routing: Safari to v2, anything else to v1, exactly.
	m.apply(t, "virtual-service-safari-recommendation-v2.yaml")
	m.waitRun(t, "Safari on v2", 30, func() (bool, error) { v, _, err := m.version(safariUA); return v == "v2", err })
	if by, _ := m.count(t, 200, safariUA); by["v2"] != 200 {
		t.Errorf("Safari: %v of 200, want all v2", by)
	}
	if by, _ := m.count(t, 200, curlUA); by["v1"] != 200 {
		t.Errorf("curl: %v of 200, want all v1", by)
	}

	// Rewrite: /recommendation/headers reaches recommendation as
	// /headers, which echoes the request. Before the rule it is just
	// another path for recommendation's usual answer.
	if code, body, err := m.get("", "/recommendation/headers", ""); err != nil || code != 200 || !upReply.MatchString(body) {
		t.Fatalf("before the rewrite: %d %q %v, want the usual answer", code, body, err)
	}
	m.apply(t, "virtual-service-recommendation-rewrite.yaml")
	var echo struct {
		Service, Path string
		Headers       map[string][]string
	}
	m.waitRun(t, "the header echo", 1, func() (bool, error) {
		_, body, err := m.get("", "/recommendation/headers", "")
		j, found := strings.CutPrefix(body, "customer => preference => ")
		return found && strings.HasPrefix(j, "{") && json.Unmarshal([]byte(j), &echo) == nil, err
	})
	if echo.Service != "recommendation" || echo.Path != "/headers" || strings.Join(echo.Headers["X-Envoy-Original-Path"], ",") != "/recommendation/headers" {
		t.Errorf("rewrite: recommendation saw %+v; want path /headers, x-envoy-original-path /recommendation/headers", echo)
	}
	if by, _ := m.count(t, 20, ""); by["v1"]+by["v2"] != 20 {
		t.Errorf("rewrite: other paths answered %v", by)
	}

	// Timeout 1s against slow v2 instances: v2 answers become 504 after
	// ~1s, v1 answers stay 200. The rule drops the rewrite, which shows
	// when it has arrived.
	m.apply(t, "virtual-service-recommendation-timeout.yaml")
	m.waitRun(t, "the rewrite gone", 1, func() (bool, error) {
		_, body, err := m.get("", "/recommendation/headers", "")
		return upReply.MatchString(body), err
	})
	slowV2 := m.status(t, "recommendation-v2", 2)
	for _, a := range slowV2 {
		if code, body, err := upHTTP(http.MethodPost, "http://"+a+"/slow?delay=3s"); err != nil || code != 200 {
			t.Fatalf("slow %s: %d %s %v", a, code, body, err)
		}
	}
	m.checkTimeout(t)
	for _, a := range slowV2 {
		if code, body, err := upHTTP(http.MethodPost, "http://"+a+"/slow?delay=0s"); err != nil || code != 200 {
			t.Fatalf("unslow %s: %d %s %v", a, code, body, err)
		}
	}

	// Ingress by host. With up's catch-all customer-ingress ("*") any
	// host reaches customer, as on Istio; without it only
	// istio.tutorial.com does and other hosts get 404.
	m.apply(t, "gateway-istio-tutorial.yaml")
	m.cli(t, "delete", "virtualservice", "customer-ingress")
	m.waitRun(t, "404 for other hosts", 1, func() (bool, error) {
		code, _, err := m.get("other.example.com", "/", "")
		return code == http.StatusNotFound, err
	})
	for _, host := range []string{"istio.tutorial.com", "istio.tutorial.com:8080"} {
		if code, body, err := m.get(host, "/", ""); err != nil || code != 200 || !upReply.MatchString(body) {
			t.Errorf("Host %s: %d %q %v, want customer's answer", host, code, body, err)
		}
	}
	if code, _, err := m.get("", "/", ""); err != nil || code != http.StatusNotFound {
		t.Errorf("Host %s without customer-ingress: %d %v, want 404", upGateway, code, err)
	}
	m.cli(t, "apply", "-f", upWriteFile(t, "customer-ingress.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: customer-ingress, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/ingressgateway]
  http:
  - route:
    - destination: {host: customer.default.svc.cluster.local, port: {number: 8080}}
`))
	m.waitRun(t, "other hosts back on customer", 1, func() (bool, error) {
		code, _, err := m.get("other.example.com", "/", "")
		return code == http.StatusOK, err
	})
	if code, body, err := m.get("istio.tutorial.com", "/", ""); err != nil || code != 200 || !upReply.MatchString(body) {
		t.Errorf("Host istio.tutorial.com beside the catch-all: %d %q %v", code, body, err)
	}
}

// checkTimeout sends concurrent requests while v2 takes 3s: each must be
// a fast v1 200 or a 504 after about the 1s timeout, and some must be
// 504s (all on v1 by chance is (1/3)^n unlikely).
func (m *upMesh) checkTimeout(t *testing.T) {
	t.Helper()
	const n = 12
	type res struct {
		code    int
		body    string
		elapsed time.Duration
		err     error
	}
	results := make(chan res, n)
	for range n {
		go func() {
			start := time.Now()
			code, body, err := m.get("", "/", "")
			results <- res{code, body, time.Since(start), err}
		}()
	}
	timeouts := 0
	for range n {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("timeout step: %v", r.err)
		case r.code == http.StatusGatewayTimeout:
			timeouts++
			if r.elapsed < 900*time.Millisecond || r.elapsed > 2500*time.Millisecond || !strings.Contains(r.body, "upstream request timeout") {
				t.Errorf("timeout step: 504 after %v (%q), want ~1s upstream request timeout", r.elapsed, r.body)
			}
		case r.code == http.StatusOK:
			if sm := upReply.FindStringSubmatch(r.body); sm == nil || sm[1] != "v1" || r.elapsed > 900*time.Millisecond {
				t.Errorf("timeout step: 200 %q after %v, want a fast v1", r.body, r.elapsed)
			}
		default:
			t.Errorf("timeout step: %d %q", r.code, r.body)
		}
	}
	if timeouts == 0 {
		t.Errorf("timeout step: no 504 in %d requests with v2 slow", n)
	}
}

// TestUpLifecycle checks how `up` starts and stops: a busy gateway port
// and a second `up` on the same data dir are refused clearly, SIGINT
// stops every child, configuration survives a restart, and SIGKILL of
// `up` takes the children with it.
func TestUpLifecycle(t *testing.T) {
	requireGatewayPortFree(t)
	tracked := newUpTracked(t)
	dataDir := t.TempDir()
	xds, api, control := upPorts(t)

	// Something else on 8080 would answer in the gateway's place.
	ln, err := net.Listen("tcp", upGateway)
	if err != nil {
		t.Fatal(err)
	}
	busy := startProc(t, "amime up (8080 taken)", amimeBin, "up", "--data-dir", t.TempDir(), "--xds-addr", xds, "--api-addr", api, "--control-addr", control, "--secure-xds-addr", freeAddr(t))
	code, ok := busy.waitExit(15 * time.Second)
	ln.Close()
	if !ok || code == 0 || !strings.Contains(busy.stderr.String(), upGateway) {
		t.Fatalf("up with %s taken: exited=%v code %d, output:\n%s\nwant a failure naming %s", upGateway, ok, code, busy.stderr.String(), upGateway)
	}

	m := startUp(t, dataDir, xds, api, control)
	kids := m.children(t)
	tracked.add(kids)
	if len(kids) != upChildren {
		t.Fatalf("up has %d children, want %d: %v", len(kids), upChildren, kids)
	}

	m.apply(t, "destination-rule-recommendation-v1-v2.yaml")
	m.apply(t, "virtual-service-recommendation-v2.yaml")
	m.waitRun(t, "only v2", 30, func() (bool, error) { v, _, err := m.version(""); return v == "v2", err })

	// A second `up` on the same data dir, on other ports so that only
	// the lock can stop it.
	x2, a2, c2 := upPorts(t)
	second := startProc(t, "second amime up", amimeBin, "up", "--data-dir", dataDir, "--xds-addr", x2, "--api-addr", a2, "--control-addr", c2, "--secure-xds-addr", freeAddr(t))
	code, ok = second.waitExit(15 * time.Second)
	out := second.stderr.String()
	if !ok || code == 0 || !strings.Contains(out, "already running") || !strings.Contains(out, dataDir) || !strings.Contains(out, strconv.Itoa(m.cmd.Process.Pid)) {
		t.Errorf("second up on %s: exited=%v code %d, output:\n%s\nwant a failure saying up (pid %d) already runs there", dataDir, ok, code, out, m.cmd.Process.Pid)
	}
	if v, _, err := m.version(""); err != nil || v != "v2" {
		t.Errorf("first up after the second was refused: %s %v", v, err)
	}

	// Ctrl-C: `up` waits for its children, so none may be left when it
	// has exited.
	m.stop(t)
	if s := m.survivors(kids); len(s) > 0 {
		t.Errorf("after SIGINT, still running:\n%s", strings.Join(s, "\n"))
	}
	if c, err := net.DialTimeout("tcp", upGateway, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after SIGINT", upGateway)
	}

	// Restart on the same data dir: the VirtualService applied before is
	// there from the first request on, no waiting.
	m2 := startUp(t, dataDir, xds, api, control)
	kids2 := m2.children(t)
	tracked.add(kids2)
	if by, _ := m2.count(t, 50, ""); by["v2"] != 50 {
		t.Errorf("after restart: %v of 50, want all v2 (config kept in --data-dir)", by)
	}
	if out := m2.cli(t, "get", "virtualservice", "recommendation"); !strings.Contains(out, "recommendation") {
		t.Errorf("get after restart: %q", out)
	}

	// SIGKILL: `up` cannot stop anything; the parent-death signal must.
	if len(kids2) != upChildren {
		t.Fatalf("restarted up has %d children, want %d", len(kids2), upChildren)
	}
	m2.signal(t, syscall.SIGKILL)
	if _, ok := m2.waitExit(10 * time.Second); !ok {
		t.Fatal("up survived SIGKILL")
	}
	if err := eventually(10*time.Second, func() error {
		if s := m2.survivors(kids2); len(s) > 0 {
			return errors.New(strings.Join(s, "\n"))
		}
		return nil
	}); err != nil {
		t.Errorf("10s after SIGKILL of up, still running:\n%v", err)
	}
}

// TestUpTimeoutRemoved follows the tutorial's timeout step with a route
// that has no timeout, as the walkthrough does: answers must stay 200.
// Upstream connections pooled under the 1s timeout must not carry its
// deadline into later requests (they did: instant 504s, see
// internal/proxy/hcm/forward.go forwardH1, which sets a read deadline only
// when the route has a timeout and never clears it before pool.Put).
func TestUpTimeoutRemoved(t *testing.T) {
	m, _ := startTrackedUp(t)

	m.apply(t, "virtual-service-recommendation-timeout.yaml")
	// A 504 from slow v2 shows the rule is live on preference's sidecar;
	// then 20 answers use pooled connections under it.
	v2 := m.status(t, "recommendation-v2", 2)[0]
	if code, body, err := upHTTP(http.MethodPost, "http://"+v2+"/slow?delay=3s"); err != nil || code != 200 {
		t.Fatalf("slow %s: %d %s %v", v2, code, body, err)
	}
	m.waitRun(t, "a 504 from slow v2", 1, func() (bool, error) {
		code, _, err := m.get("", "/", "")
		return code == http.StatusGatewayTimeout, err
	})
	if code, body, err := upHTTP(http.MethodPost, "http://"+v2+"/slow?delay=0s"); err != nil || code != 200 {
		t.Fatalf("unslow %s: %d %s %v", v2, code, body, err)
	}
	m.waitRun(t, "answers under the timeout rule", 20, func() (bool, error) {
		_, _, err := m.version("")
		return err == nil, err
	})

	// Requests through preference's sidecar would use up the stale
	// connections before the measurement, so the new rule's arrival is
	// read from the control plane: served to the sidecar, and ACKed.
	m.apply(t, "virtual-service-recommendation-rewrite.yaml")
	pref := "sidecar~127.0.0.1~" + m.status(t, "preference-v1", 1)[0] + ".default"
	if err := eventually(10*time.Second, func() error { return m.acked(pref, "prefix_rewrite") }); err != nil {
		t.Fatal(err)
	}
	// Deadlines of the timeout rule's requests lie at most 1s after the
	// last of them: let them pass, which is what exposes a stale one.
	time.Sleep(1200 * time.Millisecond)
	failed := map[string]int{}
	for i := 0; i < 100; i++ {
		code, body, err := m.get("", "/", "")
		if err != nil || code != http.StatusOK {
			failed[fmt.Sprintf("%d %s %v", code, body, err)]++
		}
	}
	if len(failed) > 0 {
		t.Errorf("after replacing the timeout rule by one without timeout, of 100 requests: %v", failed)
	}
}

// TestUpMutualTLS: `amime up`'s proxies hold workload certificates and
// speak mTLS to each other, so a mesh-wide STRICT PeerAuthentication
// keeps the tutorial working while plaintext to a sidecar is refused.
func TestUpMutualTLS(t *testing.T) {
	requireGatewayPortFree(t)
	xds, api, control := upPorts(t)
	m := startUp(t, t.TempDir(), xds, api, control)
	defer m.stop(t)
	// A sidecar's inbound address, as its WorkloadEntry registers it.
	var we struct {
		Spec struct {
			Address string         `json:"address"`
			Ports   map[string]int `json:"ports"`
		} `json:"spec"`
	}
	// `get -o json` prints one object per entry: the first will do.
	if err := json.NewDecoder(strings.NewReader(m.cli(t, "get", "workloadentries", "-o", "json"))).Decode(&we); err != nil || we.Spec.Ports["http"] == 0 {
		t.Fatalf("workload entries: %v", err)
	}
	inbound := net.JoinHostPort(we.Spec.Address, strconv.Itoa(we.Spec.Ports["http"]))
	if code, _, err := get(inbound, "/"); err != nil || code == 0 {
		t.Fatalf("plaintext to %s under PERMISSIVE: %d, %v", inbound, code, err)
	}
	m.apply(t, "peer-authentication-strict.yaml")
	if err := eventually(15*time.Second, func() error {
		if _, _, err := get(inbound, "/"); err == nil {
			return fmt.Errorf("plaintext to %s still answered", inbound)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m.waitRun(t, "tutorial under STRICT", 20, func() (bool, error) { _, _, err := m.version(""); return err == nil, err })
}
