// Package controlplane wires amime's control plane: the config store, the
// service registry, the translator and the xDS server, behind an HTTP API
// for the CLI and a gRPC port for proxies.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/amime-mesh/amime/internal/ca"
	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/identity"
	"github.com/amime-mesh/amime/internal/jwks"
	"github.com/amime-mesh/amime/internal/register"
	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/tracestore"
	"github.com/amime-mesh/amime/internal/xds/server"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// Options configure the control plane.
type Options struct {
	// DataDir keeps applied configuration; empty keeps it in memory only.
	DataDir string
	// XDSAddr serves ADS to proxies (Istio's 15010, plaintext).
	XDSAddr string
	// SecureXDSAddr serves ADS and the CA (Istio's certificate service)
	// over TLS to authenticated proxies (Istio's 15012); empty disables it.
	SecureXDSAddr string
	// CADir holds an operator's CA in Istio's plug-in file names; empty
	// uses (creating on first start) a self-signed root under DataDir.
	CADir string
	// CertTTL is the workload certificate lifetime when a proxy does not
	// ask for one (default 24h).
	CertTTL time.Duration
	// JWKSClient fetches RequestAuthentication key sets (nil: Go's
	// defaults; plain HTTP is allowed to loopback only).
	JWKSClient *http.Client
	// ServerNames are the DNS names of the control plane's TLS certificate
	// (default istiod.istio-system.svc, localhost); its IP addresses are
	// added.
	ServerNames []string
	// APIAddr serves the HTTP API, /metrics and /debug (Istio's 15014).
	APIAddr string
	// Token, when set, is required on the API. It must be set when APIAddr
	// is not a loopback address.
	Token string
	// ConfigDir, when set, is a directory of YAML files kept in sync into
	// the store (GitOps): objects from it are created, updated and deleted
	// as the files change; objects applied through the API are left alone.
	ConfigDir string
	// ConsoleAddr serves the console (`amime dashboard`, Kiali's 20001);
	// "" turns it off. It has no login, so it must be a loopback address.
	ConsoleAddr string
	// PrometheusURL, when set, is where the console reads metrics instead
	// of scraping the proxies.
	PrometheusURL string
	// Mesh is the mesh-wide configuration.
	Mesh translate.Mesh
	// Debounce of pushes (default 100 ms).
	Debounce time.Duration
	// Heartbeat leases of self-registered workloads: unhealthy after
	// UnhealthyAfter without a heartbeat, removed after RemoveAfter.
	UnhealthyAfter, RemoveAfter time.Duration
	Log                         *slog.Logger
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	opts   Options
	log    *slog.Logger
	store  *config.Store
	leases *registry.Leases
	xds    *server.Server
	reg    *prometheus.Registry
	// traces is the built-in trace collector (`amime up` exports to it).
	traces *tracestore.Store

	xdsLn, apiLn net.Listener
	consoleLn    net.Listener // nil when the console is off

	// Identity (nil without SecureXDSAddr).
	ca       *ca.CA
	tokens   *identity.Tokens
	secureLn net.Listener
	tmpDir   string // CA state of an in-memory control plane
	// rootSet is the ROOTCA secret for rootPEM (identity.go).
	rootMu  sync.Mutex
	rootSet *server.Set
	rootPEM []byte

	// jwks fetches RequestAuthentication key sets; jwksGen counts their
	// changes, part of the translator input's identity.
	jwks    *jwks.Resolver
	jwksGen atomic.Uint64

	mu     sync.Mutex
	cached *generation
	// views shares translation between proxies (generate.go).
	views views
}

// generation is the translator input for one store version and lease
// state: built once per push, shared by every proxy's translation.
type generation struct {
	rv       string
	health   string
	jwksGen  uint64
	input    translate.Input
	ses, wes []*config.Object // the registry's sources
}

// New opens the store and binds the listeners; Run serves.
func New(opts Options) (*ControlPlane, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.UnhealthyAfter == 0 {
		opts.UnhealthyAfter = 15 * time.Second
	}
	if opts.RemoveAfter == 0 {
		opts.RemoveAfter = 60 * time.Second
	}
	if err := requireTokenOffLoopback(opts.APIAddr, opts.Token); err != nil {
		return nil, err
	}
	cp := &ControlPlane{opts: opts, log: opts.Log, reg: prometheus.NewRegistry(), traces: tracestore.New(tracestore.Options{})}
	var err error
	if opts.DataDir != "" {
		cp.store, err = config.OpenFileStore(opts.DataDir)
		if err != nil {
			return nil, fmt.Errorf("open config store: %w", err)
		}
	} else {
		cp.store = config.NewStore()
	}
	cp.leases = registry.NewLeases(opts.UnhealthyAfter, opts.RemoveAfter, nil)
	cp.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cp.reg.MustRegister(cp.traces.Collectors()...)
	cp.xds = server.New(server.Options{Generator: cp, Debounce: opts.Debounce, Log: cp.log.With("component", "xds"), Registry: cp.reg})
	cp.jwks = jwks.New(jwks.Options{Client: opts.JWKSClient, OnChange: func(key string) {
		cp.jwksGen.Add(1)
		cp.log.Info("JWKS fetched or changed", "key", key)
		cp.xds.Push("jwks")
	}})
	if cp.xdsLn, err = net.Listen("tcp", opts.XDSAddr); err != nil {
		_ = cp.store.Close()
		return nil, fmt.Errorf("xds listener: %w", err)
	}
	if cp.apiLn, err = net.Listen("tcp", opts.APIAddr); err != nil {
		_ = cp.xdsLn.Close()
		_ = cp.store.Close()
		return nil, fmt.Errorf("api listener: %w", err)
	}
	if opts.ConsoleAddr != "" {
		if err := requireLoopback(opts.ConsoleAddr); err != nil {
			cp.closeListeners()
			_ = cp.store.Close()
			return nil, err
		}
		if cp.consoleLn, err = net.Listen("tcp", opts.ConsoleAddr); err != nil {
			cp.closeListeners()
			_ = cp.store.Close()
			return nil, fmt.Errorf("console listener: %w", err)
		}
	}
	if opts.SecureXDSAddr != "" {
		if err := cp.openIdentity(); err != nil {
			cp.closeListeners()
			_ = cp.store.Close()
			return nil, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) closeListeners() {
	for _, ln := range []net.Listener{cp.xdsLn, cp.apiLn, cp.secureLn, cp.consoleLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if cp.tmpDir != "" {
		_ = os.RemoveAll(cp.tmpDir)
	}
}

// requireLoopback refuses a console address beyond this machine: the
// console has no login (reach it through an SSH tunnel or a port-forward).
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--console-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--console-addr %s is not a loopback address: the console has no login; serve it on 127.0.0.1 and reach it through a tunnel", addr)
}

// requireTokenOffLoopback refuses to expose an unauthenticated API beyond
// this machine.
func requireTokenOffLoopback(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--api-addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--api-addr %s is not a loopback address: set --token so the API is not open to anyone who can reach it", addr)
}

// XDSAddr and APIAddr return the bound addresses.
func (cp *ControlPlane) XDSAddr() string { return cp.xdsLn.Addr().String() }

// APIAddr returns the bound API address.
func (cp *ControlPlane) APIAddr() string { return cp.apiLn.Addr().String() }

// Store returns the config store.
func (cp *ControlPlane) Store() *config.Store { return cp.store }

// Run serves until ctx ends.
func (cp *ControlPlane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup

	g := grpc.NewServer()
	cp.xds.Register(ctx, g)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp.xds.Run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := g.Serve(cp.xdsLn); err != nil {
			cp.log.Error("xds server", "err", err)
		}
	}()
	var secure *grpc.Server
	if cp.secureLn != nil {
		secure = cp.secureServer(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := secure.Serve(cp.secureLn); err != nil {
				cp.log.Error("secure xds server", "err", err)
			}
		}()
	}

	// Leases live in memory: after a restart every self-registered workload
	// gets a fresh grace period, so one whose proxy died meanwhile is still
	// removed, and live ones are not all expired at once.
	for _, o := range cp.store.List(config.WorkloadEntry, "") {
		if o.Meta.Annotations[register.Annotation] != "" {
			cp.leases.Heartbeat(o.Key())
		}
	}
	_, sub := cp.store.Subscribe(func(ev config.Event) {
		if ev.Type == config.Deleted && ev.Object.Kind == config.WorkloadEntry {
			cp.leases.Forget(ev.Object.Key())
		}
		cp.xds.Push("config")
	})
	defer sub.Stop()

	mux := http.NewServeMux()
	(&api{store: cp.store, token: cp.opts.Token, debug: cp.debugHandler(), leases: cp.leases, push: cp.xds.Push,
		heartbeatInterval: heartbeatInterval(cp.opts.UnhealthyAfter), tokens: cp.tokens, ca: cp.ca, proxies: cp.explainProxies}).routes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cp.reg, promhttp.HandlerOpts{}))
	// The built-in trace collector: proxies export without a token (as to
	// any collector); reading traces needs the API's.
	traces := tracestore.Handler(cp.traces)
	mux.Handle("POST /v1/traces", traces)
	mux.Handle("POST /api/v2/spans", traces)
	a := &api{token: cp.opts.Token}
	mux.HandleFunc("GET /api/traces", a.auth(traces.ServeHTTP))
	mux.HandleFunc("GET /api/traces/{id}", a.auth(traces.ServeHTTP))
	mux.HandleFunc("GET /api/services", a.auth(traces.ServeHTTP))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(cp.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cp.log.Error("api server", "err", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp.expireLeases(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		cp.jwks.Run(ctx)
	}()
	if cp.opts.ConfigDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cp.syncDir(ctx)
		}()
	}
	if cp.consoleLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cp.serveConsole(ctx)
		}()
	}
	cp.log.Info("control plane started", "xds", cp.XDSAddr(), "secure_xds", cp.SecureXDSAddr(), "api", cp.APIAddr(), "console", cp.ConsoleAddr(), "data_dir", cp.opts.DataDir)

	<-ctx.Done()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdownCtx)
	g.Stop()
	if secure != nil {
		secure.Stop()
	}
	wg.Wait()
	if cp.tmpDir != "" {
		_ = os.RemoveAll(cp.tmpDir)
	}
	return cp.store.Close()
}

// SourceAnnotation marks objects that come from --config-dir.
const SourceAnnotation = "amime.io/source"

// syncDir keeps the store in line with the files of ConfigDir. An invalid
// file keeps the last good set serving (WatchDir's contract) and is logged.
func (cp *ControlPlane) syncDir(ctx context.Context) {
	source := "dir:" + cp.opts.ConfigDir
	owned := func(o *config.Object) bool { return o.Meta.Annotations[SourceAnnotation] == source }
	err := config.WatchDir(ctx, cp.opts.ConfigDir, func(objs []*config.Object, err error) {
		if err != nil {
			cp.log.Error("config dir: keeping the last good set", "dir", cp.opts.ConfigDir, "err", err)
		}
		for _, o := range objs {
			if o.Meta.Annotations == nil {
				o.Meta.Annotations = map[string]string{}
			}
			o.Meta.Annotations[SourceAnnotation] = source
		}
		res, err := cp.store.ReplaceAll(objs, owned)
		if err != nil {
			cp.log.Error("config dir: sync refused", "dir", cp.opts.ConfigDir, "err", err)
			return
		}
		for _, r := range res {
			if r.Op != config.OpUnchanged {
				cp.log.Info("config dir", "object", r.Object.Key().String(), "op", r.Op)
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		cp.log.Error("config dir watch ended", "dir", cp.opts.ConfigDir, "err", err)
	}
}

// expireLeases turns lapsed heartbeats into health changes (a push) and
// expired self-registered workloads into deletions.
func (cp *ControlPlane) expireLeases(ctx context.Context) {
	// Wake when the next lease lapses, not on a coarse tick, so a dead
	// workload stops getting traffic at --unhealthy-after, not up to a
	// second later; the 1 s cap covers leases started meanwhile.
	t := time.NewTimer(0)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wait := time.Second
		if at, ok := cp.leases.NextChange(); ok {
			wait = min(wait, time.Until(at)+time.Millisecond)
		}
		t.Reset(wait)
		for _, k := range cp.leases.Expired() {
			if err := cp.store.Delete(k, ""); err != nil && !errors.Is(err, config.ErrNotFound) {
				cp.log.Warn("removing expired workload", "workload", k, "err", err)
				continue
			}
			cp.leases.Forget(k)
			cp.log.Info("workload removed: no heartbeat", "workload", k)
		}
		if h := cp.healthFingerprint(); h != last {
			last = h
			cp.xds.Push("health")
		}
	}
}

// healthFingerprint changes whenever a tracked workload's health does.
func (cp *ControlPlane) healthFingerprint() string {
	var b []byte
	for _, o := range cp.store.List(config.WorkloadEntry, "") {
		if cp.leases.Healthy(o.Key()) {
			b = append(b, '1')
		} else {
			b = append(b, '0')
		}
	}
	return string(b)
}

// input returns the translator input for the current store and health,
// built once and shared by every proxy of a push.
func (cp *ControlPlane) input() translate.Input {
	snap := cp.store.Snapshot()
	health := cp.healthFingerprint()
	jwksGen := cp.jwksGen.Load()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if g := cp.cached; g != nil && g.rv == snap.ResourceVersion() && g.health == health && g.jwksGen == jwksGen {
		return g.input
	}
	g := &generation{rv: snap.ResourceVersion(), health: health, jwksGen: jwksGen, ses: snap.List(config.ServiceEntry), wes: snap.List(config.WorkloadEntry)}
	g.input = translate.Input{
		VirtualServices:  snap.List(config.VirtualService),
		DestinationRules: snap.List(config.DestinationRule),
		Gateways:         snap.List(config.Gateway),

		PeerAuthentications:    snap.List(config.PeerAuthentication),
		RequestAuthentications: snap.List(config.RequestAuthentication),
		AuthorizationPolicies:  snap.List(config.AuthorizationPolicy),
		Telemetries:            snap.List(config.Telemetry),
	}
	g.input.JWKS = cp.jwks.KeySets(g.input.RequestAuthentications)
	// The store shares unchanged objects between snapshots: when no
	// ServiceEntry or WorkloadEntry changed (a routing change), nor any
	// health, the registry is the previous one, which also lets views
	// keep what they built from it (generate.go).
	if prev := cp.cached; prev != nil && prev.health == health && slices.Equal(prev.ses, g.ses) && slices.Equal(prev.wes, g.wes) {
		g.input.Registry = prev.input.Registry
	} else {
		g.input.Registry = registry.Build(g.ses, g.wes, cp.leases)
	}
	cp.cached = g
	return g.input
}
