package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/upstream"
)

// startAdmin serves the admin API (Envoy's 15000) and the health endpoint
// (Istio's 15021) when their addresses are set. It returns the admin
// address actually bound.
func (p *Proxy) startAdmin(ctx context.Context) (string, error) {
	addr := p.opts.AdminAddr
	if addr == "" {
		if sa := p.opts.Bootstrap.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
			addr = net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue()))
		}
	}
	bound := ""
	if addr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /config_dump", p.handleConfigDump)
		mux.HandleFunc("GET /clusters", p.handleClusters)
		mux.HandleFunc("GET /stats", p.handleStats)
		mux.Handle("GET /stats/prometheus", p.prometheusHandler())
		mux.HandleFunc("GET /ready", p.handleReady)
		mux.HandleFunc("GET /server_info", p.handleServerInfo)
		mux.HandleFunc("GET /certs", p.handleCerts)
		mux.HandleFunc("POST /quitquitquit", p.handleQuit)
		mux.HandleFunc("POST /drain_listeners", p.handleDrain)
		// Go's profiler, for the profiles the performance work is driven by.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		a, err := p.serveHTTP(ctx, "admin", addr, mux)
		if err != nil {
			return "", err
		}
		bound = a
	}
	if p.opts.HealthAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz/ready", p.handleReady)
		if _, err := p.serveHTTP(ctx, "health", p.opts.HealthAddr, mux); err != nil {
			return "", err
		}
	}
	return bound, nil
}

func (p *Proxy) serveHTTP(ctx context.Context, what, addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s listener: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		_ = srv.Serve(ln)
	}()
	go func() {
		defer p.wg.Done()
		<-ctx.Done()
		_ = srv.Close()
	}()
	return ln.Addr().String(), nil
}

func (p *Proxy) handleReady(w http.ResponseWriter, _ *http.Request) {
	switch {
	case p.conns.Draining():
		http.Error(w, "DRAINING", http.StatusServiceUnavailable)
	case !p.Ready():
		http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "LIVE")
	}
}

func (p *Proxy) handleServerInfo(w http.ResponseWriter, _ *http.Request) {
	state := "LIVE"
	if !p.Ready() {
		state = "PRE_INITIALIZING"
	}
	if p.conns.Draining() {
		state = "DRAINING"
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"state\":%q,\"uptime_current_epoch\":\"%ds\",\"node\":{\"id\":%q,\"cluster\":%q}}\n",
		state, int(time.Since(p.startTime).Seconds()), p.node.GetId(), p.node.GetCluster())
}

func (p *Proxy) handleQuit(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintln(w, "OK")
	if p.opts.Quit != nil {
		go p.opts.Quit()
	}
}

func (p *Proxy) handleDrain(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintln(w, "OK")
	go p.Drain()
}

// handleConfigDump answers in Envoy's ConfigDump JSON, so tools written for
// Envoy (istioctl proxy-config among them) can read it.
func (p *Proxy) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	var st xdsVersions
	if p.xds != nil {
		s := p.xds.Status()
		st = xdsVersions{cds: s.Types[resourcev3.ClusterType].Version, lds: s.Types[resourcev3.ListenerType].Version,
			rds: s.Types[resourcev3.RouteType].Version, eds: s.Types[resourcev3.EndpointType].Version}
	}
	bs := &adminv3.BootstrapConfigDump{Bootstrap: p.opts.Bootstrap}
	cd := &adminv3.ClustersConfigDump{VersionInfo: st.cds}
	for _, c := range p.staticClusters {
		cd.StaticClusters = append(cd.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: mustAny(c)})
	}
	for _, c := range sortedValues(p.dynClusters) {
		cd.DynamicActiveClusters = append(cd.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: st.cds, Cluster: mustAny(c)})
	}
	ld := &adminv3.ListenersConfigDump{VersionInfo: st.lds}
	for _, l := range p.staticListeners {
		ld.StaticListeners = append(ld.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: mustAny(l)})
	}
	for _, l := range sortedValues(p.dynListeners) {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: l.GetName()}
		state := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: st.lds, Listener: mustAny(l)}
		if _, warming := p.warming[l.GetName()]; warming {
			dl.WarmingState = state
		} else {
			dl.ActiveState = state
		}
		ld.DynamicListeners = append(ld.DynamicListeners, dl)
	}
	rd := &adminv3.RoutesConfigDump{}
	for _, rc := range sortedValues(p.routeConfigs) {
		rd.DynamicRouteConfigs = append(rd.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{VersionInfo: st.rds, RouteConfig: mustAny(rc)})
	}
	configs := []proto.Message{bs, cd, ld, rd}
	if r.URL.Query().Has("include_eds") {
		ed := &adminv3.EndpointsConfigDump{}
		for _, cla := range sortedValues(p.endpoints) {
			ed.DynamicEndpointConfigs = append(ed.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{VersionInfo: st.eds, EndpointConfig: mustAny(cla)})
		}
		configs = append(configs, ed)
	}
	p.mu.Unlock()
	dump := &adminv3.ConfigDump{}
	for _, c := range configs {
		dump.Configs = append(dump.Configs, mustAny(c))
	}
	// Proto field names (static_clusters), as Envoy prints them.
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(dump)
	var pretty bytes.Buffer
	if err == nil {
		// protojson varies its whitespace on purpose; re-indent for a stable,
		// readable document.
		err = json.Indent(&pretty, out, "", "  ")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(pretty.Bytes())
}

type xdsVersions struct{ cds, lds, rds, eds string }

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only for messages linked into the binary
	}
	return a
}

// handleClusters prints Envoy's /clusters text format.
func (p *Proxy) handleClusters(w http.ResponseWriter, _ *http.Request) {
	all := p.clusters.All()
	var b strings.Builder
	for _, name := range sortedKeys(all) {
		c := all[name]
		cb := c.CB
		fmt.Fprintf(&b, "%s::default_priority::max_connections::%d\n", name, cb.MaxConnections)
		fmt.Fprintf(&b, "%s::default_priority::max_pending_requests::%d\n", name, cb.MaxPending)
		fmt.Fprintf(&b, "%s::default_priority::max_requests::%d\n", name, cb.MaxRequests)
		fmt.Fprintf(&b, "%s::default_priority::max_retries::%d\n", name, cb.MaxRetries)
		cx, pending, rq, retries := cb.Counts()
		fmt.Fprintf(&b, "%s::default_priority::cx_open::%d\n", name, cx)
		fmt.Fprintf(&b, "%s::default_priority::rq_pending_open::%d\n", name, pending)
		fmt.Fprintf(&b, "%s::default_priority::rq_open::%d\n", name, rq)
		fmt.Fprintf(&b, "%s::default_priority::rq_retry_open::%d\n", name, retries)
		fmt.Fprintf(&b, "%s::default_priority::upstream_rq_pending_overflow::%d\n", name, cb.PendingOverflow.Load())
		for _, h := range c.Hosts().All {
			open, idle := int64(0), 0
			if pool, ok := h.Pool.Load().(*upstream.Pool); ok {
				open, idle = pool.Open.Load(), pool.Idle()
			}
			health := "healthy"
			if !h.Healthy {
				health = "/failed_eds_health"
			}
			if h.Ejected() {
				health = "/failed_outlier_check"
				if !h.Healthy {
					health = "/failed_outlier_check/failed_eds_health"
				}
			}
			fmt.Fprintf(&b, "%s::%s::cx_active::%d\n", name, h.Addr, open)
			fmt.Fprintf(&b, "%s::%s::cx_idle::%d\n", name, h.Addr, idle)
			fmt.Fprintf(&b, "%s::%s::rq_active::%d\n", name, h.Addr, h.Active.Load())
			fmt.Fprintf(&b, "%s::%s::weight::%d\n", name, h.Addr, h.Weight)
			fmt.Fprintf(&b, "%s::%s::health_flags::%s\n", name, h.Addr, health)
			if h.Hostname != "" {
				fmt.Fprintf(&b, "%s::%s::hostname::%s\n", name, h.Addr, h.Hostname)
			}
		}
	}
	_, _ = w.Write([]byte(b.String()))
}

// handleStats prints counters in Envoy's "name: value" text form.
func (p *Proxy) handleStats(w http.ResponseWriter, _ *http.Request) {
	s := map[string]uint64{
		"cluster_manager.cds.update_success":   p.stats.cdsUpdates.Load(),
		"cluster_manager.cds.update_rejected":  p.stats.cdsRejects.Load(),
		"listener_manager.lds.update_success":  p.stats.ldsUpdates.Load(),
		"listener_manager.lds.update_rejected": p.stats.ldsRejects.Load(),
		"http.rds.update_success":              p.stats.rdsUpdates.Load(),
		"http.rds.update_rejected":             p.stats.rdsRejects.Load(),
		"cluster_manager.eds.update_success":   p.stats.edsUpdates.Load(),
		"cluster_manager.eds.update_rejected":  p.stats.edsRejects.Load(),
		"cluster_manager.active_clusters":      uint64(len(p.clusters.All())),
		"server.live":                          boolInt(p.Ready()),
		"server.uptime":                        uint64(time.Since(p.startTime).Seconds()),
	}
	if p.xds != nil {
		s["control_plane.connected_state"] = boolInt(p.xds.Status().Connected)
	}
	keys := sortedKeys(s)
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %d\n", k, s[k])
	}
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
