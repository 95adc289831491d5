package tracing

import "github.com/prometheus/client_golang/prometheus"

// collector exposes the export counters in Envoy's names
// (tracing.<provider>.spans_sent; spans_dropped counts the spans lost to a
// full queue or a failed export).
type collector struct {
	t     *Tracer
	sent  [numKinds]*prometheus.Desc
	dropd [numKinds]*prometheus.Desc
}

// Collector returns the tracer's Prometheus metrics; they read counters
// the exporters keep, so scraping costs requests nothing.
func (t *Tracer) Collector() prometheus.Collector {
	c := &collector{t: t}
	for k := Kind(0); k < numKinds; k++ {
		c.sent[k] = prometheus.NewDesc("envoy_tracing_"+k.String()+"_spans_sent", "spans exported to the "+k.String()+" collector", nil, nil)
		c.dropd[k] = prometheus.NewDesc("envoy_tracing_"+k.String()+"_spans_dropped", "spans dropped: export queue full or export failed", nil, nil)
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for k := Kind(0); k < numKinds; k++ {
		ch <- c.sent[k]
		ch <- c.dropd[k]
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for k := Kind(0); k < numKinds; k++ {
		s := c.t.Stats(k)
		ch <- prometheus.MustNewConstMetric(c.sent[k], prometheus.CounterValue, float64(s.Sent))
		ch <- prometheus.MustNewConstMetric(c.dropd[k], prometheus.CounterValue, float64(s.Dropped))
	}
}
