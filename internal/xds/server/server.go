// Package server is amime's xDS server: ADS (state of the world and delta)
// over gRPC with go-control-plane's server. It keeps the configuration of
// every connected proxy, rebuilt by a Generator after every change
// (debounced), records what each proxy ACKed or NACKed, and measures
// convergence.
//
// Built for many proxies: a configuration is made of Sets that proxies
// share, each resource serialized and fingerprinted once; a type is resent
// only when its fingerprint moves, and for EDS and RDS only the resources
// that changed are sent (see configCache).
package server

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Generator builds the complete configuration of one proxy. Every call
// of one push gets the same push number, and the server pushes after every
// change, so a generator may build what proxies share once per push (and
// serve proxies that connect between pushes from the last push's input).
// Sets may be shared between proxies and between pushes.
type Generator interface {
	Generate(node *corev3.Node, push uint64) (Config, error)
}

// Options configure a Server.
type Options struct {
	Generator Generator
	// Debounce is how long the server waits for changes to stop before
	// pushing (Istio's PILOT_DEBOUNCE_AFTER, 100 ms); MaxDelay bounds the
	// wait under a constant stream of changes (PILOT_DEBOUNCE_MAX, 10 s in
	// Istio; 1 s here, since a laptop mesh wants fast feedback).
	Debounce, MaxDelay time.Duration
	Log                *slog.Logger
	// Registry receives the server's metrics; nil disables them.
	Registry prometheus.Registerer
	// MaxInflightBytes bounds the size of the responses sent and not yet
	// acknowledged, which gRPC buffers (see flow); 0 means 32 MiB, a
	// negative value no bound.
	MaxInflightBytes int64
}

// typeOrder lists the xDS types in the order proxies apply them.
// Secrets come last: only the mesh trust bundle (ROOTCA) is served, which
// nothing else depends on.
var typeOrder = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}

// Server is the xDS server.
type Server struct {
	opts  Options
	log   *slog.Logger
	cache *configCache
	flow  *flow
	xds   serverv3.Server
	m     *metrics

	pushes chan pushRequest

	mu      sync.Mutex
	streams map[int64]string // stream id -> node id
	proxies map[string]*proxyState
	version uint64

	// checked caches consistency checks by the sets checked, so that the
	// proxies of one view are checked once per push.
	checkMu sync.Mutex
	checked map[string]error

	// reqStream tells the cache which stream a SotW request came on:
	// go-control-plane calls the request callback, then CreateWatch with
	// the same request, without the stream. lastReq keeps it bounded.
	reqMu     sync.Mutex
	reqStream map[*discoveryv3.DiscoveryRequest]int64
	lastReq   map[int64]*discoveryv3.DiscoveryRequest
}

type pushRequest struct {
	reason string
	at     time.Time
}

type proxyState struct {
	// genMu serializes generations, which a push and the proxy's first
	// request may start together; genPush is the push last installed, so
	// an older generation never replaces a newer one.
	genMu   sync.Mutex
	genPush uint64

	node        *corev3.Node
	streams     int
	connectedAt time.Time
	version     string               // last push version generated for it
	cur         map[string]typeState // type -> what it should have
	sent        map[string]string    // type -> version sent
	acked       map[string]string    // type -> version ACKed
	nack        map[string]string    // type -> error of the last NACK, cleared on ACK
	genErr      string
}

// typeState is the current configuration of one type for one proxy. Its
// version only moves when the content does, so a change to endpoints does
// not resend listeners (state-of-the-world xDS resends a whole type).
type typeState struct {
	version   string
	hash      uint64
	changedAt time.Time // the change that produced version; zero once ACKed
}

// New returns a Server; call Register to serve it on a gRPC server and Run
// to process pushes.
func New(opts Options) *Server {
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.MaxInflightBytes == 0 {
		opts.MaxInflightBytes = 32 << 20
	}
	f := newFlow(opts.MaxInflightBytes, 5*time.Second)
	s := &Server{
		opts:      opts,
		log:       opts.Log,
		cache:     newConfigCache(f),
		flow:      f,
		pushes:    make(chan pushRequest, 1024),
		streams:   map[int64]string{},
		proxies:   map[string]*proxyState{},
		checked:   map[string]error{},
		reqStream: map[*discoveryv3.DiscoveryRequest]int64{},
		lastReq:   map[int64]*discoveryv3.DiscoveryRequest{},
		m:         newMetrics(opts.Registry),
	}
	s.cache.streamOf = s.streamOf
	return s
}

// Register serves ADS on g. Several gRPC servers (the plaintext and the
// TLS port) share one xDS server, whose stream IDs must be unique.
func (s *Server) Register(ctx context.Context, g *grpc.Server) {
	if s.xds == nil {
		s.xds = serverv3.NewServer(ctx, s.cache, s.callbacks())
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
}

// Push asks for every proxy's configuration to be rebuilt, after the
// debounce interval.
func (s *Server) Push(reason string) {
	select {
	case s.pushes <- pushRequest{reason: reason, at: time.Now()}:
	default:
		// The queue is full of pending pushes: this change is covered by them.
	}
}

// Run debounces push requests and rebuilds snapshots until ctx ends.
func (s *Server) Run(ctx context.Context) {
	var (
		timer    *time.Timer
		timerC   <-chan time.Time
		first    time.Time
		reasons  = map[string]int{}
		oldestAt time.Time
	)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case p := <-s.pushes:
			now := time.Now()
			if first.IsZero() {
				first = now
				oldestAt = p.at
			}
			reasons[p.reason]++
			wait := s.opts.Debounce
			if deadline := first.Add(s.opts.MaxDelay); now.Add(wait).After(deadline) {
				wait = time.Until(deadline)
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		case <-timerC:
			timerC = nil
			s.pushAll(reasons, oldestAt)
			first, oldestAt = time.Time{}, time.Time{}
			reasons = map[string]int{}
		}
	}
}

// pushAll regenerates the configuration of every connected proxy.
func (s *Server) pushAll(reasons map[string]int, changedAt time.Time) {
	start := time.Now()
	s.mu.Lock()
	s.version++
	push := s.version
	nodes := make([]*proxyState, 0, len(s.proxies))
	for _, p := range s.proxies {
		nodes = append(nodes, p)
	}
	s.mu.Unlock()
	s.checkMu.Lock()
	s.checked = map[string]error{} // the last push's sets are gone
	s.checkMu.Unlock()
	s.cache.newPush()
	for _, p := range nodes {
		s.generate(p, push, changedAt)
	}
	for r, n := range reasons {
		s.m.pushTriggers.WithLabelValues(r).Add(float64(n))
	}
	s.m.pushTime.Observe(time.Since(start).Seconds())
	s.log.Debug("pushed", "version", push, "proxies", len(nodes), "reasons", reasons, "took", time.Since(start))
}

// generate builds and installs one proxy's configuration.
func (s *Server) generate(p *proxyState, push uint64, changedAt time.Time) {
	p.genMu.Lock()
	defer p.genMu.Unlock()
	if push < p.genPush {
		return
	}
	p.genPush = push
	if changedAt.IsZero() {
		changedAt = time.Now()
	}
	version := strconv.FormatUint(push, 10)
	cfg, err := s.opts.Generator.Generate(p.node, push)
	if err == nil {
		err = s.consistent(cfg)
	}
	next := map[string]typeState{}
	var nc *nodeConfig
	if err == nil {
		// A copy: request updates p.cur's entries as ACKs arrive.
		s.mu.Lock()
		prev := maps.Clone(p.cur)
		s.mu.Unlock()
		nc = &nodeConfig{types: make(map[string]*typeConfig, len(typeOrder))}
		for _, t := range typeOrder {
			h := cfg.hash(t)
			ts := typeState{version: version, hash: h, changedAt: changedAt}
			if old, ok := prev[t]; ok && old.hash == h {
				ts = old // unchanged: keep its version so it is not resent
			}
			next[t] = ts
			nc.types[t] = &typeConfig{version: ts.version, sets: cfg[t]}
		}
		s.cache.set(p.node.GetId(), nc)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		p.genErr = err.Error()
		s.log.Error("config generation failed", "proxy", p.node.GetId(), "err", err)
		return
	}
	p.genErr = ""
	p.version = version
	for t, ts := range next {
		if cur, ok := p.cur[t]; ok && cur.version == ts.version {
			next[t] = cur // keeps what an ACK recorded meanwhile
		}
	}
	p.cur = next
}

// consistent checks references between types (see Config.consistent),
// once per combination of sets.
func (s *Server) consistent(cfg Config) error {
	for t := range cfg {
		if !slices.Contains(typeOrder, t) {
			return fmt.Errorf("type %s is not served", t)
		}
	}
	key := cfg.consistencyKey()
	s.checkMu.Lock()
	err, ok := s.checked[key]
	s.checkMu.Unlock()
	if ok {
		return err
	}
	err = cfg.consistent()
	s.checkMu.Lock()
	s.checked[key] = err
	s.checkMu.Unlock()
	return err
}

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:      func(context.Context, int64, string) error { return nil },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error { return nil },
		StreamClosedFunc:    func(id int64, _ *corev3.Node) { s.closed(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.closed(id)
		},
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			intern(r.ResourceNames)
			s.noteRequest(id, r)
			s.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetVersionInfo(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			intern(r.ResourceNamesSubscribe)
			s.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), "", r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.sent(id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce())
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.sent(id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce())
		},
	}
}

// intern replaces requested names by canonical copies. go-control-plane
// keeps each stream's subscription as a map keyed by the names of its last
// request: a thousand proxies subscribing to a thousand load assignments
// each would otherwise keep a million copies of the same names. The table
// is dropped if it grows past any plausible number of resource names.
func intern(names []string) {
	for i, n := range names {
		if v, ok := interned.Load(n); ok {
			names[i] = v.(string)
			continue
		}
		if internedLen.Add(1) > 1<<20 {
			interned.Clear()
			internedLen.Store(0)
		}
		interned.Store(n, n)
	}
}

var (
	interned    sync.Map // name -> canonical copy
	internedLen atomic.Int64
)

func (s *Server) noteRequest(stream int64, r *discoveryv3.DiscoveryRequest) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	if prev := s.lastReq[stream]; prev != nil {
		delete(s.reqStream, prev)
	}
	s.lastReq[stream] = r
	s.reqStream[r] = stream
}

func (s *Server) streamOf(r *discoveryv3.DiscoveryRequest) (int64, bool) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	id, ok := s.reqStream[r]
	return id, ok
}

// request records a proxy's request: its first one registers the proxy and
// builds its configuration before the cache answers.
func (s *Server) request(stream int64, node *corev3.Node, typeURL, nonce, version, nackMsg string, nack bool) {
	isReply := nonce != ""
	s.mu.Lock()
	id, known := s.streams[stream]
	if !known {
		if node.GetId() == "" {
			s.mu.Unlock()
			return
		}
		id = node.GetId()
		s.streams[stream] = id
	}
	p := s.proxies[id]
	newProxy := p == nil
	if newProxy {
		p = &proxyState{node: node, connectedAt: time.Now(), sent: map[string]string{}, acked: map[string]string{}, nack: map[string]string{}}
		s.proxies[id] = p
	}
	if !known {
		p.streams++
		s.m.connected.Set(float64(len(s.proxies)))
	}
	if isReply {
		if nack {
			p.nack[typeURL] = nackMsg
			s.m.nacks.WithLabelValues(shortType(typeURL)).Inc()
			s.log.Warn("proxy rejected config", "proxy", id, "type", shortType(typeURL), "err", nackMsg)
		} else {
			if version == "" {
				version = p.sent[typeURL] // delta ACKs carry no version
			}
			if ts, ok := p.cur[typeURL]; ok && ts.version == version && !ts.changedAt.IsZero() {
				s.m.convergence.Observe(time.Since(ts.changedAt).Seconds())
				ts.changedAt = time.Time{}
				p.cur[typeURL] = ts
			}
			p.acked[typeURL] = version
			delete(p.nack, typeURL)
		}
	}
	push := s.version
	s.mu.Unlock()
	if isReply {
		s.flow.replied(id, typeURL, nonce)
	}
	if newProxy {
		s.generate(p, push, time.Time{})
	}
}

func (s *Server) sent(stream int64, typeURL, version, nonce string) {
	s.mu.Lock()
	id := s.streams[stream]
	if p := s.proxies[id]; p != nil {
		p.sent[typeURL] = version
		s.m.pushes.WithLabelValues(shortType(typeURL)).Inc()
	}
	s.mu.Unlock()
	s.flow.sent(id, typeURL, nonce)
}

func (s *Server) closed(stream int64) {
	s.reqMu.Lock()
	if r := s.lastReq[stream]; r != nil {
		delete(s.reqStream, r)
		delete(s.lastReq, stream)
	}
	s.reqMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.streams[stream]
	if !ok {
		return
	}
	delete(s.streams, stream)
	s.cache.dropStream(id, stream)
	if p := s.proxies[id]; p != nil {
		p.streams--
		if p.streams <= 0 {
			delete(s.proxies, id)
			s.cache.clear(id)
			s.flow.gone(id)
		}
	}
	s.m.connected.Set(float64(len(s.proxies)))
}

// ProxyStatus is one connected proxy as `amime proxy-status` shows it.
type ProxyStatus struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster,omitempty"`
	ConnectedAt time.Time         `json:"connectedAt"`
	Version     string            `json:"version"`
	Types       map[string]string `json:"types"` // short type -> SYNCED / STALE / NACK: reason / NOT SENT
	Error       string            `json:"error,omitempty"`
	// Node is what the proxy said about itself (read-only).
	Node *corev3.Node `json:"-"`
}

// Status lists connected proxies, sorted by id.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for id, p := range s.proxies {
		st := ProxyStatus{ID: id, Cluster: p.node.GetCluster(), ConnectedAt: p.connectedAt, Version: p.version, Types: map[string]string{}, Error: p.genErr, Node: p.node}
		for _, t := range typeOrder {
			if t == resourcev3.SecretType && p.sent[t] == "" && p.nack[t] == "" {
				// Only proxies holding a certificate take secrets.
				continue
			}
			switch {
			case p.nack[t] != "":
				st.Types[shortType(t)] = "NACK: " + p.nack[t]
			case p.sent[t] == "":
				st.Types[shortType(t)] = "NOT SENT"
			case p.acked[t] == p.sent[t] && p.sent[t] == p.cur[t].version:
				st.Types[shortType(t)] = "SYNCED"
			default:
				st.Types[shortType(t)] = "STALE"
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Resources returns what the server holds for a proxy, by type, decoded
// again from what it sends.
func (s *Server) Resources(nodeID string) (map[string][]types.Resource, error) {
	ne := s.cache.lookup(nodeID)
	if ne == nil {
		return nil, fmt.Errorf("proxy %q: no configuration", nodeID)
	}
	ne.mu.Lock()
	cfg := ne.cfg
	ne.mu.Unlock()
	if cfg == nil {
		return nil, fmt.Errorf("proxy %q: no configuration yet", nodeID)
	}
	out := map[string][]types.Resource{}
	for _, t := range typeOrder {
		for _, set := range cfg.typ(t).sets {
			for _, r := range set.items {
				m, err := r.Any.UnmarshalNew()
				if err != nil {
					return nil, fmt.Errorf("%s %q: %w", shortType(t), r.Name, err)
				}
				out[shortType(t)] = append(out[shortType(t)], m)
			}
		}
	}
	return out, nil
}

func shortType(t string) string {
	switch t {
	case resourcev3.ClusterType:
		return "CDS"
	case resourcev3.EndpointType:
		return "EDS"
	case resourcev3.ListenerType:
		return "LDS"
	case resourcev3.RouteType:
		return "RDS"
	case resourcev3.SecretType:
		return "SDS"
	}
	return t
}
