package e2e

// Harness for the control-plane tests: a control plane, backend apps,
// registered workload sidecars, a client sidecar used as HTTP_PROXY, the
// CLI, and a request loop that records every request it makes. Everything
// runs as real processes on loopback; startProc (harness_test.go) kills
// and reaps them when the test ends.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cpOpts tunes startControlPlane.
type cpOpts struct {
	unhealthyAfter, removeAfter time.Duration // 0 keeps the defaults
	// secure serves the TLS xDS port and CA (Secure).
	secure bool
}

// controlPlane is a running `amime control-plane`.
type controlPlane struct {
	*proc
	XDS, API, DataDir string
	Secure            string // TLS xDS port, with cpOpts.secure
	args              []string
}

// startControlPlane starts a control plane on free ports with its own
// data dir and waits until its API answers /ready.
func startControlPlane(t *testing.T, o cpOpts) *controlPlane {
	t.Helper()
	dataDir := t.TempDir()
	var lastOut string
	// Only a port taken between freePort and bind is retried.
	for attempt := 0; attempt < 3; attempt++ {
		c := &controlPlane{
			XDS:     net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			API:     net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
			DataDir: dataDir,
		}
		c.args = []string{"control-plane", "--data-dir", dataDir, "--xds-addr", c.XDS, "--api-addr", c.API, "--console-addr", "",
			"--debounce", "50ms", "--secure-xds-addr", ""}
		if o.secure {
			c.Secure = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
			c.args[len(c.args)-1] = c.Secure
		}
		if o.unhealthyAfter > 0 {
			c.args = append(c.args, "--unhealthy-after", o.unhealthyAfter.String())
		}
		if o.removeAfter > 0 {
			c.args = append(c.args, "--remove-after", o.removeAfter.String())
		}
		c.start(t)
		if err := c.waitReady(); err == nil {
			return c
		}
		lastOut = c.stderr.String()
		if c.exited() && strings.Contains(lastOut, "address already in use") {
			continue
		}
		t.Fatalf("control plane not ready within 15s (exited=%v); its output is logged below", c.exited())
	}
	t.Fatalf("control plane could not bind its ports in 3 attempts:\n%s", lastOut)
	return nil
}

func (c *controlPlane) start(t *testing.T) {
	t.Helper()
	c.proc = startProc(t, "control-plane", amimeBin, c.args...)
}

func (c *controlPlane) waitReady() error {
	return eventually(15*time.Second, func() error {
		if c.exited() {
			return nil // reported by the caller
		}
		code, _, err := get(c.API, "/ready")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/ready: %d", code)
		}
		return err
	})
}

// kill9 kills the control plane with SIGKILL (no chance to flush or say
// goodbye to proxies) and reaps it.
func (c *controlPlane) kill9(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 control plane: %v", err)
	}
	if _, ok := c.waitExit(5 * time.Second); !ok {
		t.Fatal("control plane still running 5s after SIGKILL")
	}
}

// restart starts the control plane again with the same data dir and ports.
func (c *controlPlane) restart(t *testing.T) {
	t.Helper()
	c.start(t)
	if err := c.waitReady(); err != nil || c.exited() {
		t.Fatalf("restarted control plane not ready (exited=%v): %v", c.exited(), err)
	}
}

// cliResult is one CLI run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs `amime ARGS --server API`, bounded by 20s.
func (c *controlPlane) cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, amimeBin, append(args, "--server", "http://"+c.API)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("amime %s did not finish within 20s", strings.Join(args, " "))
	}
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("amime %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (c *controlPlane) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	r := c.cli(t, args...)
	if r.code != 0 {
		t.Fatalf("amime %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// applyYAML writes doc to a file and runs `amime apply -f` on it.
func (c *controlPlane) applyYAML(t *testing.T, doc string) cliResult {
	t.Helper()
	return c.cli(t, "apply", "-f", writeFile(t, "apply.yaml", doc))
}

// mustApply applies doc and checks the CLI's per-object report.
func (c *controlPlane) mustApply(t *testing.T, doc string, wantLines ...string) {
	t.Helper()
	r := c.applyYAML(t, doc)
	if r.code != 0 {
		t.Fatalf("apply: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	for _, l := range wantLines {
		if !slices.Contains(strings.Split(r.stdout, "\n"), l) {
			t.Fatalf("apply printed %q, want a line %q", r.stdout, l)
		}
	}
}

// proxyStatusRow is one row of `amime proxy-status`.
type proxyStatusRow struct {
	ID                 string
	CDS, LDS, EDS, RDS string
	Version            string
}

// proxyStatus parses the proxy-status table. Cells are cut at the
// header's column offsets: the CLUSTER column is empty outside Kubernetes,
// and a cell may be "NOT SENT" or empty.
func (c *controlPlane) proxyStatus(t *testing.T) map[string]proxyStatusRow {
	t.Helper()
	out := c.mustCLI(t, "proxy-status")
	lines := strings.Split(out, "\n")
	header := lines[0]
	cols := []string{"NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "VERSION"}
	at := make([]int, len(cols))
	for i, name := range cols {
		if at[i] = strings.Index(header, name); at[i] < 0 || (i > 0 && at[i] <= at[i-1]) {
			t.Fatalf("proxy-status header %q: no column %s", header, name)
		}
	}
	rows := map[string]proxyStatusRow{}
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			break // NACK details follow a blank line
		}
		cell := func(i int) string {
			end := len(l)
			if i+1 < len(at) {
				end = min(at[i+1], len(l))
			}
			if at[i] >= end {
				return ""
			}
			return strings.TrimSpace(l[at[i]:end])
		}
		r := proxyStatusRow{ID: cell(0), CDS: cell(2), LDS: cell(3), EDS: cell(4), RDS: cell(5), Version: cell(6)}
		rows[r.ID] = r
	}
	return rows
}

// synced says why a proxy is not in sync, or nil. A type the proxy never
// subscribed to (RDS for a sidecar with only inbound, inline routes) is
// NOT SENT, as istioctl shows it; every type it has must be SYNCED.
func (r proxyStatusRow) synced(needRDS bool) error {
	for typ, v := range map[string]string{"CDS": r.CDS, "LDS": r.LDS, "EDS": r.EDS, "RDS": r.RDS} {
		if v == "SYNCED" || (typ == "RDS" && !needRDS && v == "NOT SENT") {
			continue
		}
		return fmt.Errorf("%s %s is %s", r.ID, typ, v)
	}
	return nil
}

// waitSynced waits until proxy-status lists every id as synced.
func (c *controlPlane) waitSynced(t *testing.T, d time.Duration, ids map[string]bool) map[string]proxyStatusRow {
	t.Helper()
	var rows map[string]proxyStatusRow
	if err := eventually(d, func() error {
		rows = c.proxyStatus(t)
		for id, needRDS := range ids {
			r, ok := rows[id]
			if !ok {
				return fmt.Errorf("%s not listed", id)
			}
			if err := r.synced(needRDS); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("proxy-status within %v: %v\n%s", d, err, c.mustCLI(t, "proxy-status"))
	}
	return rows
}

// appReply is what a backend app answers: who it is and what it saw.
type appReply struct {
	Name    string            `json:"name"`
	Version string            `json:"version"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Headers map[string]string `json:"headers"`
}

// startApp runs a backend application that answers every request with its
// name and version and echoes the path, host and headers.
func startApp(t *testing.T, name, version string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := map[string]string{}
		for k := range r.Header {
			h[strings.ToLower(k)] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(appReply{Name: name, Version: version, Path: r.URL.RequestURI(), Host: r.Host, Headers: h})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// sidecar is a running `amime proxy` connected to the control plane.
type sidecar struct {
	*proc
	ID     string // xDS node id
	Name   string // WorkloadEntry name (workloads only)
	Admin  string
	Listen string // inbound listener (workloads) or HTTP_PROXY listener (client)
}

// startWorkload starts a registered sidecar for app=reviews,version=version
// in front of app, named name, and waits until it is ready and its
// WorkloadEntry exists.
func (c *controlPlane) startWorkload(t *testing.T, name, version string, app *httptest.Server, extra ...string) *sidecar {
	t.Helper()
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())
	s := &sidecar{
		ID:     "sidecar~127.0.0.1~" + name + ".default",
		Name:   name,
		Admin:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
	}
	_, listenPort, _ := net.SplitHostPort(s.Listen)
	args := []string{"proxy", "--xds", c.XDS, "--server", "http://" + c.API,
		"--node-id", s.ID, "--labels", "app=reviews,version=" + version,
		"--inbound", "http:HTTP:9080:" + listenPort + ":" + appPort,
		"--register", "--workload-name", name, "--instance-ip", "127.0.0.1",
		"--admin-addr", s.Admin, "--drain-duration", "1s"}
	// Later flags win: extra may replace --xds, for instance.
	s.proc = startProc(t, name, amimeBin, append(args, extra...)...)
	s.waitLive(t)
	if err := eventually(10*time.Second, func() error {
		if r := c.cli(t, "get", "workloadentries", name); r.code != 0 {
			return errors.New(strings.TrimSpace(r.stderr))
		}
		return nil
	}); err != nil {
		t.Fatalf("%s never registered: %v", name, err)
	}
	return s
}

// startClient starts a sidecar without a workload whose HTTP_PROXY
// listener the tests send requests to.
func (c *controlPlane) startClient(t *testing.T, extra ...string) *sidecar {
	t.Helper()
	s := &sidecar{
		ID:     "sidecar~127.0.0.1~client.default",
		Admin:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
	}
	args := []string{"proxy", "--xds", c.XDS, "--server", "http://" + c.API,
		"--node-id", s.ID, "--http-proxy-addr", s.Listen, "--admin-addr", s.Admin}
	s.proc = startProc(t, "client", amimeBin, append(args, extra...)...)
	s.waitLive(t)
	return s
}

// waitLive waits for the proxy's admin /ready (LIVE once its first xDS
// configuration is in place).
func (s *sidecar) waitLive(t *testing.T) {
	t.Helper()
	if err := eventually(15*time.Second, func() error {
		if s.exited() {
			return nil
		}
		code, body, err := get(s.Admin, "/ready")
		if err == nil && (code != http.StatusOK || strings.TrimSpace(body) != "LIVE") {
			err = fmt.Errorf("/ready: %d %q", code, body)
		}
		return err
	}); err != nil || s.exited() {
		t.Fatalf("%s not ready within 15s (exited=%v): %v", s.name, s.exited(), err)
	}
}

// meshClient sends requests through a client sidecar as its HTTP_PROXY,
// keeping connections alive as applications do.
func meshClient(proxyAddr string) *http.Client {
	u := &url.URL{Scheme: "http", Host: proxyAddr}
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u), MaxIdleConnsPerHost: 4}}
}

// call makes one request through the mesh; non-2xx is an error.
func call(c *http.Client, target string) (appReply, error) {
	var r appReply
	resp, err := c.Get(target)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// The body of a proxy's local reply says why ("no healthy upstream").
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return r, fmt.Errorf("%s: status %d %q", target, resp.StatusCode, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("%s: body: %w", target, err)
	}
	return r, nil
}

// waitVersions sends requests until every version in want has answered.
func waitVersions(t *testing.T, c *http.Client, target string, d time.Duration, want ...string) {
	t.Helper()
	waitAnswers(t, c, target, d, func(r appReply) string { return r.Version }, want...)
}

// waitAnswers sends requests until key(reply) has taken every value in want.
func waitAnswers(t *testing.T, c *http.Client, target string, d time.Duration, key func(appReply) string, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	var last error
	if err := eventually(d, func() error {
		r, err := call(c, target)
		if err != nil {
			last = err
			return err
		}
		seen[key(r)] = true
		for _, v := range want {
			if !seen[v] {
				return fmt.Errorf("seen %v, want %v", seen, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%s within %v: %v (last request error: %v)", target, d, err, last)
	}
}

// waitOnly sends requests until n in a row answer from version.
func waitOnly(t *testing.T, c *http.Client, target string, d time.Duration, version string, n int) {
	t.Helper()
	run := 0
	if err := eventually(d, func() error {
		r, err := call(c, target)
		if err != nil || r.Version != version {
			run = 0
			return fmt.Errorf("answer %q, %v", r.Version, err)
		}
		if run++; run < n {
			return fmt.Errorf("%d in a row", run)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: not %d answers in a row from %s within %v: %v", target, n, version, d, err)
	}
}

// sample is one request of a trafficLoop.
type sample struct {
	start         time.Time
	name, version string
	err           error
}

// trafficLoop keeps requests flowing through the mesh and records each.
type trafficLoop struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startTraffic runs workers sequential request loops against target until
// the returned loop is stopped (at the latest when the test ends, before
// the processes are killed: cleanups run last-in first-out).
func startTraffic(t *testing.T, proxyAddr, target string, workers int) *trafficLoop {
	t.Helper()
	l := &trafficLoop{stop: make(chan struct{})}
	for range workers {
		c := meshClient(proxyAddr)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer c.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				r, err := call(c, target)
				l.mu.Lock()
				l.samples = append(l.samples, sample{start: start, name: r.Name, version: r.Version, err: err})
				l.mu.Unlock()
				// A few hundred requests a second per worker is plenty to
				// see a change within milliseconds on two shared cores.
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the loop and waits for in-flight requests; idempotent.
func (l *trafficLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// since returns the requests started at or after t0, in start order.
func (l *trafficLoop) since(t0 time.Time) []sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sample
	for _, s := range l.samples {
		if !s.start.Before(t0) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b sample) int { return a.start.Compare(b.start) })
	return out
}

func (l *trafficLoop) all() []sample { return l.since(time.Time{}) }

// failures returns the failed requests and a short description of them.
func failures(ss []sample) (int, string) {
	var n int
	var b strings.Builder
	for _, s := range ss {
		if s.err != nil {
			n++
			if n <= 5 {
				fmt.Fprintf(&b, "\n  %s: %v", s.start.Format("15:04:05.000"), s.err)
			}
		}
	}
	return n, b.String()
}

// convergence waits until window has passed since t0 (plus settle, to see
// requests after it), then returns how long after t0 the requests started
// to match for good: the start of the first request after the last one
// that did not match. Requests started before t0 are ignored.
func (l *trafficLoop) convergence(t *testing.T, t0 time.Time, window, settle time.Duration, match func(sample) bool) time.Duration {
	t.Helper()
	time.Sleep(time.Until(t0.Add(window + settle)))
	ss := l.since(t0)
	if len(ss) == 0 {
		t.Fatalf("no request started in the %v after the change", window+settle)
	}
	firstGood := 0
	for i, s := range ss {
		if !match(s) {
			firstGood = i + 1
		}
	}
	if firstGood == len(ss) {
		t.Fatalf("no request matched in the %v after the change (last: %q, %v)", window+settle, ss[len(ss)-1].version, ss[len(ss)-1].err)
	}
	return ss[firstGood].start.Sub(t0)
}

// writeFile writes data into the test's temp dir and returns the path.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// countJSONObjects counts the objects of `amime get -o json` (one JSON
// document per object) whose name has prefix.
func countJSONObjects(t *testing.T, out, prefix string) int {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	n := 0
	for {
		var o struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return n
			}
			t.Fatalf("get -o json: %v", err)
		}
		if strings.HasPrefix(o.Metadata.Name, prefix) {
			n++
		}
	}
}

// reviewsServiceEntry is the reviews service outside Kubernetes: its
// instances are the WorkloadEntries with app=reviews.
const reviewsServiceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: reviews
`

const reviewsDestinationRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

// reviewsVS routes all reviews traffic with the given weights for v1 and v2.
func reviewsVS(w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: %d
    - destination: {host: reviews, subset: v2}
      weight: %d
`, w1, w2)
}

// reviewsMesh is the common setup: a control plane with the reviews
// service, v1 and v2 workloads registered behind their sidecars, and a
// client sidecar through which both versions answer.
type reviewsMesh struct {
	cp      *controlPlane
	v1, v2  *sidecar
	client  *sidecar
	httpc   *http.Client
	reviews string // the URL applications call
}

func startReviewsMesh(t *testing.T, o cpOpts) *reviewsMesh {
	t.Helper()
	m := &reviewsMesh{cp: startControlPlane(t, o), reviews: "http://reviews:9080/reviews/1"}
	m.cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	m.v1 = m.cp.startWorkload(t, "reviews-v1", "v1", startApp(t, "reviews-v1", "v1"))
	m.v2 = m.cp.startWorkload(t, "reviews-v2", "v2", startApp(t, "reviews-v2", "v2"))
	m.client = m.cp.startClient(t)
	m.httpc = meshClient(m.client.Listen)
	t.Cleanup(m.httpc.CloseIdleConnections)
	waitVersions(t, m.httpc, m.reviews, 10*time.Second, "v1", "v2")
	return m
}

// allProxies is the proxy-status expectation for a reviewsMesh: the client
// has an RDS route (http_proxy), the workloads only inline inbound routes.
func (m *reviewsMesh) allProxies() map[string]bool {
	return map[string]bool{m.client.ID: true, m.v1.ID: false, m.v2.ID: false}
}

// endpoints returns the hosts of cluster in the proxy's EDS as `amime
// proxy-config endpoints` reports them: address -> health status, "" for
// HEALTHY.
func (c *controlPlane) endpoints(t *testing.T, proxyID, cluster string) map[string]string {
	t.Helper()
	var dump struct {
		EDS []struct {
			ClusterName string `json:"cluster_name"`
			Endpoints   []struct {
				LbEndpoints []struct {
					Endpoint struct {
						Address struct {
							SocketAddress struct {
								Address   string `json:"address"`
								PortValue int    `json:"port_value"`
							} `json:"socket_address"`
						} `json:"address"`
					} `json:"endpoint"`
					HealthStatus string `json:"health_status"`
				} `json:"lb_endpoints"`
			} `json:"endpoints"`
		}
	}
	out := c.mustCLI(t, "proxy-config", "endpoints", proxyID, "-o", "json")
	if err := json.Unmarshal([]byte(out), &dump); err != nil {
		t.Fatalf("proxy-config endpoints -o json: %v\n%s", err, out)
	}
	hosts := map[string]string{}
	for _, cla := range dump.EDS {
		if cla.ClusterName != cluster {
			continue
		}
		for _, le := range cla.Endpoints {
			for _, lb := range le.LbEndpoints {
				sa := lb.Endpoint.Address.SocketAddress
				h := lb.HealthStatus
				if h == "HEALTHY" {
					h = ""
				}
				hosts[net.JoinHostPort(sa.Address, strconv.Itoa(sa.PortValue))] = h
			}
		}
	}
	return hosts
}

// adminHealth returns the proxy's own view of a host of a cluster (its
// admin /clusters health_flags), "" if it does not have the host.
func (s *sidecar) adminHealth(t *testing.T, cluster, addr string) string {
	t.Helper()
	code, body, err := get(s.Admin, "/clusters")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s admin /clusters: %d %v", s.name, code, err)
	}
	prefix := cluster + "::" + addr + "::health_flags::"
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	return ""
}

// connCounter listens where a dead sidecar listened and records when
// anything connects: a host marked unhealthy must get no connections.
type connCounter struct {
	mu    sync.Mutex
	times []time.Time
}

func countConns(t *testing.T, addr string) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the dead sidecar's %s: %v", addr, err)
	}
	c := &connCounter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.times = append(c.times, time.Now())
			c.mu.Unlock()
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return c
}

// after returns how many connections arrived after t0.
func (c *connCounter) after(t0 time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, at := range c.times {
		if at.After(t0) {
			n++
		}
	}
	return n
}

// xdsUpdates returns the proxy's count of accepted xDS updates, by type
// (its admin /stats): they move only when the proxy receives new config.
func (s *sidecar) xdsUpdates(t *testing.T) map[string]string {
	t.Helper()
	code, body, err := get(s.Admin, "/stats")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s admin /stats: %d %v", s.name, code, err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && strings.HasSuffix(k, ".update_success") {
			out[k] = v
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s admin /stats has no *.update_success counters:\n%s", s.name, body)
	}
	return out
}

// observed brackets when a polled condition first held, relative to t0:
// after notBefore (the start of the last check that saw it false) and by
// `by` (the end of the first check that saw it true). Bounds checked
// against the bracket do not depend on how slow the polling is.
type observed struct {
	notBefore, by time.Duration
	seen          bool
}

func (o *observed) check(t0 time.Time, cond func() bool) {
	if o.seen {
		return
	}
	start := time.Since(t0)
	if cond() {
		o.seen, o.by = true, time.Since(t0)
	} else {
		o.notBefore = start
	}
}

func (o observed) String() string {
	if !o.seen {
		return fmt.Sprintf("not after %v", o.notBefore.Round(time.Millisecond))
	}
	return fmt.Sprintf("in (%v, %v]", o.notBefore.Round(time.Millisecond), o.by.Round(time.Millisecond))
}

// within fails the test if the condition surely first held before lo or
// after hi.
func (o observed) within(t *testing.T, what string, lo, hi time.Duration) {
	t.Helper()
	if o.by < lo || o.notBefore > hi {
		t.Errorf("%s %v after the change, want between %v and %v", what, o, lo.Round(time.Millisecond), hi.Round(time.Millisecond))
	}
}

// identity returns the proxy flags of a workload identity: a join token for
// service account sa (namespace default) and the mesh root, fetched with
// `amime token create --out-dir`, and the TLS xDS port.
func (c *controlPlane) identity(t *testing.T, sa string) []string {
	t.Helper()
	dir := t.TempDir()
	c.mustCLI(t, "token", "create", "--sa", sa, "--out-dir", dir)
	return []string{"--xds", c.Secure, "--token-file", filepath.Join(dir, "token"),
		"--root-cert", filepath.Join(dir, "root-cert.pem"), "--service-account", sa}
}
