package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const testNode = "test-node"

// controlPlane is a real go-control-plane ADS server on 127.0.0.1.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server
	done  chan struct{}

	mu    sync.Mutex
	nacks []string // error_detail messages seen
	acks  map[string]string
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), acks: map[string]string{}}
	cp.listen(t, addr)
	return cp
}

func (cp *controlPlane) listen(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	// The port may linger briefly after a restart on the same address.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			if r.GetErrorDetail() != nil {
				cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			} else if r.GetResponseNonce() != "" {
				cp.acks[r.GetTypeUrl()] = r.GetVersionInfo()
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			if r.GetErrorDetail() != nil {
				cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			}
			return nil
		},
	}
	cp.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(context.Background(), cp.cache, cb))
	cp.done = make(chan struct{})
	go func() {
		defer close(cp.done)
		_ = cp.srv.Serve(ln)
	}()
	t.Cleanup(cp.stop)
}

func (cp *controlPlane) stop() {
	cp.srv.Stop()
	<-cp.done
}

func (cp *controlPlane) acked(typeURL string) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.acks[typeURL]
}

func (cp *controlPlane) nackCount() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.nacks)
}

func (cp *controlPlane) set(t *testing.T, version string, res map[resourcev3.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), testNode, snap); err != nil {
		t.Fatal(err)
	}
}

// mesh builds one listener (RDS "routes"), EDS clusters and their
// endpoints; weights maps cluster name to route weight.
func mesh(t *testing.T, port int, weights map[string]uint32, endpoints map[string][]string, extraRoutes ...*routev3.Route) map[resourcev3.Type][]types.Resource {
	t.Helper()
	router, _ := anypb.New(&routerv3.Router{})
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "xds",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "routes",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	lis := &listenerv3.Listener{
		Name:         "http",
		Address:      &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
	var wcs []*routev3.WeightedCluster_ClusterWeight
	var clusters, clas []types.Resource
	for name, w := range weights {
		wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)})
	}
	for name, addrs := range endpoints {
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
			ConnectTimeout:       durationpb.New(time.Second),
		})
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
		for _, a := range addrs {
			h, p, _ := net.SplitHostPort(a)
			pn, _ := strconv.Atoi(p)
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)}}}},
			}}})
		}
		clas = append(clas, cla)
	}
	routes := append(extraRoutes, &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wcs}}}},
	})
	rc := &routev3.RouteConfiguration{Name: "routes", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {lis},
		resourcev3.RouteType:    {rc},
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: clas,
	}
}

func startXDSProxy(t *testing.T, xdsAddr string, delta bool) *running {
	t.Helper()
	tmpl := `node: {id: ` + testNode + `, cluster: test}`
	return startProxy(t, tmpl, nil, func(o *Options) { o.XDSAddr, o.Delta = xdsAddr, delta })
}

func get(t *testing.T, c *http.Client, url string) (echo, error) {
	resp, err := c.Get(url)
	if err != nil {
		return echo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return echo{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	var e echo
	return e, json.NewDecoder(resp.Body).Decode(&e)
}

func TestXDSConfigFlow(t *testing.T) {
	for _, mode := range []struct {
		name  string
		delta bool
	}{{"sotw", false}, {"delta", true}} {
		t.Run(mode.name, func(t *testing.T) { testXDSConfigFlow(t, mode.delta) })
	}
}

func testXDSConfigFlow(t *testing.T, delta bool) {
	a, b := backend(t, "a"), backend(t, "b")
	aAddr, bAddr := strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")
	cp := startControlPlane(t, "127.0.0.1:0")
	port := freePort(t)
	cp.set(t, "1", mesh(t, port, map[string]uint32{"svc": 100}, map[string][]string{"svc": {aAddr}}))
	r := startXDSProxy(t, cp.addr, delta)
	waitFor(t, 10*time.Second, "proxy ready from xDS", r.p.Ready)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	c := &http.Client{}
	if e, err := get(t, c, url); err != nil || e.Name != "a" {
		t.Fatalf("v1: got %+v, %v", e, err)
	}

	t.Run("endpoint change", func(t *testing.T) {
		cp.set(t, "2", mesh(t, port, map[string]uint32{"svc": 100}, map[string][]string{"svc": {bAddr}}))
		waitFor(t, 5*time.Second, "traffic on b", func() bool { e, err := get(t, c, url); return err == nil && e.Name == "b" })
	})
	t.Run("route change to a split", func(t *testing.T) {
		cp.set(t, "3", mesh(t, port, map[string]uint32{"one": 50, "two": 50}, map[string][]string{"one": {aAddr}, "two": {bAddr}}))
		seen := map[string]bool{}
		waitFor(t, 5*time.Second, "both clusters serving", func() bool {
			if e, err := get(t, c, url); err == nil {
				seen[e.Name] = true
			}
			return seen["a"] && seen["b"]
		})
	})
	t.Run("invalid update is NACKed and the last good config serves", func(t *testing.T) {
		bad := mesh(t, port, map[string]uint32{"one": 50, "two": 50}, map[string][]string{"one": {aAddr}, "two": {bAddr}})
		bad[resourcev3.ClusterType][0].(*clusterv3.Cluster).HealthChecks = []*corev3.HealthCheck{{}}
		before := cp.nackCount()
		cp.set(t, "4", bad)
		waitFor(t, 5*time.Second, "a NACK", func() bool { return cp.nackCount() > before })
		cp.mu.Lock()
		msg := cp.nacks[len(cp.nacks)-1]
		cp.mu.Unlock()
		if !strings.Contains(msg, "health_checks: field is not supported by amime") {
			t.Errorf("NACK detail %q does not name the field", msg)
		}
		for i := 0; i < 20; i++ {
			if _, err := get(t, c, url); err != nil {
				t.Fatalf("request after NACK: %v", err)
			}
		}
		if v := cp.acked(resourcev3.ClusterType); !delta && v != "3" {
			t.Errorf("last ACKed CDS version %q, want 3", v)
		}
	})
	t.Run("control plane gone: traffic continues", func(t *testing.T) {
		cp.stop()
		waitFor(t, 5*time.Second, "xds disconnected", func() bool { return !r.p.xds.Status().Connected })
		for i := 0; i < 50; i++ {
			if _, err := get(t, c, url); err != nil {
				t.Fatalf("request %d with control plane down: %v", i, err)
			}
		}
	})
}

// fortioPath finds the fortio binary that ./scripts/test installs.
func fortioPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("fortio"); err == nil {
		return p
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "fortio")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fortio not found: run ./scripts/test, which installs fortio.org/fortio@v1.68.2")
	}
	return p
}

// TestConfigSwapsUnderLoad changes routes and endpoints 100 times over xDS
// while fortio sends 1000 QPS: no request may fail because of a swap.
func TestConfigSwapsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	fortio := fortioPath(t)
	a, b := backend(t, "a"), backend(t, "b")
	aAddr, bAddr := strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")
	cp := startControlPlane(t, "127.0.0.1:0")
	port := freePort(t)
	cp.set(t, "0", mesh(t, port, map[string]uint32{"one": 50, "two": 50}, map[string][]string{"one": {aAddr}, "two": {bAddr}}))
	r := startXDSProxy(t, cp.addr, false)
	waitFor(t, 10*time.Second, "proxy ready from xDS", r.p.Ready)

	out := filepath.Join(t.TempDir(), "fortio.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	load := exec.CommandContext(ctx, fortio, "load", "-quiet", "-qps", "1000", "-c", "16", "-t", "8s", "-json", out,
		fmt.Sprintf("http://127.0.0.1:%d/", port))
	var fortioLog strings.Builder
	load.Stdout, load.Stderr = &fortioLog, &fortioLog
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	var swaps atomic.Int32
	swapDone := make(chan struct{})
	go func() {
		defer close(swapDone)
		for i := 1; i <= 100; i++ {
			w := uint32(i % 100)
			eps := map[string][]string{"one": {aAddr}, "two": {bAddr}}
			if i%2 == 0 {
				eps = map[string][]string{"one": {bAddr}, "two": {aAddr, bAddr}}
			}
			extra := &routev3.Route{
				Name:   fmt.Sprintf("extra-%d", i),
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/extra/%d", i)}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			}
			cp.set(t, strconv.Itoa(i), mesh(t, port, map[string]uint32{"one": w + 1, "two": 100 - w}, eps, extra))
			swaps.Add(1)
			time.Sleep(60 * time.Millisecond) // pacing of config changes, not readiness
		}
	}()
	if err := load.Wait(); err != nil {
		t.Fatalf("fortio: %v\n%s", err, fortioLog.String())
	}
	<-swapDone
	waitFor(t, 5*time.Second, "last version ACKed", func() bool { return cp.acked(resourcev3.RouteType) == "100" })
	var res struct {
		RetCodes          map[string]int64
		DurationHistogram struct{ Count int64 }
		ActualQPS         float64
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if res.RetCodes["200"] == 0 || res.RetCodes["200"] != res.DurationHistogram.Count {
		t.Fatalf("fortio: %d requests, return codes %v: some failed during %d config swaps", res.DurationHistogram.Count, res.RetCodes, swaps.Load())
	}
	t.Logf("%d requests at %.0f qps, all 200, across %d config swaps", res.DurationHistogram.Count, res.ActualQPS, swaps.Load())
}

// TestRouteWaitsForItsClusters delivers a route change before the new
// cluster and its endpoints (the order ADS can produce when a route moves to
// new subsets): the old route keeps serving until the cluster is usable.
func TestRouteWaitsForItsClusters(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	aAddr, bAddr := strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")
	port := freePort(t)
	r := startProxy(t, `node: {id: warm-test}`, nil)
	p := r.p
	// Updates come once Run has started, as from the xDS client.
	waitFor(t, 5*time.Second, "proxy running", p.Ready)
	deliver := func(res map[resourcev3.Type][]types.Resource, types ...resourcev3.Type) {
		t.Helper()
		for _, typ := range types {
			set := map[string]*anypb.Any{}
			for _, x := range res[typ] {
				a, err := anypb.New(x)
				if err != nil {
					t.Fatal(err)
				}
				set[cachev3.GetResourceName(x)] = a
			}
			if err := p.OnUpdate(typ, set); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	c := &http.Client{}
	v1 := mesh(t, port, map[string]uint32{"old": 100}, map[string][]string{"old": {aAddr}})
	deliver(v1, resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType)
	waitFor(t, 5*time.Second, "listener", func() bool { _, err := get(t, c, url); return err == nil })

	v2 := mesh(t, port, map[string]uint32{"new": 100}, map[string][]string{"old": {aAddr}, "new": {bAddr}})
	deliver(v2, resourcev3.RouteType)
	if e, err := get(t, c, url); err != nil || e.Name != "a" {
		t.Fatalf("route to an unknown cluster went live: %+v %v", e, err)
	}
	deliver(v2, resourcev3.ClusterType)
	if e, err := get(t, c, url); err != nil || e.Name != "a" {
		t.Fatalf("route to a cluster without endpoints went live: %+v %v", e, err)
	}
	deliver(v2, resourcev3.EndpointType)
	if e, err := get(t, c, url); err != nil || e.Name != "b" {
		t.Fatalf("route did not go live once its cluster was ready: %+v %v", e, err)
	}
}
