// Package tcpproxy is Envoy's envoy.filters.network.tcp_proxy: it forwards
// a downstream connection's bytes to a host of an upstream cluster.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/drain"
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
	"github.com/amime-mesh/amime/internal/proxy/upstream"
)

// ClusterSource looks up clusters.
type ClusterSource interface {
	Get(name string) *cluster.Cluster
}

// Config is a compiled TcpProxy.
type Config struct {
	StatPrefix  string
	clusters    []string
	weights     []uint32
	total       uint64
	IdleTimeout time.Duration
}

// Compile checks a TcpProxy's values.
func Compile(m *tcpv3.TcpProxy) (*Config, error) {
	c := &Config{StatPrefix: m.GetStatPrefix(), IdleTimeout: time.Hour}
	if m.GetStatPrefix() == "" {
		return nil, fmt.Errorf("stat_prefix: must not be empty")
	}
	if d := m.GetIdleTimeout(); d != nil {
		c.IdleTimeout = d.AsDuration()
	}
	switch cs := m.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, fmt.Errorf("cluster: must not be empty")
		}
		c.clusters, c.weights, c.total = []string{cs.Cluster}, []uint32{1}, 1
	case *tcpv3.TcpProxy_WeightedClusters:
		for i, wc := range cs.WeightedClusters.GetClusters() {
			if wc.GetName() == "" {
				return nil, fmt.Errorf("weighted_clusters.clusters[%d].name: must not be empty", i)
			}
			if wc.GetWeight() < 1 {
				// Envoy's proto validation: weight >= 1.
				return nil, fmt.Errorf("weighted_clusters.clusters[%d].weight: must be at least 1", i)
			}
			c.clusters = append(c.clusters, wc.GetName())
			c.weights = append(c.weights, wc.GetWeight())
			c.total += uint64(wc.GetWeight())
		}
		if len(c.clusters) == 0 {
			return nil, fmt.Errorf("weighted_clusters.clusters: at least one cluster is required")
		}
	default:
		return nil, fmt.Errorf("cluster_specifier: cluster or weighted_clusters is required")
	}
	return c, nil
}

// Rules lists the TcpProxy fields amime implements.
func Rules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":                               {"stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "metadata_match"},
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster":               {"clusters"},
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": {"name", "weight"},
	}
}

// pick chooses a cluster by weight.
func (c *Config) pick(r uint64) string {
	if len(c.clusters) == 1 {
		return c.clusters[0]
	}
	r %= c.total
	for i, w := range c.weights {
		if r < uint64(w) {
			return c.clusters[i]
		}
		r -= uint64(w)
	}
	return c.clusters[len(c.clusters)-1]
}

// Handler serves connections for one Config.
type Handler struct {
	cfg      *Config
	clusters ClusterSource
	log      *slog.Logger
	tel      *telemetry.TCPMetrics // nil: no metrics
}

// New returns a Handler; tel, when not nil, records Istio's TCP metrics.
func New(cfg *Config, clusters ClusterSource, log *slog.Logger, tel *telemetry.TCPMetrics) *Handler {
	return &Handler{cfg: cfg, clusters: clusters, log: log, tel: tel}
}

// peerPrincipal is the downstream mTLS identity, "" for plaintext.
func peerPrincipal(nc net.Conn) string {
	if tc, ok := nc.(*tlsctx.Conn); ok && tc.Peer != nil {
		return tc.PeerPrincipal
	}
	return ""
}

// DrainGrace is how long a drained TCP connection may live on.
const DrainGrace = 5 * time.Second

// ServeConn forwards nc to an upstream host until either side closes.
func (h *Handler) ServeConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	name := h.cfg.pick(rand.Uint64())
	var tc *telemetry.TCPConn
	if h.tel != nil {
		tc = h.tel.Open(name, peerPrincipal(nc))
	}
	fail := func(flags streaminfo.Flags) {
		if tc != nil {
			tc.Close(flags)
		}
	}
	c := h.clusters.Get(name)
	if c == nil {
		h.log.Debug("tcp_proxy: no cluster", "cluster", name, "flags", "NC")
		fail(streaminfo.NoClusterFound)
		return
	}
	var host *cluster.Host
	if c.Discovery == cluster.OriginalDst {
		// Until transparent capture lands, the original destination is the
		// address the client connected to.
		host = c.OriginalDstHost(nc.LocalAddr().String())
	} else {
		host = c.Pick(rand.Uint64())
	}
	if host == nil {
		h.log.Debug("tcp_proxy: no healthy upstream", "cluster", name, "flags", "UH")
		fail(streaminfo.NoHealthyUpstream)
		return
	}
	up, err := upstream.Dial(ctx, host.Addr, c.ConnectTimeout, host.TLS, nil)
	if err != nil {
		h.log.Debug("tcp_proxy: connect failed", "cluster", name, "host", host.Addr, "flags", "UF", "err", err)
		fail(streaminfo.UpstreamConnectionFailure)
		return
	}
	defer up.Close()
	host.Active.Add(1)
	defer host.Active.Add(-1)
	stop := context.AfterFunc(ctx, func() { _ = nc.Close(); _ = up.Close() })
	defer stop()
	// Drained by a listener update that changed this connection's filter
	// chain: a byte stream has no boundary to stop at, so it gets a grace
	// period, then is closed (Envoy's drain for TCP).
	stopDrain := drain.From(ctx).AfterFunc(func() {
		t := time.AfterFunc(DrainGrace, func() { _ = nc.Close(); _ = up.Close() })
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	defer stopDrain()
	var received, sent func(int)
	if tc != nil {
		received, sent = tc.Received, tc.Sent
	}
	pipe(nc, up, h.cfg.IdleTimeout, received, sent)
	fail(0)
}

// pipe copies both ways; a half-close is passed on. The idle timeout, as
// in Envoy, ends the connection when no bytes move in either direction for
// that long: a read that times out while the other direction is busy just
// waits again.
// aToB and bToA, when not nil, see the bytes each direction moves.
func pipe(a, b net.Conn, idle time.Duration, aToB, bToA func(int)) {
	var last atomic.Int64 // UnixNano of the last bytes moved either way
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyIdle(b, a, idle, &last, aToB)
	}()
	copyIdle(a, b, idle, &last, bToA)
	wg.Wait()
}

func copyIdle(dst, src net.Conn, idle time.Duration, last *atomic.Int64, moved func(int)) {
	buf := make([]byte, 32<<10)
	for {
		if idle > 0 {
			_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if moved != nil {
				moved(n)
			}
			if !writeIdle(dst, buf[:n], idle, last) {
				_ = dst.Close()
				_ = src.Close()
				return
			}
		}
		if err != nil {
			var ne net.Error
			if idle > 0 && errors.As(err, &ne) && ne.Timeout() &&
				time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction moved bytes meanwhile
			}
			if err == io.EOF {
				if tc, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			_ = dst.Close()
			_ = src.Close()
			return
		}
	}
}

// writeIdle writes b, giving up only when the peer has taken no byte for
// the idle timeout.
func writeIdle(dst net.Conn, b []byte, idle time.Duration, last *atomic.Int64) bool {
	for len(b) > 0 {
		if idle > 0 {
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
		}
		n, err := dst.Write(b)
		b = b[n:]
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		if err != nil {
			var ne net.Error
			if n > 0 && errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return false
		}
	}
	return true
}
