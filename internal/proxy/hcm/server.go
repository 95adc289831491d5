package hcm

import (
	"github.com/amime-mesh/amime/internal/proxy/accesslog"

	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
	"github.com/amime-mesh/amime/internal/proxy/upstream"
)

// RouteSource looks up route tables delivered by RDS.
type RouteSource interface {
	Route(name string) *route.Table
}

// ClusterSource looks up clusters.
type ClusterSource interface {
	Get(name string) *cluster.Cluster
}

// Env is what every connection manager of a proxy shares.
type Env struct {
	Routes   RouteSource
	Clusters ClusterSource
	Log      *slog.Logger
	// OnComplete, when set, sees every finished request (telemetry). It
	// must not keep the Info past the call.
	OnComplete func(*streaminfo.Info)
	// Conns tracks open downstream connections for draining.
	Conns *ConnTracker
	// LocalAddress fills %DOWNSTREAM_LOCAL_ADDRESS%-style values.
	Hostname string
	// Tracer exports the spans of connection managers that trace (nil:
	// contexts are propagated, spans dropped).
	Tracer *tracing.Tracer
	// TrafficDirection is the listener's (Envoy's tracing operation: an
	// OUTBOUND listener makes CLIENT "egress" spans, INBOUND or unset
	// SERVER "ingress" ones). The proxy gives each listener its own copy
	// of the Env for it.
	TrafficDirection corev3.TrafficDirection
	// PeerMetadataID and PeerMetadataValue are what the peer metadata
	// exchange sends (x-envoy-peer-metadata-id, x-envoy-peer-metadata);
	// empty sends nothing.
	PeerMetadataID, PeerMetadataValue string
	// AccessLogSinks open the files of access_log configurations (nil:
	// access logs are validated but not written).
	AccessLogSinks *accesslog.Sinks
}

// Handler serves downstream connections for one compiled Config.
type Handler struct {
	cfg *Config
	env *Env
	h2s h2State
	// streams recycles HTTP/2 per-request state.
	streams sync.Pool
	dates   dateCache
}

// New returns a Handler.
func New(cfg *Config, env *Env) *Handler {
	return &Handler{cfg: cfg, env: env}
}

// Config returns the handler's configuration.
func (h *Handler) Config() *Config { return h.cfg }

func (h *Handler) table() *route.Table {
	if h.cfg.Inline != nil {
		return h.cfg.Inline
	}
	return h.env.Routes.Route(h.cfg.RDSName)
}

// poolFor returns the HTTP/1.1 pool of a host, creating it on first use.
func poolFor(c *cluster.Cluster, host *cluster.Host) *upstream.Pool {
	if p, ok := host.Pool.Load().(*upstream.Pool); ok {
		return p
	}
	p := upstream.NewPool(host.Addr, c.ConnectTimeout)
	p.TLS, p.IdleTimeout, p.MaxRequests = host.TLS, c.IdleTimeout, c.MaxRequestsPerConnection
	if !host.Pool.CompareAndSwap(nil, p) {
		return host.Pool.Load().(*upstream.Pool)
	}
	return p
}

// h2For returns the HTTP/2 client of a host, creating it on first use.
func h2For(c *cluster.Cluster, host *cluster.Host) *upstream.H2 {
	if p, ok := host.Pool.Load().(*upstream.H2); ok {
		return p
	}
	p := upstream.NewH2(host.Addr, c.ConnectTimeout, host.TLS)
	p.SetIdleTimeout(c.IdleTimeout)
	if !host.Pool.CompareAndSwap(nil, p) {
		if p2, ok := host.Pool.Load().(*upstream.H2); ok {
			return p2
		}
		// The host's pool is HTTP/1.1 (protocol chosen per request): keep a
		// separate HTTP/2 client rather than fight over the slot.
		return p
	}
	return p
}

// ClosePools closes the connection pools of a cluster's hosts; the proxy
// calls it when a cluster is removed.
func ClosePools(c *cluster.Cluster) {
	for _, h := range c.Hosts().All {
		ClosePool(h)
	}
	for _, h := range c.OriginalDstHosts() {
		ClosePool(h)
	}
}

// ClosePool closes one host's idle connections; busy ones close when their
// request ends.
func ClosePool(h *cluster.Host) {
	switch p := h.Pool.Load().(type) {
	case *upstream.Pool:
		p.Close()
	case *upstream.H2:
		p.Close()
	}
}

// ConnTracker knows every open downstream connection so that draining can
// close idle ones at once and ask busy ones to finish.
type ConnTracker struct {
	mu       sync.Mutex
	conns    map[*trackedConn]struct{}
	draining atomic.Bool
	wg       sync.WaitGroup
	// mirrors owns the request mirroring goroutines (mirror.go).
	mirrors mirrorSet
}

type trackedConn struct {
	nc   net.Conn
	idle atomic.Bool
	// drained: the listener asked this connection to drain.
	drained atomic.Bool
	// goAway is called to drain an HTTP/2 connection.
	goAway func()
}

// NewConnTracker returns an empty tracker.
func NewConnTracker() *ConnTracker {
	return &ConnTracker{conns: map[*trackedConn]struct{}{}}
}

func (t *ConnTracker) add(nc net.Conn) *trackedConn {
	tc := &trackedConn{nc: nc}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	return tc
}

func (t *ConnTracker) remove(tc *trackedConn) {
	t.mu.Lock()
	delete(t.conns, tc)
	t.mu.Unlock()
	t.wg.Done()
}

// Draining reports whether Drain has been called.
func (t *ConnTracker) Draining() bool { return t.draining.Load() }

// Drain closes idle connections, makes busy HTTP/1.1 connections close
// after their current response (Connection: close) and sends GOAWAY on
// HTTP/2, then waits for them to finish until ctx ends, when the rest are
// closed.
func (t *ConnTracker) Drain(ctx context.Context) {
	t.draining.Store(true)
	// Once downstream connections are done, stop the mirrors still running.
	defer t.mirrors.stop()
	t.mu.Lock()
	for tc := range t.conns {
		if tc.goAway != nil {
			tc.goAway()
		} else if tc.idle.Load() {
			_ = tc.nc.Close()
		}
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			// Connections that became idle since: close them.
			t.mu.Lock()
			for tc := range t.conns {
				if tc.goAway == nil && tc.idle.Load() {
					_ = tc.nc.Close()
				}
			}
			t.mu.Unlock()
		case <-ctx.Done():
			t.mu.Lock()
			for tc := range t.conns {
				_ = tc.nc.Close()
			}
			t.mu.Unlock()
			<-done
			return
		}
	}
}

// newRand gives each connection its own generator: no shared state on
// the request path.
func newRand() *rand.Rand {
	return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
}
