// Package telemetry reports every request the proxy handles the way Istio
// does, so that Prometheus, Grafana dashboards and Kiali work unchanged:
// Istio's standard metrics (istio_requests_total, …) with Istio's labels,
// and Envoy/Istio access log lines. It reads the request record the
// connection manager hands to hcm.Env.OnComplete.
package telemetry

import (
	"errors"
	"io"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Config configures Telemetry.
type Config struct {
	// Node is the proxy's xDS node: its workload's identity.
	Node *corev3.Node
	// AccessLog is "off" or "" (none), "stdout", or a file to append to.
	AccessLog       string
	AccessLogFormat Format
	// NoMetrics turns Istio's standard request metrics off (the Telemetry
	// API's metrics disabled), for benchmarks and proxies scraped by none.
	NoMetrics bool
	// FlushInterval bounds how long a log line waits in the buffer;
	// default 1s.
	FlushInterval time.Duration
}

// Telemetry is one proxy's request telemetry.
type Telemetry struct {
	metrics *Metrics
	tcp     *TCPMetrics
	peers   *PeerMetadata
	log     *AccessLog // nil when off
	file    *os.File   // closed with the log when we opened it
	// noMetrics skips the request metrics.
	noMetrics bool
}

// New builds the telemetry and opens the access log file, if any. The
// caller must Close it.
func New(cfg Config) (*Telemetry, error) {
	self := WorkloadFromNode(cfg.Node)
	t := &Telemetry{metrics: NewMetrics(self), tcp: NewTCPMetrics(self), peers: NewPeerMetadata(cfg.Node)}
	t.metrics.peers = t.peers
	t.noMetrics = cfg.NoMetrics
	var out io.Writer
	switch cfg.AccessLog {
	case "", "off":
	case "stdout", "/dev/stdout":
		out = os.Stdout
	default:
		f, err := os.OpenFile(cfg.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		t.file, out = f, f
	}
	if out != nil {
		t.log = NewAccessLog(out, cfg.AccessLogFormat, cfg.FlushInterval)
	}
	return t, nil
}

// OnComplete records a finished request; it is hcm.Env.OnComplete. It
// keeps nothing of info past the call.
func (t *Telemetry) OnComplete(info *streaminfo.Info) {
	if !t.noMetrics {
		t.metrics.Record(info)
	}
	if t.log != nil {
		t.log.Log(info)
	}
}

// Peers is the proxy's side of Istio's peer metadata exchange.
func (t *Telemetry) Peers() *PeerMetadata { return t.peers }

// TCP returns the TCP connection metrics, for tcp_proxy.
func (t *Telemetry) TCP() *TCPMetrics { return t.tcp }

// Collectors are the collectors for the proxy's Prometheus registry.
func (t *Telemetry) Collectors() []prometheus.Collector {
	cs := append(t.metrics.Collectors(), t.tcp.Collectors()...)
	if t.log != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "amime_access_log_dropped_total",
			Help: "access log lines dropped because the output could not keep up",
		}, func() float64 { return float64(t.log.Dropped()) }))
	}
	return cs
}

// Start starts the access log's flushing goroutine; Close stops it.
func (t *Telemetry) Start() {
	if t.log != nil {
		t.log.Start()
	}
}

// Close flushes the access log and closes its file. Call it once no
// request can complete any more.
func (t *Telemetry) Close() error {
	if t.log == nil {
		return nil
	}
	err := t.log.Close()
	if t.file != nil {
		err = errors.Join(err, t.file.Close())
	}
	return err
}
