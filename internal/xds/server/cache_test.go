package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// edsGen serves EDS clusters a, b, c whose assignments list the address
// the test sets for each; the view (clusters and assignments) is one pair
// of sets shared by every proxy, as the control plane's views are.
type edsGen struct {
	mu    sync.Mutex
	addrs map[string]string
	sets  Config
}

var edsNames = []string{"a", "b", "c"}

func (g *edsGen) set(name, addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.addrs[name] = addr
	var clusters, clas []types.Resource
	for _, n := range edsNames {
		clusters = append(clusters, &clusterv3.Cluster{Name: n, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{}}}})
		clas = append(clas, &endpointv3.ClusterLoadAssignment{ClusterName: n, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: g.addrs[n], PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}}}}}},
		}}}}})
	}
	g.sets = Config{resourcev3.ClusterType: {MustSet(resourcev3.ClusterType, clusters...)}, resourcev3.EndpointType: {MustSet(resourcev3.EndpointType, clas...)}}
}

func (g *edsGen) Generate(*corev3.Node, uint64) (Config, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sets, nil
}

func newEDSGen() *edsGen {
	g := &edsGen{addrs: map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}}
	g.set("a", "10.0.0.1")
	return g
}

func dialADS(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// sotwClient is a bare SotW stream the test drives request by request.
type sotwClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discoveryv3.DiscoveryResponse
}

func newSotwClient(t *testing.T, addr, id string) *sotwClient {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dialADS(t, addr)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: stream, resps: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			c.resps <- r
		}
	}()
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *sotwClient) send(r *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(r); err != nil {
		c.t.Fatal(err)
	}
}

// next waits for a response.
func (c *sotwClient) next() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatal("no response")
		return nil
	}
}

// none checks that no response arrives for a while.
func (c *sotwClient) none(what string) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("%s: unexpected %s response version %s with %d resources", what, shortType(r.GetTypeUrl()), r.GetVersionInfo(), len(r.GetResources()))
	case <-time.After(300 * time.Millisecond):
	}
}

func names(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *clusterv3.Cluster:
			out = append(out, m.GetName())
		case *endpointv3.ClusterLoadAssignment:
			out = append(out, m.GetClusterName())
		default:
			t.Fatalf("unexpected %T", m)
		}
	}
	slices.Sort(out)
	return out
}

// TestSotWSendsOnlyChangedEndpoints: an endpoint change sends one load
// assignment on EDS and nothing on CDS; a NACK is not answered with the
// rejected version again, and the next version resends everything.
func TestSotWSendsOnlyChangedEndpoints(t *testing.T) {
	gen := newEDSGen()
	s, addr := startServer(t, gen, nil)
	c := newSotwClient(t, addr, "p")
	cds := c.next()
	if got := names(t, cds); !slices.Equal(got, edsNames) || cds.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("first response %s %v", shortType(cds.GetTypeUrl()), got)
	}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()})
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: edsNames})
	eds := c.next()
	if got := names(t, eds); !slices.Equal(got, edsNames) {
		t.Fatalf("first EDS response: %v, want all", got)
	}
	ack := func(r *discoveryv3.DiscoveryResponse) {
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: edsNames})
	}
	ack(eds)
	c.none("after the ACKs")

	gen.set("b", "10.0.0.22")
	s.Push("test")
	eds2 := c.next()
	if got := names(t, eds2); eds2.GetTypeUrl() != resourcev3.EndpointType || !slices.Equal(got, []string{"b"}) || eds2.GetVersionInfo() == eds.GetVersionInfo() {
		t.Fatalf("after changing b: %s version %s %v, want EDS with b alone", shortType(eds2.GetTypeUrl()), eds2.GetVersionInfo(), got)
	}
	ack(eds2)
	c.none("after an endpoint change (CDS unchanged)")

	// A NACK of the next version: not sent again; the one after is sent
	// whole, since the client kept its older assignments.
	gen.set("c", "10.0.0.33")
	s.Push("test")
	eds3 := c.next()
	if got := names(t, eds3); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after changing c: %v", got)
	}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: eds2.GetVersionInfo(), ResponseNonce: eds3.GetNonce(),
		ResourceNames: edsNames, ErrorDetail: status.New(codes.InvalidArgument, "rejected").Proto()})
	c.none("after a NACK")
	gen.set("a", "10.0.0.11")
	s.Push("test")
	eds4 := c.next()
	if got := names(t, eds4); !slices.Equal(got, edsNames) {
		t.Fatalf("after a NACK and a change: %v, want all", got)
	}
	ack(eds4)
	c.none("after the ACK")

	// A new stream of the same node with the current version still gets
	// everything it subscribes to.
	c2 := newSotwClient(t, addr, "p")
	if got := names(t, c2.next()); !slices.Equal(got, edsNames) {
		t.Fatalf("new stream, CDS: %v", got)
	}
	c2.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: eds4.GetVersionInfo(), ResourceNames: []string{"a", "b"}})
	if got := names(t, c2.next()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("new stream, EDS: %v", got)
	}
}

// TestDeltaSendsOnlyChangedEndpoints: the same over delta xDS.
func TestDeltaSendsOnlyChangedEndpoints(t *testing.T) {
	gen := newEDSGen()
	s, addr := startServer(t, gen, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dialADS(t, addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "d"}, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: edsNames}); err != nil {
		t.Fatal(err)
	}
	recv := func() ([]string, *discoveryv3.DeltaDiscoveryResponse) {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, res := range r.GetResources() {
			got = append(got, res.GetName())
		}
		slices.Sort(got)
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: r.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return got, r
	}
	if got, _ := recv(); !slices.Equal(got, edsNames) {
		t.Fatalf("first delta response %v", got)
	}
	gen.set("b", "10.0.0.22")
	s.Push("test")
	got, r := recv()
	if !slices.Equal(got, []string{"b"}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("after changing b: %v removed %v", got, r.GetRemovedResources())
	}
}

func TestInternerSharesSets(t *testing.T) {
	a := &clusterv3.Cluster{Name: "a"}
	b := &clusterv3.Cluster{Name: "b"}
	in := NewInterner()
	s1, err := in.NewSet(resourcev3.ClusterType, []types.Resource{a, b})
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := in.NewSet(resourcev3.ClusterType, []types.Resource{a, b})
	if s1 != s2 {
		t.Error("the same messages gave two sets")
	}
	s3, _ := in.NewSet(resourcev3.ClusterType, []types.Resource{b})
	if s3 == s1 || s3.items[0] != s1.items[1] {
		t.Error("a message was serialized twice")
	}
	next := in.Next()
	if s4, _ := next.NewSet(resourcev3.ClusterType, []types.Resource{a, b}); s4 != s1 {
		t.Error("the next generation did not reuse the set")
	}
	// Equal content from other messages: another set, same fingerprint.
	s5, _ := next.NewSet(resourcev3.ClusterType, []types.Resource{proto.Clone(a), proto.Clone(b)})
	if s5 == s1 || s5.hash != s1.hash {
		t.Error("equal content: want a new set with the same hash")
	}
	if _, err := in.NewSet(resourcev3.ClusterType, []types.Resource{a, a}); err == nil {
		t.Error("a name twice was accepted")
	}
	if _, err := NewSet(resourcev3.EndpointType, []types.Resource{a}); err == nil {
		t.Error("a cluster in an EDS set was accepted")
	}
}

func TestFlowBoundsBytesInFlight(t *testing.T) {
	f := newFlow(100, time.Minute)
	f.admit("a", 60)
	f.sent("a", "t1", "1")
	f.admit("a", 60) // a holds bytes already: admitted
	f.sent("a", "t2", "2")
	admitted := make(chan struct{})
	go func() {
		f.admit("b", 10)
		close(admitted)
	}()
	select {
	case <-admitted:
		t.Fatal("b admitted over the limit")
	case <-time.After(50 * time.Millisecond):
	}
	f.replied("a", "t1", "1")
	f.replied("a", "t2", "stale") // not the nonce sent: still pending
	select {
	case <-admitted:
		t.Fatal("b admitted before a answered everything")
	case <-time.After(50 * time.Millisecond):
	}
	f.replied("a", "t2", "2")
	select {
	case <-admitted:
	case <-time.After(time.Second):
		t.Fatal("b not admitted once a had answered")
	}
	f.gone("b")
	if f.used != 0 {
		t.Errorf("%d bytes still counted", f.used)
	}

	// A client that never answers holds others back only for the wait bound.
	g := newFlow(10, 50*time.Millisecond)
	g.admit("x", 10)
	start := time.Now()
	g.admit("y", 10)
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("waited %v, want about the bound", d)
	}
}
