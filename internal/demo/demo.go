// Package demo is the application of the classic Istio tutorial that
// `amime up` runs: customer → preference → recommendation (v1, v2). Each
// service is a plain HTTP server with no mesh code: it calls its upstream
// by service name (http://preference:8080) and reaches it through its
// sidecar because HTTP_PROXY points there.
//
// Knobs for demos and tests, all over HTTP on the service itself:
//
//	POST /misbehave            answer 503 to every request until /behave
//	POST /behave               back to normal
//	POST /errors?percent=N     answer 503 to N% of requests (0 to stop)
//	POST /slow?delay=3s        add a delay to every answer (0 to stop)
//	GET  /headers              echo the request headers as JSON
//	GET  /healthz              200 while serving
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config describes one instance.
type Config struct {
	// Service is customer, preference or recommendation.
	Service string
	// Version labels the instance (v1, v2); recommendation prints it.
	Version string
	// InstanceID is what recommendation prints in quotes; default: a random
	// id like a pod name suffix.
	InstanceID string
	// Listen is where the app listens, e.g. 127.0.0.1:9080.
	Listen string
	// Upstream is the URL this service calls ("" for recommendation).
	Upstream string
	// Client is used for upstream calls; by default an http.Client that
	// honours HTTP_PROXY, which is how the app reaches its sidecar.
	Client *http.Client
	Log    *slog.Logger
}

// Upstream of each tutorial service.
var upstreamOf = map[string]string{
	"customer":   "http://preference:8080",
	"preference": "http://recommendation:8080",
}

// DefaultUpstream returns the URL a tutorial service calls.
func DefaultUpstream(service string) string { return upstreamOf[service] }

// Server is one running instance.
type Server struct {
	cfg       Config
	count     atomic.Int64
	misbehave atomic.Bool
	errorPct  atomic.Int64
	delay     atomic.Int64 // nanoseconds
	ln        net.Listener
	srv       *http.Server
}

// New binds the listener.
func New(cfg Config) (*Server, error) {
	switch cfg.Service {
	case "customer", "preference", "recommendation":
	default:
		return nil, fmt.Errorf("unknown service %q: want customer, preference or recommendation", cfg.Service)
	}
	if cfg.Version == "" {
		cfg.Version = "v1"
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = randomID()
	}
	if cfg.Upstream == "" {
		cfg.Upstream = upstreamOf[cfg.Service]
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64}}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%s: listen: %w", cfg.Service, err)
	}
	s := &Server{cfg: cfg, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /misbehave", func(w http.ResponseWriter, _ *http.Request) {
		s.misbehave.Store(true)
		fmt.Fprintf(w, "Following requests to '%s' will return a 503\n", cfg.InstanceID)
	})
	mux.HandleFunc("POST /behave", func(w http.ResponseWriter, _ *http.Request) {
		s.misbehave.Store(false)
		s.errorPct.Store(0)
		fmt.Fprintf(w, "Following requests to '%s' will return a 200\n", cfg.InstanceID)
	})
	mux.HandleFunc("POST /errors", func(w http.ResponseWriter, r *http.Request) {
		p, err := strconv.Atoi(r.URL.Query().Get("percent"))
		if err != nil || p < 0 || p > 100 {
			http.Error(w, "percent: want 0..100", http.StatusBadRequest)
			return
		}
		s.errorPct.Store(int64(p))
		fmt.Fprintf(w, "%d%% of requests to '%s' will return a 503\n", p, cfg.InstanceID)
	})
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil || d < 0 {
			http.Error(w, "delay: want a duration such as 3s", http.StatusBadRequest)
			return
		}
		s.delay.Store(int64(d))
		fmt.Fprintf(w, "Requests to '%s' will take %v longer\n", cfg.InstanceID, d)
	})
	mux.HandleFunc("GET /headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"service": cfg.Service, "version": cfg.Version, "instance": cfg.InstanceID,
			"method": r.Method, "path": r.URL.RequestURI(), "host": r.Host, "headers": r.Header})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", s.serve)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve runs until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	})
	defer stop()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Headers the tutorial services pass along, so tracing and header-based
// routing work across the chain (what Istio's docs ask applications to do).
var propagate = []string{"x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
	"b3", "traceparent", "tracestate", "user-agent", "baggage-user-agent", "user-preference", "cookie", "authorization"}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if s.misbehave.Load() || (s.errorPct.Load() > 0 && rand.Int64N(100) < s.errorPct.Load()) {
		http.Error(w, fmt.Sprintf("%s misbehavior from '%s'", s.cfg.Service, s.cfg.InstanceID), http.StatusServiceUnavailable)
		return
	}
	if s.cfg.Service == "recommendation" {
		n := s.count.Add(1)
		fmt.Fprintf(w, "recommendation %s from '%s': %d\n", s.cfg.Version, s.cfg.InstanceID, n)
		return
	}
	body, code, err := s.callUpstream(r)
	if err != nil {
		http.Error(w, fmt.Sprintf("%s => %v", s.cfg.Service, err), http.StatusServiceUnavailable)
		return
	}
	if code != http.StatusOK {
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s => %d %s\n", s.cfg.Service, code, strings.TrimSpace(body))
		return
	}
	fmt.Fprintf(w, "%s => %s\n", s.cfg.Service, strings.TrimSpace(body))
}

func (s *Server) callUpstream(r *http.Request) (string, int, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, s.cfg.Upstream+r.URL.RequestURI(), nil)
	if err != nil {
		return "", 0, err
	}
	for _, h := range propagate {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[http.CanonicalHeaderKey(h)] = v
		}
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("error calling %s: %w", s.cfg.Upstream, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", s.cfg.Upstream, err)
	}
	return string(b), resp.StatusCode, nil
}

func randomID() string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}
