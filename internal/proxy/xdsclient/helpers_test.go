package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const testNodeID = "proxy-1"

var modes = []struct {
	name  string
	delta bool
}{{"sotw", false}, {"delta", true}}

// checkGoroutines fails the test if goroutines started during it are still
// running once all its cleanups have run. Register it first: cleanups run
// last-in first-out, so it then runs after servers and clients are stopped.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d running, %d at start\n%s", runtime.NumGoroutine(), base, buf[:n])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestClient creates a client for addr with fast back-off.
func newTestClient(t *testing.T, addr string, delta bool, h Handler) *Client {
	t.Helper()
	c, err := New(Config{
		Target:         addr,
		Node:           &corev3.Node{Id: testNodeID},
		Delta:          delta,
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		Logger:         testLogger(t),
	}, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// runClient runs c until the test ends and checks that Run returns ctx.Err().
func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
}

// recorder keeps what a go-control-plane server saw and sent.
type recorder struct {
	mu        sync.Mutex
	sotwReqs  []*discoveryv3.DiscoveryRequest
	sotwResps []*discoveryv3.DiscoveryResponse
	deltaReqs []*discoveryv3.DeltaDiscoveryRequest
	deltaResp []*discoveryv3.DeltaDiscoveryResponse
}

func (r *recorder) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sotwReqs = append(r.sotwReqs, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sotwResps = append(r.sotwResps, proto.Clone(resp).(*discoveryv3.DiscoveryResponse))
		},
		StreamDeltaRequestFunc: func(_ int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.deltaReqs = append(r.deltaReqs, proto.Clone(req).(*discoveryv3.DeltaDiscoveryRequest))
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.deltaResp = append(r.deltaResp, proto.Clone(resp).(*discoveryv3.DeltaDiscoveryResponse))
		},
	}
}

func (r *recorder) sotwRequests() []*discoveryv3.DiscoveryRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sotwReqs)
}

func (r *recorder) sotwResponses() []*discoveryv3.DiscoveryResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sotwResps)
}

func (r *recorder) deltaRequests() []*discoveryv3.DeltaDiscoveryRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deltaReqs)
}

func (r *recorder) deltaResponses() []*discoveryv3.DeltaDiscoveryResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deltaResp)
}

// ackSeen reports whether the server saw an ACK (no error_detail, non-empty
// nonce) for typeURL; in SotW it must also echo version.
func (r *recorder) ackSeen(delta bool, typeURL, version string) bool {
	if delta {
		for _, q := range r.deltaRequests() {
			if q.GetTypeUrl() == typeURL && q.GetResponseNonce() != "" && q.GetErrorDetail() == nil {
				return true
			}
		}
		return false
	}
	for _, q := range r.sotwRequests() {
		if q.GetTypeUrl() == typeURL && q.GetResponseNonce() != "" && q.GetErrorDetail() == nil && q.GetVersionInfo() == version {
			return true
		}
	}
	return false
}

// nackSeen returns the first NACK for typeURL whose message contains msg,
// normalised to (version_info, nonce, code, message); ok is false if none.
func (r *recorder) nackSeen(delta bool, typeURL, msg string) (version, nonce string, code int32, ok bool) {
	if delta {
		for _, q := range r.deltaRequests() {
			if q.GetTypeUrl() == typeURL && strings.Contains(q.GetErrorDetail().GetMessage(), msg) {
				return "", q.GetResponseNonce(), q.GetErrorDetail().GetCode(), true
			}
		}
		return "", "", 0, false
	}
	for _, q := range r.sotwRequests() {
		if q.GetTypeUrl() == typeURL && strings.Contains(q.GetErrorDetail().GetMessage(), msg) {
			return q.GetVersionInfo(), q.GetResponseNonce(), q.GetErrorDetail().GetCode(), true
		}
	}
	return "", "", 0, false
}

// xdsServer is a real go-control-plane ADS server on a loopback socket.
type xdsServer struct {
	addr string
	rec  *recorder
	stop func()
}

// startXDSServer serves c on addr ("127.0.0.1:0" for a fresh port).
func startXDSServer(t *testing.T, addr string, c cachev3.Cache) *xdsServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, c, rec.callbacks()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	var once sync.Once
	s := &xdsServer{addr: lis.Addr().String(), rec: rec, stop: func() {
		once.Do(func() {
			cancel() // ends the open ADS streams, so Stop does not wait on them
			gs.Stop()
			<-done
		})
	}}
	t.Cleanup(s.stop)
	return s
}

// --- resources ---

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func makeListener(name, route string) *listenerv3.Listener {
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: route,
		}},
	})
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{
		Name: name,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
}

func makeCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
	}
}

func makeRoute(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name: name, Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	}
}

func makeCLA(cluster string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}},
			}},
		}}}},
	}
}

// claPort extracts the single endpoint port of a CLA.
func claPort(a *anypb.Any) uint32 {
	m := new(endpointv3.ClusterLoadAssignment)
	if err := a.UnmarshalTo(m); err != nil {
		return 0
	}
	return m.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
}

// listenerRoute extracts the RDS route name a test listener references.
func listenerRoute(a *anypb.Any) (string, error) {
	l := new(listenerv3.Listener)
	if err := a.UnmarshalTo(l); err != nil {
		return "", err
	}
	hcm := new(hcmv3.HttpConnectionManager)
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return "", err
	}
	return hcm.GetRds().GetRouteConfigName(), nil
}

type snapshotSpec struct {
	version   string
	listeners map[string]string // listener -> route
	routes    map[string]string // route -> cluster
	clusters  []string
	endpoints map[string]uint32 // cluster -> port
}

func (s snapshotSpec) build(t *testing.T) *cachev3.Snapshot {
	t.Helper()
	var ls, rs, cs, es []types.Resource
	for _, n := range slices.Sorted(maps.Keys(s.listeners)) {
		ls = append(ls, makeListener(n, s.listeners[n]))
	}
	for _, n := range slices.Sorted(maps.Keys(s.routes)) {
		rs = append(rs, makeRoute(n, s.routes[n]))
	}
	for _, n := range s.clusters {
		cs = append(cs, makeCluster(n))
	}
	for _, n := range slices.Sorted(maps.Keys(s.endpoints)) {
		es = append(es, makeCLA(n, s.endpoints[n]))
	}
	snap, err := cachev3.NewSnapshot(s.version, map[string][]types.Resource{
		ListenerType: ls, RouteType: rs, ClusterType: cs, EndpointType: es,
	})
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	return snap
}

func setSnapshot(t *testing.T, c cachev3.SnapshotCache, s snapshotSpec) {
	t.Helper()
	if err := c.SetSnapshot(context.Background(), testNodeID, s.build(t)); err != nil {
		t.Fatalf("SetSnapshot: %v", err)
	}
}

// --- handler ---

type update struct {
	typeURL string
	names   []string
}

// recHandler records every update and keeps the latest set per type.
type recHandler struct {
	mu      sync.Mutex
	sets    map[string]map[string]*anypb.Any
	updates []update
	// reject, if set, decides NACKs.
	reject func(typeURL string, res map[string]*anypb.Any) error
	// follow, if set, runs after a successful update (e.g. to call Watch).
	follow func(typeURL string, res map[string]*anypb.Any)
}

func newRecHandler() *recHandler { return &recHandler{sets: map[string]map[string]*anypb.Any{}} }

func (h *recHandler) OnUpdate(typeURL string, res map[string]*anypb.Any) error {
	h.mu.Lock()
	reject, follow := h.reject, h.follow
	h.mu.Unlock()
	if reject != nil {
		if err := reject(typeURL, res); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.sets[typeURL] = res
	h.updates = append(h.updates, update{typeURL, slices.Sorted(maps.Keys(res))})
	h.mu.Unlock()
	if follow != nil {
		follow(typeURL, res)
	}
	return nil
}

func (h *recHandler) names(typeURL string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.sets[typeURL]))
}

func (h *recHandler) get(typeURL, name string) *anypb.Any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sets[typeURL][name]
}

func (h *recHandler) history() []update {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.updates)
}

func (h *recHandler) hasNames(typeURL string, want ...string) bool {
	return slices.Equal(h.names(typeURL), want)
}

// proxyFollow mimics the proxy: subscribe to the routes that listeners
// reference and to the endpoints of EDS clusters, from inside OnUpdate.
func proxyFollow(c **Client) func(string, map[string]*anypb.Any) {
	return func(typeURL string, res map[string]*anypb.Any) {
		switch typeURL {
		case ListenerType:
			var routes []string
			for _, a := range res {
				r, err := listenerRoute(a)
				if err != nil {
					panic(fmt.Sprintf("bad listener: %v", err))
				}
				routes = append(routes, r)
			}
			(*c).Watch(RouteType, routes)
		case ClusterType:
			(*c).Watch(EndpointType, slices.Collect(maps.Keys(res)))
		}
	}
}
