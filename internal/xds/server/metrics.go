package server

import "github.com/prometheus/client_golang/prometheus"

// metrics uses Istio's pilot names where one exists, so existing
// dashboards read them.
type metrics struct {
	connected    prometheus.Gauge
	pushes       *prometheus.CounterVec
	pushTriggers *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	pushTime     prometheus.Histogram
	convergence  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "pilot_xds", Help: "Number of proxies connected to this control plane."}),
		pushes:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_xds_pushes", Help: "xDS responses sent, by type."}, []string{"type"}),
		pushTriggers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_push_triggers", Help: "Changes that triggered a push, by reason."}, []string{"type"}),
		nacks:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pilot_total_xds_rejects", Help: "NACKs from proxies, by type."}, []string{"type"}),
		pushTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pilot_xds_push_time", Help: "Seconds to rebuild and install every proxy's configuration.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10}}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "amime_proxy_convergence_seconds", Help: "Seconds from a configuration change to the proxy's ACK.",
			Buckets: []float64{.01, .05, .1, .2, .5, 1, 3, 5, 10, 30}}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.pushes, m.pushTriggers, m.nacks, m.pushTime, m.convergence)
	}
	return m
}
