package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver returns the address (ip:port) of a host of a cluster, picked
// at export time so that collector endpoints may change.
type Resolver func(cluster string) (string, error)

// Options configure a Tracer.
type Options struct {
	// ServiceName is the node's cluster (Istio: "app.namespace"), the
	// spans' service unless the provider names one.
	ServiceName string
	NodeID      string
	Zone        string
	Resolve     Resolver
	Log         *slog.Logger
	// FlushInterval and MinFlushSpans are Envoy's batching (5 s, 5 spans).
	FlushInterval time.Duration
	MinFlushSpans int
	// QueueSize bounds the spans waiting for export per provider; more
	// are dropped (Envoy's OpenTelemetry max_cache_size default 1024).
	QueueSize int
}

// Stats are a provider's export counters.
type Stats struct {
	Sent, Dropped uint64
}

type counters struct{ sent, dropped atomic.Uint64 }

// Tracer owns the exporters of one proxy: the proxy starts it before
// serving and closes it, flushing what is queued, after draining.
type Tracer struct {
	opts  Options
	stats [numKinds]counters
	// done is set by Close: later spans are dropped, not queued.
	done atomic.Bool

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	closed  bool
	sinks   map[string]*sink
}

// New returns a Tracer; nothing runs before Start.
func New(o Options) *Tracer {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 5 * time.Second
	}
	if o.MinFlushSpans <= 0 {
		o.MinFlushSpans = 5
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Tracer{opts: o, sinks: map[string]*sink{}}
}

// Start lets exporters run; spans finished before are dropped.
func (t *Tracer) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.started = true
}

// Close exports what is queued, waiting until ctx ends at most, then
// stops the exporters. Spans finished afterwards are dropped.
func (t *Tracer) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.done.Store(true)
	sinks := make([]*sink, 0, len(t.sinks))
	for _, s := range t.sinks {
		sinks = append(sinks, s)
	}
	t.mu.Unlock()
	for _, s := range sinks {
		close(s.stop)
	}
	var err error
	for _, s := range sinks {
		select {
		case <-s.done:
		case <-ctx.Done():
			err = fmt.Errorf("tracing: flush: %w", ctx.Err())
		}
	}
	if t.cancel != nil {
		t.cancel()
	}
	for _, s := range sinks {
		<-s.done
		s.exp.shutdown()
	}
	return err
}

// Stats returns the export counters of a provider.
func (t *Tracer) Stats(k Kind) Stats {
	return Stats{Sent: t.stats[k].sent.Load(), Dropped: t.stats[k].dropped.Load()}
}

// enqueue offers a finished span to its provider's queue, never blocking.
func (t *Tracer) enqueue(c *Config, sp *Span) {
	if t == nil {
		return
	}
	if t.done.Load() {
		t.stats[c.Provider.Kind].dropped.Add(1)
		return
	}
	s := c.sink.Load()
	if s == nil || s.t != t {
		if s = t.sinkFor(c); s == nil {
			t.stats[c.Provider.Kind].dropped.Add(1)
			return
		}
	}
	select {
	case s.q <- sp:
	default:
		t.stats[c.Provider.Kind].dropped.Add(1)
	}
}

// sinkFor returns the exporter of c's provider, starting it on first use:
// listeners with the same provider share one.
func (t *Tracer) sinkFor(c *Config) *sink {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started || t.closed {
		return nil
	}
	s := t.sinks[c.provKey]
	if s == nil {
		exp, err := t.newExporter(&c.Provider)
		if err != nil {
			t.opts.Log.Warn("tracing exporter", "provider", c.Provider.Kind, "cluster", c.Provider.Cluster, "err", err)
			return nil
		}
		s = &sink{t: t, kind: c.Provider.Kind, q: make(chan *Span, t.opts.QueueSize), exp: exp,
			timeout: c.Provider.Timeout, stop: make(chan struct{}), done: make(chan struct{})}
		t.sinks[c.provKey] = s
		go s.run(t.ctx)
	}
	c.sink.Store(s)
	return s
}

// exporter sends batches in one wire format.
type exporter interface {
	export(ctx context.Context, spans []*Span) error
	shutdown()
}

func (t *Tracer) newExporter(p *Provider) (exporter, error) {
	client := t.httpClient(p.Cluster)
	svc := p.ServiceName
	if svc == "" {
		svc = t.opts.ServiceName
	}
	if p.Kind == Zipkin {
		return &zipkinExporter{client: client, url: p.Scheme + "://" + p.Authority + p.Path, service: svc,
			nodeID: t.opts.NodeID, zone: t.opts.Zone}, nil
	}
	return newOTLPExporter(p, client, svc, t.opts.NodeID, t.opts.Zone)
}

// httpClient reaches the collector through its cluster: whatever the URL
// says, connections go to a host the resolver picks at dial time.
func (t *Tracer) httpClient(cluster string) *http.Client {
	resolve := t.opts.Resolve
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if resolve == nil {
				return nil, errors.New("no cluster resolver")
			}
			addr, err := resolve(cluster)
			if err != nil {
				return nil, fmt.Errorf("collector cluster %q: %w", cluster, err)
			}
			return d.DialContext(ctx, "tcp", addr)
		},
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
	}
	return &http.Client{Transport: tr}
}

// sink is one provider's queue and the goroutine exporting it.
type sink struct {
	t       *Tracer
	kind    Kind
	q       chan *Span
	exp     exporter
	timeout time.Duration
	stop    chan struct{}
	done    chan struct{}
}

const maxBatch = 1000

func (s *sink) run(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(s.t.opts.FlushInterval)
	defer tick.Stop()
	batch := make([]*Span, 0, 64)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		s.send(ctx, batch)
		clear(batch)
		batch = batch[:0]
	}
	for {
		select {
		case sp := <-s.q:
			batch = append(batch, sp)
			if len(batch) >= s.t.opts.MinFlushSpans {
				// Take whatever else is waiting: under load a batch grows
				// instead of the queue.
			more:
				for len(batch) < maxBatch {
					select {
					case sp := <-s.q:
						batch = append(batch, sp)
					default:
						break more
					}
				}
				flush()
			}
		case <-tick.C:
			flush()
		case <-s.stop:
			for {
				select {
				case sp := <-s.q:
					batch = append(batch, sp)
					if len(batch) >= maxBatch {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

func (s *sink) send(ctx context.Context, batch []*Span) {
	timeout := s.timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &s.t.stats[s.kind]
	if err := s.exp.export(ctx, batch); err != nil {
		c.dropped.Add(uint64(len(batch)))
		s.t.opts.Log.Debug("tracing export failed", "provider", s.kind, "spans", len(batch), "err", err)
		return
	}
	c.sent.Add(uint64(len(batch)))
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
