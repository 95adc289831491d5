// Package up runs the whole mesh on one machine (`amime up`): the control
// plane, the tutorial's demo services each with its own sidecar, and an
// ingress gateway, as separate processes it supervises. Children die with
// it (Linux's parent-death signal), Ctrl-C stops them in order, and a
// second `up` on the same data directory refuses to start.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/config"
)

// Options configure `amime up`.
type Options struct {
	DataDir string
	// Binary is the amime executable to run children with.
	Binary  string
	XDSAddr string // 127.0.0.1:15010
	// SecureXDSAddr is the control plane's TLS xDS and CA port
	// (127.0.0.1:15012): every proxy gets a join token and a workload
	// certificate, and sidecars speak mTLS to each other.
	SecureXDSAddr string
	APIAddr       string // 127.0.0.1:15014
	// ConsoleAddr serves the console (127.0.0.1:20001).
	ConsoleAddr string
	// ControlAddr serves `amime scale` (127.0.0.1:15015).
	ControlAddr string
	// Replicas per deployment ("recommendation-v2": 2); the tutorial's
	// deployments default to 1.
	Replicas map[string]int
	Out      io.Writer
	Log      *slog.Logger
}

// Deployments of the tutorial, in start order (upstreams first).
var Deployments = []Deployment{
	{Service: "recommendation", Version: "v1"},
	{Service: "recommendation", Version: "v2"},
	{Service: "preference", Version: "v1"},
	{Service: "customer", Version: "v1"},
}

// Deployment is one service version.
type Deployment struct{ Service, Version string }

// Name is service-version, e.g. recommendation-v2.
func (d Deployment) Name() string { return d.Service + "-" + d.Version }

// Mesh is a running `amime up`.
type Mesh struct {
	opts   Options
	log    *slog.Logger
	logDir string
	ctx    context.Context

	mu        sync.Mutex
	cp        *child
	gateway   *child
	instances map[string][]*instance // deployment name -> instances
	nextID    int
}

type instance struct {
	app, sidecar *child
	appAddr      string
	inboundPort  int
	proxyPort    int
	id           string
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Run starts the mesh and supervises it until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	start := time.Now()
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lock(opts.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	// Another program on one of these addresses would otherwise answer in
	// the mesh's place: a foreign server on 8080 made the first-request
	// check succeed, another control plane on the API address took our
	// configuration.
	if err := checkFree(map[string]string{
		GatewayAddr:        "the ingress gateway (Gateway istio-system/ingressgateway)",
		opts.XDSAddr:       "the control plane's xDS (--xds-addr)",
		opts.SecureXDSAddr: "the control plane's TLS xDS and CA (--secure-xds-addr)",
		opts.APIAddr:       "the control plane's API (--api-addr)",
		opts.ConsoleAddr:   "the console (--console-addr)",
		opts.ControlAddr:   "`amime scale` (--control-addr)",
	}); err != nil {
		return err
	}
	m := &Mesh{opts: opts, log: opts.Log, logDir: filepath.Join(opts.DataDir, "logs"), instances: map[string][]*instance{}, ctx: ctx}
	if err := os.MkdirAll(m.logDir, 0o755); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	defer m.stopAll()

	if err := m.startControlPlane(); err != nil {
		return err
	}
	client := apiclient.New("http://"+opts.APIAddr, "")
	if err := applyDefaultsOnce(ctx, client, opts.DataDir); err != nil {
		return fmt.Errorf("default configuration: %w", err)
	}
	if err := m.ensureCollector(ctx, client); err != nil {
		return fmt.Errorf("trace collector service entry: %w", err)
	}
	for _, d := range Deployments {
		n := opts.Replicas[d.Name()]
		if n == 0 {
			n = 1
		}
		if err := m.scale(d, n); err != nil {
			return err
		}
	}
	if err := m.startGateway(); err != nil {
		return err
	}
	ctl, err := m.serveControl()
	if err != nil {
		return err
	}
	defer ctl.Close()

	if err := waitFirstRequest(ctx, "http://"+GatewayAddr+"/", 30*time.Second); err != nil {
		return fmt.Errorf("the mesh did not answer through the gateway: %w (logs in %s)", err, m.logDir)
	}
	m.printSummary(time.Since(start))
	<-ctx.Done()
	fmt.Fprintln(opts.Out, "\nstopping the mesh…")
	return nil
}

// GatewayAddr is where the default Gateway (istio-system/ingressgateway)
// serves.
const GatewayAddr = "127.0.0.1:8080"

// checkFree fails, naming the user of each address, when one of them is
// already taken.
func checkFree(addrs map[string]string) error {
	var busy []string
	for addr, user := range addrs {
		if addr == "" { // turned off
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			busy = append(busy, fmt.Sprintf("%s, needed by %s: %v", addr, user, err))
			continue
		}
		ln.Close()
	}
	if len(busy) == 0 {
		return nil
	}
	sort.Strings(busy)
	return fmt.Errorf("address in use, stop what listens there (ss -ltnp) or pick other addresses:\n  %s", strings.Join(busy, "\n  "))
}

// lock makes sure one `up` owns a data directory.
func lock(dir string) (func(), error) {
	path := filepath.Join(dir, "up.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(f)
		f.Close()
		return nil, fmt.Errorf("amime up is already running with data dir %s (pid %s); stop it first, or use another --data-dir and ports", dir, strings.TrimSpace(string(pid)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = f.Close() }, nil
}

// spawn starts a child that dies with this process.
func (m *Mesh) spawn(name string, env []string, args ...string) (*child, error) {
	logf, err := os.OpenFile(filepath.Join(m.logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(m.opts.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Children die with `up`, even when it is killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM and waits, then SIGKILL.
func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (m *Mesh) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Callers first, so nothing calls a stopped service.
	m.gateway.stop(10 * time.Second)
	var wg sync.WaitGroup
	for _, list := range m.instances {
		for _, in := range list {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in.sidecar.stop(10 * time.Second)
				in.app.stop(5 * time.Second)
			}()
		}
	}
	wg.Wait()
	m.cp.stop(10 * time.Second)
}

func (m *Mesh) startControlPlane() error {
	meshFile, err := m.writeMeshConfigOnce()
	if err != nil {
		return err
	}
	c, err := m.spawn("control-plane", nil, "control-plane", "--data-dir", m.opts.DataDir,
		"--xds-addr", m.opts.XDSAddr, "--secure-xds-addr", m.opts.SecureXDSAddr, "--api-addr", m.opts.APIAddr,
		"--mesh-config", meshFile, "--console-addr", m.opts.ConsoleAddr, "--unhealthy-after", "5s", "--remove-after", "15s")
	if err != nil {
		return err
	}
	m.cp = c
	if err := waitHTTP(m.ctx, "http://"+m.opts.APIAddr+"/ready", 15*time.Second, c); err != nil {
		return fmt.Errorf("control plane: %w (see %s)", err, filepath.Join(m.logDir, "control-plane.log"))
	}
	return nil
}

// identity issues a join token for a service account and returns the
// proxy flags that use it: the TLS xDS port, the token and the mesh root,
// kept under <data-dir>/identity/<ns>/<sa>.
func (m *Mesh) identity(ns, sa string) ([]string, error) {
	tok, err := apiclient.New("http://"+m.opts.APIAddr, "").CreateToken(m.ctx, ns, sa, 0)
	if err != nil {
		return nil, fmt.Errorf("join token for %s/%s: %w", ns, sa, err)
	}
	dir := filepath.Join(m.opts.DataDir, "identity", ns, sa)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity dir: %w", err)
	}
	tokenFile, rootFile := filepath.Join(dir, "token"), filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(tokenFile, []byte(tok.Token), 0o600); err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	if err := os.WriteFile(rootFile, []byte(tok.RootCert), 0o644); err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	return []string{"--xds", m.opts.SecureXDSAddr, "--token-file", tokenFile, "--root-cert", rootFile, "--service-account", sa}, nil
}

func (m *Mesh) startGateway() error {
	id, err := m.identity("istio-system", "istio-ingressgateway-service-account")
	if err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	c, err := m.spawn("ingressgateway", nil, append([]string{"proxy", "--mode", "gateway",
		"--node-id", "router~127.0.0.1~ingressgateway.istio-system", "--namespace", "istio-system",
		"--labels", "istio=ingressgateway,app=istio-ingressgateway", "--instance-ip", "127.0.0.1",
		"--workload", "istio-ingressgateway", "--prometheus-addr", "127.0.0.1:" + strconv.Itoa(ports[0])}, id...)...)
	if err != nil {
		return err
	}
	m.gateway = c
	return nil
}

// scale brings a deployment to n instances.
func (m *Mesh) scale(d Deployment, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.instances[d.Name()]
	for len(list) > n {
		in := list[len(list)-1]
		list = list[:len(list)-1]
		// Sidecar first: it unregisters, so traffic moves before the app goes.
		in.sidecar.stop(10 * time.Second)
		in.app.stop(5 * time.Second)
	}
	for len(list) < n {
		in, err := m.startInstance(d)
		if err != nil {
			m.instances[d.Name()] = list
			return err
		}
		list = append(list, in)
	}
	m.instances[d.Name()] = list
	return nil
}

func (m *Mesh) startInstance(d Deployment) (*instance, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	m.nextID++
	in := &instance{appAddr: "127.0.0.1:" + strconv.Itoa(ports[0]), inboundPort: ports[1], proxyPort: ports[2],
		id: fmt.Sprintf("%s-%d", d.Name(), m.nextID)}
	name := in.id
	in.app, err = m.spawn(name, []string{"HTTP_PROXY=http://127.0.0.1:" + strconv.Itoa(in.proxyPort), "NO_PROXY="},
		"demo-service", "--service", d.Service, "--version", d.Version, "--listen", in.appAddr, "--instance-id", shortID(m.nextID))
	if err != nil {
		return nil, err
	}
	id, err := m.identity("default", d.Service)
	if err != nil {
		in.app.stop(time.Second)
		return nil, err
	}
	in.sidecar, err = m.spawn(name+"-sidecar", nil, append([]string{"proxy", "--server", "http://" + m.opts.APIAddr,
		"--node-id", "sidecar~127.0.0.1~" + name + ".default", "--namespace", "default",
		"--labels", "app=" + d.Service + ",version=" + d.Version, "--instance-ip", "127.0.0.1",
		"--inbound", fmt.Sprintf("http:HTTP:8080:%d:%d", in.inboundPort, ports[0]),
		"--http-proxy-addr", "127.0.0.1:" + strconv.Itoa(in.proxyPort),
		"--register", "--workload-name", name, "--workload", d.Name(),
		"--prometheus-addr", "127.0.0.1:" + strconv.Itoa(ports[3])}, id...)...)
	if err != nil {
		in.app.stop(time.Second)
		return nil, err
	}
	return in, nil
}

// shortID looks like the random suffix of a Kubernetes pod name, as the
// tutorial prints it.
func shortID(n int) string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	x := uint32(n)*2654435761 + 12345
	b := make([]byte, 5)
	for i := range b {
		b[i] = letters[x%uint32(len(letters))]
		x /= uint32(len(letters))
		x = x*2654435761 + uint32(i)
	}
	return string(b)
}

// Scale changes a deployment's replicas while the mesh runs.
func (m *Mesh) Scale(name string, n int) error {
	if n < 0 || n > 20 {
		return fmt.Errorf("replicas: want 0..20, got %d", n)
	}
	for _, d := range Deployments {
		if d.Name() == name {
			return m.scale(d, n)
		}
	}
	var names []string
	for _, d := range Deployments {
		names = append(names, d.Name())
	}
	return fmt.Errorf("unknown deployment %q (known: %s)", name, strings.Join(names, ", "))
}

func (m *Mesh) serveControl() (io.Closer, error) {
	ln, err := net.Listen("tcp", m.opts.ControlAddr)
	if err != nil {
		return nil, fmt.Errorf("control listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /scale", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("replicas"))
		if err == nil {
			err = m.Scale(r.URL.Query().Get("deployment"), n)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "deployment %s scaled to %d\n", r.URL.Query().Get("deployment"), n)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		m.writeStatus(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

func (m *Mesh) writeStatus(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEPLOYMENT\tINSTANCE\tAPP\tSIDECAR INBOUND\tAPP'S HTTP_PROXY")
	names := make([]string, 0, len(m.instances))
	for n := range m.instances {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, in := range m.instances[n] {
			fmt.Fprintf(tw, "%s\t%s\t%s\t127.0.0.1:%d\t127.0.0.1:%d\n", n, in.id, in.appAddr, in.inboundPort, in.proxyPort)
		}
	}
	_ = tw.Flush()
}

func (m *Mesh) printSummary(sinceStart time.Duration) {
	w := m.opts.Out
	fmt.Fprintf(w, "\namime up: the mesh is running; the first request through the gateway succeeded %.2fs after start\n\n", sinceStart.Seconds())
	fmt.Fprintf(w, "  control plane   xDS %s (TLS %s, CA), API http://%s\n", m.opts.XDSAddr, m.opts.SecureXDSAddr, m.opts.APIAddr)
	if m.opts.ConsoleAddr != "" {
		fmt.Fprintf(w, "  console         http://%s/  (service graph, traces, proxies: amime dashboard)\n", m.opts.ConsoleAddr)
	}
	fmt.Fprintf(w, "  ingress gateway http://127.0.0.1:8080  (Gateway istio-system/ingressgateway → customer)\n")
	fmt.Fprintf(w, "  data            %s (config survives restarts; logs in %s)\n\n", m.opts.DataDir, m.logDir)
	m.writeStatus(w)
	fmt.Fprintf(w, `
Try:
  curl http://127.0.0.1:8080/
  amime get serviceentries
  amime scale recommendation-v2 --replicas 2
  amime apply -f examples/tutorial/destination-rule-recommendation-v1-v2.yaml
  (each file in examples/tutorial/ is one step; see docs/getting-started.md)

Ctrl-C stops everything.
`)
}

// applyDefaultsOnce applies the defaults on the first start of a data
// directory only: what the user deleted later (say the catch-all
// customer-ingress) stays deleted across restarts.
func applyDefaultsOnce(ctx context.Context, c *apiclient.Client, dataDir string) error {
	marker := filepath.Join(dataDir, "up-defaults-applied")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := applyDefaults(ctx, c); err != nil {
		return err
	}
	return os.WriteFile(marker, []byte("the default configuration of `amime up` was applied once; delete this file to apply it again\n"), 0o644)
}

// applyDefaults creates the default objects that do not exist yet.
func applyDefaults(ctx context.Context, c *apiclient.Client) error {
	return applyMissing(ctx, c, defaultConfig)
}

// writeMeshConfigOnce writes <data-dir>/mesh.yaml unless it exists (the
// user's edits survive restarts) and returns its path.
func (m *Mesh) writeMeshConfigOnce() (string, error) {
	path := filepath.Join(m.opts.DataDir, "mesh.yaml")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	_, port, err := net.SplitHostPort(m.opts.APIAddr)
	if err != nil {
		return "", fmt.Errorf("--api-addr: %w", err)
	}
	p, _ := strconv.Atoi(port)
	if err := os.WriteFile(path, []byte(fmt.Sprintf(meshConfig, p)), 0o644); err != nil {
		return "", fmt.Errorf("mesh config: %w", err)
	}
	return path, nil
}

// ensureCollector registers the built-in trace collector (every start:
// it follows --api-addr).
func (m *Mesh) ensureCollector(ctx context.Context, c *apiclient.Client) error {
	host, port, err := net.SplitHostPort(m.opts.APIAddr)
	if err != nil {
		return fmt.Errorf("--api-addr: %w", err)
	}
	p, _ := strconv.Atoi(port)
	objs, err := config.Decode([]byte(fmt.Sprintf(collectorConfig, p, host)))
	if err != nil {
		return err
	}
	doc, err := config.Encode(objs[0], "yaml")
	if err != nil {
		return err
	}
	_, err = c.Apply(ctx, doc, objs[0].Meta.Namespace, false)
	return err
}

// applyMissing creates the objects of doc that do not exist yet.
func applyMissing(ctx context.Context, c *apiclient.Client, doc string) error {
	objs, err := config.Decode([]byte(doc))
	if err != nil {
		return err
	}
	for _, o := range objs {
		k, _ := config.LookupKind(o.Kind)
		if _, err := c.Get(ctx, k, o.Meta.Namespace, o.Meta.Name); err == nil {
			continue
		}
		doc, err := config.Encode(o, "yaml")
		if err != nil {
			return err
		}
		if _, err := c.Apply(ctx, doc, o.Meta.Namespace, false); err != nil {
			return err
		}
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// waitHTTP polls url until it answers 200, the child exits, or the time
// runs out.
func waitHTTP(ctx context.Context, url string, d time.Duration, c *child) error {
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("exited: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("not ready after " + d.String())
		}
	}
}

// waitFirstRequest polls until a request succeeds end to end.
func waitFirstRequest(ctx context.Context, url string, d time.Duration) error {
	start := time.Now()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Since(start) < d {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	return fmt.Errorf("no success within %v; last answer: %s", d, last)
}
