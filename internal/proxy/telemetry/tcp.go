package telemetry

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// tcpLabelNames are Istio's labels of the istio_tcp_* metrics: the request
// labels without response_code and grpc_response_status.
var tcpLabelNames = func() []string {
	var out []string
	for _, n := range labelNames {
		if n != "response_code" && n != "grpc_response_status" {
			out = append(out, n)
		}
	}
	return out
}()

// TCPMetrics records Istio's TCP metrics for tcp_proxy connections.
type TCPMetrics struct {
	self     Workload
	opened   *prometheus.CounterVec
	closed   *prometheus.CounterVec
	sent     *prometheus.CounterVec
	received *prometheus.CounterVec

	mu     sync.Mutex
	series map[tcpKey]*tcpSeries
}

type tcpKey struct {
	cluster string
	peer    string
	flags   streaminfo.Flags
}

type tcpSeries struct {
	opened, closed, sent, received prometheus.Counter
}

// NewTCPMetrics returns the TCP metrics of a proxy whose workload is self.
func NewTCPMetrics(self Workload) *TCPMetrics {
	c := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, tcpLabelNames)
	}
	return &TCPMetrics{
		self:     self,
		opened:   c("istio_tcp_connections_opened_total", "TCP connections opened"),
		closed:   c("istio_tcp_connections_closed_total", "TCP connections closed"),
		sent:     c("istio_tcp_sent_bytes_total", "bytes sent in responses on TCP connections"),
		received: c("istio_tcp_received_bytes_total", "bytes received in requests on TCP connections"),
		series:   map[tcpKey]*tcpSeries{},
	}
}

// Collectors are the collectors to register.
func (m *TCPMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.opened, m.closed, m.sent, m.received}
}

// TCPConn reports one proxied connection. Its methods may be called from
// the two copying goroutines at once.
type TCPConn struct {
	m    *TCPMetrics
	s    *tcpSeries
	key  tcpKey
	done bool
}

// Open records a new connection to cluster; peer is the downstream mTLS
// principal ("" for plaintext). A connection is counted once it has a
// cluster, as Envoy's tcp_proxy does.
func (m *TCPMetrics) Open(cluster, peer string) *TCPConn {
	c := &TCPConn{m: m, key: tcpKey{cluster: cluster, peer: peer}}
	c.s = m.get(c.key)
	c.s.opened.Inc()
	return c
}

// Received adds bytes read from the downstream (the request direction).
func (c *TCPConn) Received(n int) { c.s.received.Add(float64(n)) }

// Sent adds bytes written to the downstream (the response direction).
func (c *TCPConn) Sent(n int) { c.s.sent.Add(float64(n)) }

// Close records the end of the connection, with the response flags that
// explain a failure (UF, UH, …). Call it once, after the copying ended.
func (c *TCPConn) Close(flags streaminfo.Flags) {
	if c.done {
		return
	}
	c.done = true
	s := c.s
	if flags != 0 {
		k := c.key
		k.flags = flags
		s = c.m.get(k)
	}
	s.closed.Inc()
}

func (m *TCPMetrics) get(k tcpKey) *tcpSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.series[k]; s != nil {
		return s
	}
	if len(m.series) >= maxSeries {
		k = tcpKey{flags: k.flags}
		if s := m.series[k]; s != nil {
			return s
		}
	}
	v := clusterLabels(m.self, k.cluster)
	v[lProtocol] = "tcp"
	v[lResponseFlags] = k.flags.String()
	if k.peer != "" && v[lReporter] == "destination" {
		v[lSecurityPolicy] = "mutual_tls"
		v[lSrcPrincipal] = k.peer
		v[lDstPrincipal] = first(m.self.Principal, unknown)
	}
	vals := make([]string, 0, len(tcpLabelNames))
	for i, n := range labelNames {
		if n != "response_code" && n != "grpc_response_status" {
			vals = append(vals, v[i])
		}
	}
	s := &tcpSeries{
		opened:   m.opened.WithLabelValues(vals...),
		closed:   m.closed.WithLabelValues(vals...),
		sent:     m.sent.WithLabelValues(vals...),
		received: m.received.WithLabelValues(vals...),
	}
	k.cluster = strings.Clone(k.cluster)
	k.peer = strings.Clone(k.peer)
	m.series[k] = s
	return s
}
