// Package server is amime's xDS server: ADS (state of the world and delta)
// over gRPC with go-control-plane. It keeps one snapshot per connected
// proxy, rebuilt by a Generator after every change (debounced), records
// what each proxy ACKed or NACKed, and measures convergence.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Generator builds the complete configuration of one proxy.
type Generator interface {
	Generate(node *corev3.Node) (map[resourcev3.Type][]types.Resource, error)
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
}

// typeOrder lists the xDS types in the order proxies apply them.
var typeOrder = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// Server is the xDS server.
type Server struct {
	opts  Options
	log   *slog.Logger
	cache cachev3.SnapshotCache
	xds   serverv3.Server
	m     *metrics

	pushes chan pushRequest

	mu      sync.Mutex
	streams map[int64]string // stream id -> node id
	proxies map[string]*proxyState
	version uint64
}

type pushRequest struct {
	reason string
	at     time.Time
}

type proxyState struct {
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
	// ads=false: a request naming resources is answered with those it
	// names. With ads=true the cache answers a named request only when
	// the names cover every resource of the type, which suits Envoy's
	// wildcard LDS/CDS but leaves gRPC clients, which ask for one
	// listener and the clusters they route to, without an answer. What
	// ads=true also does, notify watches in CDS, EDS, LDS, RDS order, was
	// not kept on the wire: without WithOrderedADS the server sends each
	// type's response from its own channel, in whatever order it picks
	// them up. Wildcard requests get every resource either way.
	s := &Server{
		opts:    opts,
		log:     opts.Log,
		cache:   cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil),
		pushes:  make(chan pushRequest, 1024),
		streams: map[int64]string{},
		proxies: map[string]*proxyState{},
		m:       newMetrics(opts.Registry),
	}
	return s
}

// Register serves ADS on g.
func (s *Server) Register(ctx context.Context, g *grpc.Server) {
	s.xds = serverv3.NewServer(ctx, s.cache, s.callbacks())
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

// pushAll regenerates the snapshot of every connected proxy.
func (s *Server) pushAll(reasons map[string]int, changedAt time.Time) {
	start := time.Now()
	s.mu.Lock()
	s.version++
	version := strconv.FormatUint(s.version, 10)
	nodes := make([]*proxyState, 0, len(s.proxies))
	for _, p := range s.proxies {
		nodes = append(nodes, p)
	}
	s.mu.Unlock()
	for _, p := range nodes {
		s.generate(p, version, changedAt)
	}
	for r, n := range reasons {
		s.m.pushTriggers.WithLabelValues(r).Add(float64(n))
	}
	s.m.pushTime.Observe(time.Since(start).Seconds())
	s.log.Debug("pushed", "version", version, "proxies", len(nodes), "reasons", reasons, "took", time.Since(start))
}

// generate builds and installs one proxy's snapshot.
func (s *Server) generate(p *proxyState, version string, changedAt time.Time) {
	if changedAt.IsZero() {
		changedAt = time.Now()
	}
	res, err := s.opts.Generator.Generate(p.node)
	var snap *cachev3.Snapshot
	next := map[string]typeState{}
	if err == nil {
		snap, err = cachev3.NewSnapshot(version, res)
	}
	if err == nil {
		err = consistent(snap)
	}
	if err == nil {
		// A copy: request updates p.cur's entries as ACKs arrive.
		s.mu.Lock()
		prev := maps.Clone(p.cur)
		s.mu.Unlock()
		for _, t := range typeOrder {
			h, herr := hashResources(res[t])
			if herr != nil {
				err = herr
				break
			}
			ts := typeState{version: version, hash: h, changedAt: changedAt}
			if old, ok := prev[t]; ok && old.hash == h {
				ts = old // unchanged: keep its version so it is not resent
			}
			next[t] = ts
			snap.Resources[cachev3.GetResponseType(t)].Version = ts.version
		}
	}
	if err == nil {
		err = s.cache.SetSnapshot(context.Background(), p.node.GetId(), snap)
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

// consistent is Snapshot.Consistent (every route configuration and load
// assignment is named by a listener or cluster, and every one they name is
// there) also following the RDS names of api_listeners, which
// go-control-plane's check does not see: proxyless gRPC views consist of
// them.
func consistent(snap *cachev3.Snapshot) error {
	refs := cachev3.GetAllResourceReferences(snap.Resources)
	for _, r := range snap.Resources[types.Listener].Items {
		l, ok := r.Resource.(*listenerv3.Listener)
		a := l.GetApiListener().GetApiListener()
		if !ok || a == nil || !a.MessageIs(&hcmv3.HttpConnectionManager{}) {
			continue
		}
		m := &hcmv3.HttpConnectionManager{}
		if err := a.UnmarshalTo(m); err != nil {
			return fmt.Errorf("listener %q: api_listener: %w", l.GetName(), err)
		}
		if name := m.GetRds().GetRouteConfigName(); name != "" {
			if refs[resourcev3.RouteType] == nil {
				refs[resourcev3.RouteType] = map[string]bool{}
			}
			refs[resourcev3.RouteType][name] = true
		}
	}
	for _, t := range []types.ResponseType{types.Endpoint, types.Route} {
		url, err := cachev3.GetResponseTypeURL(t)
		if err != nil {
			return err
		}
		named, have := refs[url], snap.Resources[t].Items
		for name := range named {
			if _, ok := have[name]; !ok {
				return fmt.Errorf("%s %q is referenced but missing", shortType(url), name)
			}
		}
		for name := range have {
			if !named[name] {
				return fmt.Errorf("%s %q is not referenced", shortType(url), name)
			}
		}
	}
	return nil
}

// hashResources fingerprints a type's resources with deterministic
// marshaling.
func hashResources(rs []types.Resource) (uint64, error) {
	h := xxhash.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, r := range rs {
		var err error
		buf, err = opts.MarshalAppend(buf[:0], r)
		if err != nil {
			return 0, fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)
		}
		_, _ = h.Write(buf)
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64(), nil
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
			s.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce() != "", r.GetVersionInfo(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.request(id, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce() != "", "", r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.sent(id, resp.GetTypeUrl(), resp.GetVersionInfo())
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.sent(id, resp.GetTypeUrl(), resp.GetSystemVersionInfo())
		},
	}
}

// request records a proxy's request: its first one registers the proxy and
// builds its snapshot before the cache answers.
func (s *Server) request(stream int64, node *corev3.Node, typeURL string, isReply bool, version, nackMsg string, nack bool) {
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
	version = strconv.FormatUint(s.version, 10)
	s.mu.Unlock()
	if newProxy {
		s.generate(p, version, time.Time{})
	}
}

func (s *Server) sent(stream int64, typeURL, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxies[s.streams[stream]]; p != nil {
		p.sent[typeURL] = version
		s.m.pushes.WithLabelValues(shortType(typeURL)).Inc()
	}
}

func (s *Server) closed(stream int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.streams[stream]
	if !ok {
		return
	}
	delete(s.streams, stream)
	if p := s.proxies[id]; p != nil {
		p.streams--
		if p.streams <= 0 {
			delete(s.proxies, id)
			s.cache.ClearSnapshot(id)
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
}

// Status lists connected proxies, sorted by id.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for id, p := range s.proxies {
		st := ProxyStatus{ID: id, Cluster: p.node.GetCluster(), ConnectedAt: p.connectedAt, Version: p.version, Types: map[string]string{}, Error: p.genErr}
		for _, t := range typeOrder {
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

// Resources returns what the server holds for a proxy, by type.
func (s *Server) Resources(nodeID string) (map[string][]types.Resource, error) {
	snap, err := s.cache.GetSnapshot(nodeID)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: %w", nodeID, err)
	}
	out := map[string][]types.Resource{}
	for _, t := range typeOrder {
		for _, r := range snap.GetResources(t) {
			out[shortType(t)] = append(out[shortType(t)], r)
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
