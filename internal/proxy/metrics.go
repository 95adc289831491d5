package proxy

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// proxyCollector exposes the proxy's own health in Envoy's Prometheus names
// (envoy_*), read from counters the config path already keeps, so scraping
// costs the request path nothing.
type proxyCollector struct {
	p     *Proxy
	descs map[string]*prometheus.Desc
}

var collectorMetrics = []struct{ name, help string }{
	{"envoy_cluster_manager_cds_update_success", "CDS updates applied"},
	{"envoy_cluster_manager_cds_update_rejected", "CDS updates rejected (NACKed)"},
	{"envoy_cluster_manager_eds_update_success", "EDS updates applied"},
	{"envoy_cluster_manager_eds_update_rejected", "EDS updates rejected (NACKed)"},
	{"envoy_listener_manager_lds_update_success", "LDS updates applied"},
	{"envoy_listener_manager_lds_update_rejected", "LDS updates rejected (NACKed)"},
	{"envoy_http_rds_update_success", "RDS updates applied"},
	{"envoy_http_rds_update_rejected", "RDS updates rejected (NACKed)"},
	{"envoy_cluster_manager_active_clusters", "clusters in use"},
	{"envoy_server_live", "1 once the initial configuration is in place"},
	{"envoy_control_plane_connected_state", "1 while the ADS stream is up"},
}

func newProxyCollector(p *Proxy) *proxyCollector {
	c := &proxyCollector{p: p, descs: map[string]*prometheus.Desc{}}
	for _, m := range collectorMetrics {
		c.descs[m.name] = prometheus.NewDesc(m.name, m.help, nil, nil)
	}
	return c
}

func (c *proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *proxyCollector) Collect(ch chan<- prometheus.Metric) {
	s := &c.p.stats
	counter := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v))
	}
	gauge := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, float64(v))
	}
	counter("envoy_cluster_manager_cds_update_success", s.cdsUpdates.Load())
	counter("envoy_cluster_manager_cds_update_rejected", s.cdsRejects.Load())
	counter("envoy_cluster_manager_eds_update_success", s.edsUpdates.Load())
	counter("envoy_cluster_manager_eds_update_rejected", s.edsRejects.Load())
	counter("envoy_listener_manager_lds_update_success", s.ldsUpdates.Load())
	counter("envoy_listener_manager_lds_update_rejected", s.ldsRejects.Load())
	counter("envoy_http_rds_update_success", s.rdsUpdates.Load())
	counter("envoy_http_rds_update_rejected", s.rdsRejects.Load())
	gauge("envoy_cluster_manager_active_clusters", uint64(len(c.p.clusters.All())))
	gauge("envoy_server_live", boolInt(c.p.Ready()))
	connected := false
	if c.p.xds != nil {
		connected = c.p.xds.Status().Connected
	}
	gauge("envoy_control_plane_connected_state", boolInt(connected))
}

// startPrometheus serves /stats/prometheus (Istio's 15090) on its own
// registry: nothing global, so several proxies can share a process in tests.
func (p *Proxy) startPrometheus(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", p.prometheusHandler())
	_, err := p.serveHTTP(ctx, "prometheus", addr, mux)
	return err
}

// prometheusHandler serves the proxy's metrics: its own, Go's and the
// process's, Istio's standard ones, span export and access log counters.
// The admin port serves it too (/stats/prometheus), as Envoy's does.
func (p *Proxy) prometheusHandler() http.Handler {
	p.promOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newProxyCollector(p), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(p.tel.Collectors()...) // istio_* request and TCP metrics
		reg.MustRegister(p.tracer.Collector())  // envoy_tracing_* span export counters
		reg.MustRegister(p.sinks.Collectors()...)
		p.prom = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	})
	return p.prom
}
