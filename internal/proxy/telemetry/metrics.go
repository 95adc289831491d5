package telemetry

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// envoyBuckets are Envoy's default histogram buckets, which Istio's
// istio_* histograms use unless sidecar.istio.io/statsHistogramBuckets
// overrides them (durations and byte sizes alike). The exponential byte
// buckets (1, 10, … 1e7) belonged to Mixer-era Istio.
var envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// maxSeries bounds the label sets: the cluster can come from a request
// header (cluster_header routes) and the code from the upstream, so past
// this many, new ones are counted under an unknown destination instead.
const maxSeries = 10000

// seriesKey is what varies between requests among the label values; the
// rest follows from the cluster and the proxy's own workload.
type seriesKey struct {
	cluster    string
	code       int
	flags      streaminfo.Flags
	grpc       bool
	grpcStatus string
	// peer is the downstream mTLS peer's principal ("" for plaintext).
	peer string
	// workload is the peer sidecar's workload from the metadata exchange
	// (nil: unknown); interned by PeerMetadata, so comparing pointers is
	// comparing workloads.
	workload *Workload
}

// series holds one label set's resolved handles, so recording a request
// is a map lookup and four atomic updates.
type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
	reqBytes prometheus.Observer
	resBytes prometheus.Observer
}

// Metrics records Istio's standard HTTP metrics.
type Metrics struct {
	self     Workload
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reqBytes *prometheus.HistogramVec
	resBytes *prometheus.HistogramVec

	// series is copy-on-write: readers never lock, and writers (the first
	// request of a new label set) copy it under mu. Label sets are few
	// (clusters × codes × flags), so copying is cheap and rare.
	series atomic.Pointer[map[seriesKey]*series]
	mu     sync.Mutex
	// clusters caches each cluster's derived label values.
	clusters map[string]*[numLabels]string
	limit    int // maxSeries; lower in tests
	// peers decodes the metadata exchange; nil ignores it.
	peers *PeerMetadata
}

// NewMetrics returns the metrics of a proxy whose workload is self.
func NewMetrics(self Workload) *Metrics {
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: envoyBuckets}, labelNames)
	}
	m := &Metrics{
		self:     self,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "requests handled, by source, destination and response"}, labelNames),
		duration: hist("istio_request_duration_milliseconds", "request duration in milliseconds"),
		reqBytes: hist("istio_request_bytes", "request body size in bytes"),
		resBytes: hist("istio_response_bytes", "response body size in bytes"),
		clusters: map[string]*[numLabels]string{},
		limit:    maxSeries,
	}
	empty := map[seriesKey]*series{}
	m.series.Store(&empty)
	return m
}

// Collectors are the collectors to register on the Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.resBytes}
}

// Record adds one finished request.
func (m *Metrics) Record(info *streaminfo.Info) {
	k := seriesKey{cluster: info.Cluster, code: info.ResponseCode, flags: info.Flags, grpc: info.GRPC, grpcStatus: info.GRPCStatus, peer: info.PeerPrincipal}
	if m.peers != nil && info.PeerMetadata != "" {
		k.workload = m.peers.Peer(info.PeerMetadata)
	}
	s := (*m.series.Load())[k]
	if s == nil {
		s = m.add(k)
	}
	s.requests.Inc()
	s.duration.Observe(float64(info.Duration) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(info.BytesReceived))
	s.resBytes.Observe(float64(info.BytesSent))
}

// add resolves a new label set. The key's strings may point into buffers
// the data path reuses, so the stored key gets copies.
func (m *Metrics) add(k seriesKey) *series {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.series.Load()
	if s := cur[k]; s != nil {
		return s
	}
	if len(cur) >= m.limit {
		k = seriesKey{code: k.code, flags: k.flags, grpc: k.grpc}
		if s := cur[k]; s != nil {
			return s
		}
	}
	k.cluster = strings.Clone(k.cluster)
	k.grpcStatus = strings.Clone(k.grpcStatus)
	k.peer = strings.Clone(k.peer)
	base := m.clusters[k.cluster]
	if base == nil {
		v := clusterLabels(m.self, k.cluster)
		base = &v
		m.clusters[k.cluster] = base
	}
	v := *base
	v[lProtocol] = "http"
	if k.grpc {
		v[lProtocol] = "grpc"
	}
	v[lResponseCode] = strconv.Itoa(k.code)
	v[lGRPCStatus] = k.grpcStatus
	v[lResponseFlags] = k.flags.String()
	if k.peer != "" && v[lReporter] == "destination" {
		v[lSecurityPolicy] = "mutual_tls"
		v[lSrcPrincipal] = k.peer
		v[lDstPrincipal] = first(m.self.Principal, unknown)
	}
	applyPeer(&v, k.workload)
	vals := v[:]
	s := &series{
		requests: m.requests.WithLabelValues(vals...),
		duration: m.duration.WithLabelValues(vals...),
		reqBytes: m.reqBytes.WithLabelValues(vals...),
		resBytes: m.resBytes.WithLabelValues(vals...),
	}
	next := make(map[seriesKey]*series, len(cur)+1)
	for kk, ss := range cur {
		next[kk] = ss
	}
	next[k] = s
	m.series.Store(&next)
	return s
}

// applyPeer fills the other side's workload labels from the metadata
// exchange: the source on the server's report, the destination workload
// on the client's.
func applyPeer(v *[numLabels]string, w *Workload) {
	if w == nil {
		return
	}
	if v[lReporter] == "destination" {
		v[lSrcWorkload] = w.Name
		v[lSrcNamespace] = w.Namespace
		v[lSrcApp] = w.App
		v[lSrcVersion] = w.Version
		v[lSrcCanonicalService] = w.CanonicalService
		v[lSrcCanonicalRevision] = w.CanonicalRevision
		return
	}
	v[lDstWorkload] = w.Name
	v[lDstNamespace] = w.Namespace
	v[lDstApp] = w.App
	v[lDstVersion] = w.Version
	v[lDstCanonicalService] = w.CanonicalService
	v[lDstCanonicalRevision] = w.CanonicalRevision
}
