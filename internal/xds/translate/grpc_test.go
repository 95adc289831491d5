package translate

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// checkGRPCAccepts checks a proxyless gRPC view against what grpc-go's xDS
// client requires (its xdsresource unmarshalling: gRFCs A27, A28, A31),
// where it would NACK a resource or never find one. The conformance test
// with a real grpc-go client is in internal/controlplane.
func checkGRPCAccepts(t *testing.T, r *Resources) {
	t.Helper()
	type validator interface{ ValidateAll() error }
	valid := func(kind, name string, m proto.Message) {
		if err := m.(validator).ValidateAll(); err != nil {
			t.Errorf("%s %q: Envoy validation: %v", kind, name, err)
		}
	}
	routes := map[string]map[string]bool{} // route configuration -> its domains
	referenced := map[string]bool{}
	for _, rc := range r.Routes {
		valid("route", rc.GetName(), rc)
		routes[rc.GetName()] = map[string]bool{}
		for _, vh := range rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				routes[rc.GetName()][d] = true
			}
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if a == nil {
					continue
				}
				if n := a.GetRetryPolicy().GetNumRetries(); n != nil && n.GetValue() < 1 {
					t.Errorf("route %q: retry_policy.num_retries %d: gRPC requires >= 1", rt.GetName(), n.GetValue())
				}
				if a.GetMaxGrpcTimeout() != nil || a.GetMaxStreamDuration() == nil {
					t.Errorf("route %q: the timeout must be max_stream_duration, the field gRPC reads", rt.GetName())
				}
				if wc := a.GetWeightedClusters(); wc != nil {
					total := uint64(0)
					for _, c := range wc.GetClusters() {
						total += uint64(c.GetWeight().GetValue())
					}
					if total == 0 {
						t.Errorf("route %q: weighted_clusters without weight", rt.GetName())
					}
				}
			}
		}
		routeClusters(rc, referenced)
	}
	for _, l := range r.Listeners {
		valid("listener", l.GetName(), l)
		if l.GetApiListener() == nil || len(l.GetFilterChains()) > 0 || l.GetAddress() != nil {
			t.Errorf("listener %q: want an api_listener only (gRPC takes any other as a server listener)", l.GetName())
			continue
		}
		m := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(m); err != nil {
			t.Errorf("listener %q: api_listener is not an HttpConnectionManager: %v", l.GetName(), err)
			continue
		}
		valid("listener", l.GetName()+" (HCM)", m)
		if m.GetXffNumTrustedHops() != 0 || len(m.GetOriginalIpDetectionExtensions()) > 0 {
			t.Errorf("listener %q: gRPC rejects xff_num_trusted_hops and original_ip_detection_extensions", l.GetName())
		}
		rds := m.GetRds()
		if rds.GetConfigSource().GetAds() == nil || rds.GetRouteConfigName() == "" {
			t.Errorf("listener %q: want RDS over ADS, got %v", l.GetName(), m.GetRouteSpecifier())
		}
		domains, ok := routes[rds.GetRouteConfigName()]
		if !ok {
			t.Errorf("listener %q: route configuration %q is missing", l.GetName(), rds.GetRouteConfigName())
		} else if !domains[l.GetName()] {
			// gRPC picks the virtual host by the dialed target, the listener name.
			t.Errorf("listener %q: no virtual host of %q has it as a domain", l.GetName(), rds.GetRouteConfigName())
		}
		fs := m.GetHttpFilters()
		if len(fs) == 0 || !fs[len(fs)-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
			t.Errorf("listener %q: the last http filter must be the router", l.GetName())
		}
	}
	defined := map[string]bool{}
	eds := map[string]bool{}
	for _, e := range r.Endpoints {
		valid("cluster_load_assignment", e.GetClusterName(), e)
		eds[e.GetClusterName()] = true
		seen := map[string]bool{}
		for _, l := range e.GetEndpoints() {
			if l.GetLocality() == nil {
				t.Errorf("endpoints %q: a locality without identity (gRPC NACKs it)", e.GetClusterName())
			}
			if l.GetLoadBalancingWeight().GetValue() == 0 {
				t.Errorf("endpoints %q: locality weight 0 (gRPC ignores the locality)", e.GetClusterName())
			}
			for _, ep := range l.GetLbEndpoints() {
				if w := ep.GetLoadBalancingWeight(); w != nil && w.GetValue() == 0 {
					t.Errorf("endpoints %q: endpoint weight 0 (gRPC NACKs it)", e.GetClusterName())
				}
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
				if seen[addr] {
					t.Errorf("endpoints %q: %s listed twice (gRPC NACKs it)", e.GetClusterName(), addr)
				}
				seen[addr] = true
			}
		}
	}
	for _, c := range r.Clusters {
		valid("cluster", c.GetName(), c)
		defined[c.GetName()] = true
		switch c.GetLbPolicy() {
		case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RING_HASH:
		default:
			t.Errorf("cluster %q: lb_policy %s: gRPC rejects it", c.GetName(), c.GetLbPolicy())
		}
		switch c.GetType() {
		case clusterv3.Cluster_EDS:
			if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
				t.Errorf("cluster %q: EDS must come over ADS", c.GetName())
			}
			if !eds[c.GetEdsClusterConfig().GetServiceName()] {
				t.Errorf("cluster %q: no ClusterLoadAssignment", c.GetName())
			}
		case clusterv3.Cluster_LOGICAL_DNS:
			if n := len(c.GetLoadAssignment().GetEndpoints()); n != 1 || len(c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()) != 1 {
				t.Errorf("cluster %q: LOGICAL_DNS needs exactly one endpoint", c.GetName())
			}
		default:
			t.Errorf("cluster %q: type %s: gRPC cannot use it", c.GetName(), c.GetType())
		}
	}
	for name := range referenced {
		if !defined[name] && !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "503 (NC)") || strings.Contains(w, name) }) {
			t.Errorf("cluster %q is referenced but not defined, and no warning says so", name)
		}
	}
}

// The gRPC view reuses the sidecar's routes: the same VirtualService gives
// the same matches and weighted clusters, only the timeout field differs.
func TestGRPCRoutesAreTheSidecars(t *testing.T) {
	in := Input{
		Registry: registry.Build([]*config.Object{httpService("default", "reviews.default.svc.cluster.local", 9080)}, nil, nil),
		VirtualServices: []*config.Object{object(config.VirtualService, "default", "reviews", &networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{{
				Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"x-canary": {MatchType: &networking.StringMatch_Exact{Exact: "yes"}}}}},
				Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews"}}},
			}},
		})},
	}
	side, err := Translate(in, sidecar("default"))
	if err != nil {
		t.Fatal(err)
	}
	grpc, err := Translate(in, Proxy{ID: "grpc", Type: GRPC, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(vhost(t, side, "reviews.default.svc.cluster.local:9080").GetRoutes()[0]).(*routev3.Route)
	want.GetRoute().MaxGrpcTimeout = nil
	want.GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: want.GetRoute().GetTimeout()}
	got := vhost(t, grpc, "reviews.default.svc.cluster.local:9080").GetRoutes()[0]
	if !proto.Equal(got, want) {
		t.Errorf("gRPC route:\n%v\nwant the sidecar's:\n%v", got, want)
	}
	var names []string
	for _, l := range grpc.Listeners {
		names = append(names, l.GetName())
	}
	// Single-port service: the port may be left out of the target.
	wantNames := []string{"reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local",
		"reviews.default.svc.cluster.local:9080", "reviews.default.svc:9080", "reviews.default:9080", "reviews:9080"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("listeners %q, want %q", names, wantNames)
	}
}
