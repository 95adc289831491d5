// Package proxy wires the data plane together: it takes configuration from
// a static bootstrap and from an xDS server, validates it, builds the
// runtime (clusters, route tables, listeners), swaps it in atomically, and
// serves traffic, admin and health endpoints until it is drained.
package proxy

import (
	"github.com/amime-mesh/amime/internal/proxy/accesslog"

	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/agent"
	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/hcm"
	"github.com/amime-mesh/amime/internal/proxy/listener"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
	"github.com/amime-mesh/amime/internal/proxy/xdsclient"
)

// Options configure a Proxy.
type Options struct {
	Bootstrap *bootstrapv3.Bootstrap
	// XDSAddr, when set, is the ADS server to use (overrides the bootstrap's
	// dynamic_resources cluster).
	XDSAddr string
	Delta   bool
	// AdminAddr overrides the bootstrap's admin address; "" keeps it, and
	// no admin listener runs when neither names one.
	AdminAddr string
	// HealthAddr serves /healthz/ready (Istio's 15021); "" disables it.
	HealthAddr string
	// PrometheusAddr serves /stats/prometheus (Istio's 15090); "" disables it.
	PrometheusAddr string
	// DrainDuration bounds how long SIGTERM waits for in-flight requests.
	DrainDuration time.Duration
	Log           *slog.Logger
	// Quit is called by POST /quitquitquit to stop the process.
	Quit func()
	// AccessLog is where request lines go: "" or "off" (none), "stdout",
	// or a file path.
	AccessLog string
	// NoMetrics turns Istio's standard request metrics off.
	NoMetrics       bool
	AccessLogFormat telemetry.Format
	// Agent, when set, is the workload identity agent: it serves the SDS
	// secrets of TLS transport sockets, and the xDS client connects with
	// its credentials (the TLS xDS port, with the join token). Run starts
	// it and waits for the first certificate before asking for config.
	Agent *agent.Agent
	// TraceFlushInterval is how often queued spans are exported when
	// fewer than five wait (0: Envoy's 5 s).
	TraceFlushInterval time.Duration
}

// Proxy is one running data plane.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	node  *corev3.Node
	rules fieldcheck.Rules

	clusters    *cluster.Manager
	clusterOpts cluster.Options
	routes      atomic.Pointer[map[string]*route.Table]
	conns       *hcm.ConnTracker
	hcmEnv      *hcm.Env
	sinks       *accesslog.Sinks
	promOnce    sync.Once
	prom        http.Handler
	deps        *listener.Deps
	tel         *telemetry.Telemetry
	tracer      *tracing.Tracer

	mu              sync.Mutex // serializes config changes
	ctx             context.Context
	staticClusters  []*clusterv3.Cluster
	dynClusters     map[string]*clusterv3.Cluster
	staticListeners []*listenerv3.Listener
	dynListeners    map[string]*listenerv3.Listener
	routeConfigs    map[string]*routev3.RouteConfiguration
	wantRoutes      map[string]*route.Table // accepted by RDS; see installRoutes
	routesSince     time.Time
	routeTimer      *time.Timer
	endpoints       map[string]*endpointv3.ClusterLoadAssignment
	live            map[string]*listener.Listener
	warming         map[string]*listener.Compiled
	xds             *xdsclient.Client
	wg              sync.WaitGroup

	initDone  atomic.Bool
	gotCDS    atomic.Bool
	gotLDS    atomic.Bool
	startTime time.Time
	stats     counters
}

type counters struct {
	ldsUpdates, ldsRejects, cdsUpdates, cdsRejects, rdsUpdates, rdsRejects, edsUpdates, edsRejects atomic.Uint64
}

// New validates the bootstrap and builds a Proxy. Nothing is bound yet.
func New(opts Options) (*Proxy, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.DrainDuration == 0 {
		opts.DrainDuration = 5 * time.Second
	}
	b := opts.Bootstrap
	if b == nil {
		b = &bootstrapv3.Bootstrap{}
	}
	p := &Proxy{
		opts:         opts,
		log:          opts.Log,
		node:         b.GetNode(),
		rules:        Rules(),
		conns:        hcm.NewConnTracker(),
		dynClusters:  map[string]*clusterv3.Cluster{},
		dynListeners: map[string]*listenerv3.Listener{},
		routeConfigs: map[string]*routev3.RouteConfiguration{},
		endpoints:    map[string]*endpointv3.ClusterLoadAssignment{},
		live:         map[string]*listener.Listener{},
		warming:      map[string]*listener.Compiled{},
		startTime:    time.Now(),
	}
	if p.node == nil {
		p.node = &corev3.Node{}
	}
	if err := bootstrapRules().Check(b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	p.clusters = cluster.NewManager(p.log)
	p.clusters.OnRemove = hcm.ClosePools
	p.clusters.OnHostRemove = hcm.ClosePool
	empty := map[string]*route.Table{}
	p.routes.Store(&empty)
	p.tracer = tracing.New(tracing.Options{
		ServiceName: p.node.GetCluster(),
		NodeID:      p.node.GetId(),
		Zone:        p.node.GetLocality().GetZone(),
		Resolve:     p.collectorAddr,
		Log:         p.log.With("component", "tracing"),

		FlushInterval: opts.TraceFlushInterval,
	})
	// Access log files of access_log configurations, shared by listeners
	// and kept open for the proxy's life; closed by Run (or Close).
	p.sinks = accesslog.NewSinks(0)
	p.hcmEnv = &hcm.Env{Routes: p, Clusters: p.clusters, Log: p.log, Conns: p.conns, Tracer: p.tracer, AccessLogSinks: p.sinks}
	p.deps = &listener.Deps{HCM: p.hcmEnv, Clusters: p.clusters, Log: p.log}
	if opts.Agent != nil {
		p.deps.Secrets = opts.Agent
		p.clusterOpts.Secrets = opts.Agent
	}

	sr := b.GetStaticResources()
	for i, c := range sr.GetClusters() {
		if err := p.rules.Check(c); err != nil {
			return nil, fmt.Errorf("bootstrap: static_resources.clusters[%d].%w", i, err)
		}
	}
	if _, err := cluster.BuildWith(sr.GetClusters(), p.clusterOpts); err != nil {
		return nil, fmt.Errorf("bootstrap: static_resources.clusters: %w", err)
	}
	p.staticClusters = sr.GetClusters()
	for i, l := range sr.GetListeners() {
		// Validation only: no access log file is opened before Run.
		env := *p.hcmEnv
		env.AccessLogSinks = nil
		deps := *p.deps
		deps.HCM = &env
		if _, err := listener.Compile(l, &deps); err != nil {
			return nil, fmt.Errorf("bootstrap: static_resources.listeners[%d] %q: %w", i, l.GetName(), err)
		}
	}
	p.staticListeners = sr.GetListeners()

	xdsAddr := opts.XDSAddr
	if xdsAddr == "" && b.GetDynamicResources().GetAdsConfig() != nil {
		addr, err := adsAddress(b)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config: %w", err)
		}
		xdsAddr = addr
	}
	if xdsAddr != "" {
		cfg := xdsclient.Config{Target: xdsAddr, Node: p.node, Delta: opts.Delta, Logger: p.log.With("component", "xds")}
		if opts.Agent != nil {
			cfg.DialOptions = opts.Agent.DialOptions()
		}
		cli, err := xdsclient.New(cfg, p)
		if err != nil {
			return nil, fmt.Errorf("xds client: %w", err)
		}
		p.xds = cli
	}
	// Last, so that no error above leaves the access log file open. No
	// request is served before Run, so setting the hook now is safe.
	tel, err := telemetry.New(telemetry.Config{Node: p.node, AccessLog: opts.AccessLog, AccessLogFormat: opts.AccessLogFormat, NoMetrics: opts.NoMetrics})
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	p.tel = tel
	p.hcmEnv.OnComplete = tel.OnComplete
	p.hcmEnv.PeerMetadataID, p.hcmEnv.PeerMetadataValue = tel.Peers().ID(), tel.Peers().Value()
	p.deps.TCPTelemetry = tel.TCP()
	return p, nil
}

// compileListener compiles a listener with its own copy of the
// connection manager environment, which carries the listener's traffic
// direction (the tracing operation: ingress or egress).
func (p *Proxy) compileListener(l *listenerv3.Listener) (*listener.Compiled, error) {
	env := *p.hcmEnv
	env.TrafficDirection = l.GetTrafficDirection()
	deps := *p.deps
	deps.HCM = &env
	return listener.Compile(l, &deps)
}

// collectorAddr resolves a tracing collector's cluster to one of its
// hosts, at export time, as Envoy's async HTTP client picks one.
func (p *Proxy) collectorAddr(name string) (string, error) {
	c := p.clusters.Get(name)
	if c == nil {
		return "", fmt.Errorf("unknown cluster")
	}
	h := c.Pick(rand.Uint64())
	if h == nil {
		return "", fmt.Errorf("no healthy upstream")
	}
	return h.Addr, nil
}

// adsAddress finds the address of the static cluster that the bootstrap's
// ads_config names.
func adsAddress(b *bootstrapv3.Bootstrap) (string, error) {
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_GRPC && ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC {
		return "", fmt.Errorf("api_type: GRPC or DELTA_GRPC required")
	}
	gs := ads.GetGrpcServices()
	if len(gs) != 1 || gs[0].GetEnvoyGrpc() == nil {
		return "", fmt.Errorf("grpc_services: exactly one envoy_grpc service required")
	}
	name := gs[0].GetEnvoyGrpc().GetClusterName()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != name {
			continue
		}
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				return net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())), nil
			}
		}
		return "", fmt.Errorf("cluster %q has no endpoint", name)
	}
	return "", fmt.Errorf("cluster %q is not a static cluster", name)
}

// Route implements hcm.RouteSource.
func (p *Proxy) Route(name string) *route.Table {
	return (*p.routes.Load())[name]
}

// Run binds everything and serves until ctx ends, then drains.
func (p *Proxy) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.tel.Start()
	p.tracer.Start()
	// Runs after the listeners are drained: the last lines get written,
	// the last spans exported.
	defer func() {
		if err := p.tel.Close(); err != nil {
			p.log.Warn("access log", "err", err)
		}
		if err := p.sinks.Close(); err != nil {
			p.log.Warn("access log", "err", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.tracer.Close(ctx); err != nil {
			p.log.Warn("tracing", "err", err)
		}
	}()
	p.mu.Lock()
	p.ctx = runCtx
	p.clusters.Replace(runCtx, p.buildClusterSet())
	if err := p.applyListeners(); err != nil {
		p.mu.Unlock()
		p.shutdownListeners()
		return err
	}
	p.mu.Unlock()

	admin, err := p.startAdmin(runCtx)
	if err == nil && p.opts.PrometheusAddr != "" {
		err = p.startPrometheus(runCtx, p.opts.PrometheusAddr)
	}
	if err != nil {
		cancel()
		p.wg.Wait()
		p.shutdownListeners()
		return err
	}
	if a := p.opts.Agent; a != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_ = a.Run(runCtx)
		}()
	}
	if p.xds != nil {
		p.xds.Wildcard(resourcev3.ClusterType)
		p.xds.Wildcard(resourcev3.ListenerType)
		if p.opts.Agent != nil {
			// The trust bundle, pushed when the mesh root rotates.
			p.xds.Watch(resourcev3.SecretType, []string{agent.RootSecret})
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if a := p.opts.Agent; a != nil {
				// Config would name secrets the proxy cannot serve yet.
				select {
				case <-a.Ready():
				case <-runCtx.Done():
					return
				}
			}
			_ = p.xds.Run(runCtx)
		}()
	} else {
		p.initDone.Store(true)
	}
	p.log.Info("proxy started", "listeners", p.listenerAddrs(), "admin", admin, "xds", p.opts.XDSAddr)

	<-ctx.Done()
	p.log.Info("draining", "drain_duration", p.opts.DrainDuration)
	p.Drain()
	cancel()
	p.wg.Wait()
	p.clusters.Close()
	return nil
}

// Drain stops accepting new connections and lets open ones finish within
// the drain duration (Connection: close on HTTP/1.1, GOAWAY on HTTP/2).
func (p *Proxy) Drain() {
	p.mu.Lock()
	for _, l := range p.live {
		l.CloseListener()
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.DrainDuration)
	defer cancel()
	p.conns.Drain(ctx)
	p.shutdownListeners()
}

func (p *Proxy) shutdownListeners() {
	p.mu.Lock()
	live := p.live
	p.live = map[string]*listener.Listener{}
	p.mu.Unlock()
	for _, l := range live {
		l.Close()
	}
	for _, l := range live {
		l.Wait()
	}
}

// ListenerAddr returns the bound address of a listener, for tests and logs.
func (p *Proxy) ListenerAddr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.live[name]; l != nil {
		return l.Addr()
	}
	return nil
}

func (p *Proxy) listenerAddrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for name, l := range p.live {
		out = append(out, name+"="+l.Addr().String())
	}
	sort.Strings(out)
	return out
}

// Ready reports whether the proxy has its initial configuration (Envoy's
// /ready LIVE state).
func (p *Proxy) Ready() bool { return p.initDone.Load() }

// buildClusterSet builds static + dynamic clusters. Called with p.mu held.
func (p *Proxy) buildClusterSet() map[string]*cluster.Cluster {
	all := append([]*clusterv3.Cluster{}, p.staticClusters...)
	all = append(all, sortedValues(p.dynClusters)...)
	set, err := cluster.BuildWith(all, p.clusterOpts)
	if err != nil {
		// Both halves were validated before; a name clash between them is
		// refused when the dynamic set arrives.
		p.log.Error("cluster set", "err", err)
	}
	return set
}

// applyListeners compiles static + dynamic listeners and brings the live
// set in line: warm listeners are bound or updated, removed ones closed.
// Called with p.mu held.
func (p *Proxy) applyListeners() error {
	want := map[string]*listener.Compiled{}
	all := append([]*listenerv3.Listener{}, p.staticListeners...)
	all = append(all, sortedValues(p.dynListeners)...)
	for _, l := range all {
		c, err := p.compileListener(l)
		if err != nil {
			return fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		want[c.Name] = c
	}
	routes := *p.routes.Load()
	p.warming = map[string]*listener.Compiled{}
	for name, c := range want {
		warm := true
		for _, r := range c.RDSNames {
			if routes[r] == nil {
				warm = false
			}
		}
		if !warm {
			p.warming[name] = c
			continue
		}
		if l := p.live[name]; l != nil && l.Config().Address == c.Address {
			l.Update(c)
			continue
		} else if l != nil {
			l.Close()
			delete(p.live, name)
		}
		l, err := listener.Listen(p.ctx, c, p.log)
		if err != nil {
			return err
		}
		p.live[name] = l
		p.wg.Add(1)
		ctx := p.ctx // read under p.mu, not in the goroutine
		go func() {
			defer p.wg.Done()
			l.Serve(ctx)
		}()
	}
	for name, l := range p.live {
		if _, ok := want[name]; !ok {
			l.Close()
			delete(p.live, name)
		}
	}
	if p.xds != nil {
		var names []string
		for _, c := range want {
			names = append(names, c.RDSNames...)
		}
		p.xds.Watch(resourcev3.RouteType, dedupe(names))
	}
	return nil
}

// OnUpdate implements xdsclient.Handler: it validates a full set of one
// type and applies it, or returns the error that NACKs it.
func (p *Proxy) OnUpdate(typeURL string, resources map[string]*anypb.Any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	switch typeURL {
	case resourcev3.ClusterType:
		err = p.updateClusters(resources)
		if err == nil {
			err = p.installRoutes()
		}
		count(err, &p.stats.cdsUpdates, &p.stats.cdsRejects)
		p.gotCDS.Store(err == nil || p.gotCDS.Load())
	case resourcev3.EndpointType:
		err = p.updateEndpoints(resources)
		if err == nil {
			err = p.installRoutes()
		}
		count(err, &p.stats.edsUpdates, &p.stats.edsRejects)
	case resourcev3.ListenerType:
		err = p.updateListeners(resources)
		count(err, &p.stats.ldsUpdates, &p.stats.ldsRejects)
		p.gotLDS.Store(err == nil || p.gotLDS.Load())
	case resourcev3.RouteType:
		err = p.updateRoutes(resources)
		count(err, &p.stats.rdsUpdates, &p.stats.rdsRejects)
	case resourcev3.SecretType:
		err = p.updateSecrets(resources)
	default:
		err = fmt.Errorf("type %s is not supported by amime", typeURL)
	}
	if err != nil {
		p.log.Warn("config rejected", "type", typeURL, "err", err)
		return err
	}
	if !p.initDone.Load() && p.gotCDS.Load() && p.gotLDS.Load() && len(p.warming) == 0 && p.edsWarm() {
		p.initDone.Store(true)
	}
	return nil
}

// edsWarm reports whether every EDS cluster has received its first
// assignment: Envoy does not finish initializing before that. Called with
// p.mu held.
func (p *Proxy) edsWarm() bool {
	for _, c := range p.clusters.All() {
		if c.Discovery == cluster.EDS {
			if _, ok := p.endpoints[c.EDSServiceName]; !ok {
				return false
			}
		}
	}
	return true
}

func count(err error, ok, rejected *atomic.Uint64) {
	if err != nil {
		rejected.Add(1)
	} else {
		ok.Add(1)
	}
}

func (p *Proxy) updateClusters(res map[string]*anypb.Any) error {
	next := map[string]*clusterv3.Cluster{}
	static := map[string]bool{}
	for _, c := range p.staticClusters {
		static[c.GetName()] = true
	}
	for _, name := range sortedKeys(res) {
		c := &clusterv3.Cluster{}
		if err := res[name].UnmarshalTo(c); err != nil {
			return fmt.Errorf("cluster %q: %w", name, err)
		}
		if err := p.rules.Check(c); err != nil {
			return fmt.Errorf("cluster %q: %w", name, err)
		}
		if static[name] {
			return fmt.Errorf("cluster %q: a static cluster has that name", name)
		}
		next[name] = c
	}
	if _, err := cluster.BuildWith(sortedValues(next), p.clusterOpts); err != nil {
		return err
	}
	p.dynClusters = next
	set := p.buildClusterSet()
	p.clusters.Replace(p.ctx, set)
	var eds []string
	for _, c := range set {
		if c.Discovery == cluster.EDS {
			eds = append(eds, c.EDSServiceName)
		}
	}
	if p.xds != nil {
		p.xds.Watch(resourcev3.EndpointType, dedupe(eds))
	}
	return nil
}

func (p *Proxy) updateEndpoints(res map[string]*anypb.Any) error {
	next := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, name := range sortedKeys(res) {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := res[name].UnmarshalTo(cla); err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", name, err)
		}
		if err := p.rules.Check(cla); err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", name, err)
		}
		next[name] = cla
	}
	if err := cluster.ValidateEndpoints(sortedValues(next)); err != nil {
		return err
	}
	p.endpoints = next
	return p.clusters.SetEndpoints(next)
}

func (p *Proxy) updateListeners(res map[string]*anypb.Any) error {
	next := map[string]*listenerv3.Listener{}
	static := map[string]bool{}
	for _, l := range p.staticListeners {
		static[l.GetName()] = true
	}
	for _, name := range sortedKeys(res) {
		l := &listenerv3.Listener{}
		if err := res[name].UnmarshalTo(l); err != nil {
			return fmt.Errorf("listener %q: %w", name, err)
		}
		if static[name] {
			return fmt.Errorf("listener %q: a static listener has that name", name)
		}
		if _, err := p.compileListener(l); err != nil {
			return fmt.Errorf("listener %q: %w", name, err)
		}
		next[name] = l
	}
	prev := p.dynListeners
	p.dynListeners = next
	if err := p.applyListeners(); err != nil {
		// Binding failed (address in use): keep the previous set.
		p.dynListeners = prev
		_ = p.applyListeners()
		return err
	}
	return nil
}

func (p *Proxy) updateRoutes(res map[string]*anypb.Any) error {
	next := map[string]*route.Table{}
	cfgs := map[string]*routev3.RouteConfiguration{}
	for _, name := range sortedKeys(res) {
		rc := &routev3.RouteConfiguration{}
		if err := res[name].UnmarshalTo(rc); err != nil {
			return fmt.Errorf("route_configuration %q: %w", name, err)
		}
		if err := p.rules.Check(rc); err != nil {
			return fmt.Errorf("route_configuration %q: %w", name, err)
		}
		t, err := route.CompileWithOptions(rc, hcm.RouteOptions())
		if err != nil {
			return fmt.Errorf("route_configuration %q: %w", name, err)
		}
		next[name] = t
		cfgs[name] = rc
	}
	p.wantRoutes = next
	p.routeConfigs = cfgs
	p.routesSince = time.Now()
	return p.installRoutes()
}

// routeWarmTimeout bounds how long a route table waits for its clusters.
const routeWarmTimeout = 5 * time.Second

// installRoutes makes the accepted route tables live, except one that
// names a cluster not yet usable (unknown, or an EDS cluster still waiting
// for its first endpoints): its previous version keeps serving until the
// clusters arrive, so a route change that comes with new subsets never
// sends requests to a cluster the proxy cannot use yet. The control plane
// orders CDS and EDS before RDS, but a new cluster's endpoints are only
// requested once CDS is applied, so RDS can still overtake them; Envoy
// avoids the same gap by warming clusters. After routeWarmTimeout the
// table goes live anyway. Called with p.mu held.
func (p *Proxy) installRoutes() error {
	cur := *p.routes.Load()
	next := make(map[string]*route.Table, len(p.wantRoutes))
	waiting := 0
	expired := time.Since(p.routesSince) >= routeWarmTimeout
	for name, t := range p.wantRoutes {
		if expired || p.clustersUsable(t) {
			next[name] = t
			continue
		}
		waiting++
		if old := cur[name]; old != nil {
			next[name] = old
		}
	}
	p.routes.Store(&next)
	if waiting > 0 && p.routeTimer == nil {
		p.routeTimer = time.AfterFunc(routeWarmTimeout, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.routeTimer = nil
			if err := p.installRoutes(); err != nil {
				p.log.Warn("installing routes", "err", err)
			}
		})
	}
	if len(p.warming) > 0 {
		return p.applyListeners()
	}
	return nil
}

// clustersUsable reports whether every cluster a table names is ready.
// Called with p.mu held.
func (p *Proxy) clustersUsable(t *route.Table) bool {
	for _, name := range t.Clusters() {
		c := p.clusters.Get(name)
		if c == nil {
			return false
		}
		if c.Discovery == cluster.EDS {
			if _, ok := p.endpoints[c.EDSServiceName]; !ok {
				return false
			}
		}
	}
	return true
}

// Rules is every field the proxy implements.
func Rules() fieldcheck.Rules {
	return fieldcheck.Merge(listener.Rules(), cluster.Rules())
}

func bootstrapRules() fieldcheck.Rules {
	return fieldcheck.Merge(Rules(), fieldcheck.Rules{
		"envoy.config.bootstrap.v3.Bootstrap":                  {"node", "static_resources", "dynamic_resources", "admin"},
		"envoy.config.bootstrap.v3.Bootstrap.StaticResources":  {"listeners", "clusters"},
		"envoy.config.bootstrap.v3.Bootstrap.DynamicResources": {"lds_config", "cds_config", "ads_config"},
		"envoy.config.bootstrap.v3.Admin":                      {"address", "access_log_path"},
		"envoy.config.core.v3.Node":                            {"id", "cluster", "metadata", "locality", "user_agent_name"},
		"envoy.config.core.v3.ApiConfigSource":                 {"api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"},
		"envoy.config.core.v3.GrpcService":                     {"envoy_grpc", "timeout"},
		"envoy.config.core.v3.GrpcService.EnvoyGrpc":           {"cluster_name"},
	})
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func dedupe(in []string) []string {
	sort.Strings(in)
	out := in[:0]
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// updateSecrets takes the ROOTCA secret: the mesh trust bundle. The
// workload certificate itself never travels over xDS (its key stays in
// this process).
func (p *Proxy) updateSecrets(resources map[string]*anypb.Any) error {
	for name, a := range resources {
		if name != agent.RootSecret || p.opts.Agent == nil {
			return fmt.Errorf("secret %q: amime proxies take only %q over SDS", name, agent.RootSecret)
		}
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err != nil {
			return fmt.Errorf("secret %q: %w", name, err)
		}
		ca := sec.GetValidationContext().GetTrustedCa()
		data := ca.GetInlineBytes()
		if data == nil {
			data = []byte(ca.GetInlineString())
		}
		if err := p.opts.Agent.SetBundle(data); err != nil {
			return fmt.Errorf("secret %q: validation_context.trusted_ca: %w", name, err)
		}
	}
	return nil
}
