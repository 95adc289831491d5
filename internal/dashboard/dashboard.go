// Package dashboard is amime's web console: a live service graph built from
// the proxies' Istio standard metrics (the way Kiali builds its versioned
// app graph), golden signals per service, traces, and the proxies' xDS sync
// status and config dumps.
//
// The console scrapes every proxy's Prometheus endpoint itself (or queries
// a Prometheus server), keeps a bounded history of per-scrape increments,
// and computes rates and percentiles on request. Pages are Go templates
// with small hand-written JS and SVG, embedded in the binary.
package dashboard

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/amime-mesh/amime/internal/tracestore"
)

// Proxy is one proxy connected to the control plane.
type Proxy struct {
	ID                  string
	Namespace, Workload string
	App, Version        string
	Gateway             bool
	// StatsURL is the proxy's Prometheus endpoint, e.g.
	// http://127.0.0.1:15090/stats/prometheus; "" if unknown.
	StatsURL    string
	ConnectedAt time.Time
	// Types maps "CDS", "LDS", "RDS", "EDS", "SDS" to SYNCED, STALE,
	// "NACK: reason" or NOT SENT, as xds/server.ProxyStatus reports them.
	Types map[string]string
}

// ConfigObject is one Istio resource shown on a service page.
type ConfigObject struct{ Kind, Namespace, Name, YAML string }

// TraceSource is the trace store the traces pages read.
type TraceSource interface {
	Search(tracestore.Query) []tracestore.Summary
	Trace(id string) (tracestore.Trace, bool)
	Services() []string
}

// Sources is where the console reads the mesh. Every field may be nil.
type Sources struct {
	Proxies func() []Proxy
	// ConfigDump returns a proxy's configuration as JSON.
	ConfigDump func(ctx context.Context, proxyID string) ([]byte, error)
	// ServiceConfig returns the VirtualServices and DestinationRules that
	// apply to a service host, and the analyzer warnings naming it.
	ServiceConfig func(host string) (objs []ConfigObject, warnings []string)
	// Traces is nil when tracing is off; the traces page says so.
	Traces TraceSource
}

// Options tunes the console.
type Options struct {
	ScrapeInterval time.Duration // default 5s
	Window         time.Duration // history kept for charts, default 15m
	// PrometheusURL, if set, is queried (HTTP API /api/v1/query) for the
	// Istio metrics instead of scraping each proxy.
	PrometheusURL string
	Logger        *slog.Logger
	// HTTPClient scrapes the proxies and queries Prometheus; default a
	// client with no overall timeout (each scrape has its own).
	HTTPClient *http.Client
}

// Dashboard is the console: a scrape loop (Run) and its pages (Handler).
type Dashboard struct {
	src    Sources
	opts   Options
	log    *slog.Logger
	client *http.Client
	pages  *pages
	now    func() time.Time

	mu      sync.Mutex
	targets map[string]*target // by proxy id, or promTarget
	rounds  []round            // oldest first, at most maxRounds
	last    time.Time          // end of the newest round
}

// New returns a console reading src. Call Run to start scraping.
func New(src Sources, opts Options) *Dashboard {
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = 5 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = 15 * time.Minute
	}
	if opts.Window < opts.ScrapeInterval {
		opts.Window = opts.ScrapeInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	return &Dashboard{
		src:     src,
		opts:    opts,
		log:     log,
		client:  client,
		pages:   mustParsePages(),
		now:     time.Now,
		targets: map[string]*target{},
	}
}

// Run scrapes at ScrapeInterval until ctx is done; it returns nil then.
func (d *Dashboard) Run(ctx context.Context) error {
	t := time.NewTicker(d.opts.ScrapeInterval)
	defer t.Stop()
	for {
		d.scrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// maxRounds bounds the history: one round per interval over the window,
// plus the one whose increments start before the window.
func (d *Dashboard) maxRounds() int {
	return int(d.opts.Window/d.opts.ScrapeInterval) + 2
}

func (d *Dashboard) proxies() []Proxy {
	if d.src.Proxies == nil {
		return nil
	}
	return d.src.Proxies()
}
