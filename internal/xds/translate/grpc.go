package translate

import (
	"net"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/registry"
)

// The proxyless gRPC view (Proxy.Type GRPC), what Istio's "grpc" generator
// serves. A grpc-go client dialing xds:///<target> asks for the Listener
// named <target> (host or host:port, exactly as dialed), then the route
// configuration that listener names, then the clusters its routes use and
// their endpoints, and connects to those endpoints itself. So:
//
//   - LDS: per visible HTTP service port (as on the HTTP_PROXY listener:
//     HTTP, HTTP2, GRPC, GRPC-Web or unknown protocol), one api_listener per
//     name a client may dial: "<host>:<port>", the short forms of the host
//     in the proxy's namespace and VIPs with the port (the sidecar's
//     virtual host domains), and the same names without the port when the
//     service has only that port. Each is an HttpConnectionManager reading
//     RDS over ADS with the router filter, which gRPC requires last.
//   - RDS: one route configuration per service port, named as Istio names
//     it, "outbound|<port>||<host>", with one virtual host whose domains are
//     the listener names (gRPC matches them against the dialed target) and
//     the sidecar's routes for that port: the same VirtualService
//     translation (matches, weights, subsets, retries). Route timeouts are
//     set as max_stream_duration, the field gRPC reads (gRFC A31).
//   - CDS: the sidecar's outbound clusters where gRPC can use them: EDS and
//     LOGICAL_DNS. ORIGINAL_DST (resolution NONE without endpoints) and
//     STRICT_DNS are left out with a warning, as are the catch-all and
//     inbound clusters. The load balancer is ROUND_ROBIN unless a
//     DestinationRule asks for LEAST_REQUEST (Istio's grpc default; gRPC has
//     no RANDOM).
//   - EDS: the sidecar's assignments, with an empty locality where there is
//     none and duplicate addresses dropped: grpc-go rejects the whole
//     assignment otherwise.
//
// Not translated for gRPC yet: fault injection (gRPC's fault filter, gRFC
// A33), ring hash, circuit breaking, outlier detection, TLS, and the
// server side (xds-enabled gRPC servers' inbound listeners).

// buildGRPCListeners adds the api_listeners and their route configurations.
func (b *builder) buildGRPCListeners() {
	d := b.newDomains()
	for _, svc := range b.services {
		if registry.IsWildcard(svc.Hostname) {
			continue // a dial target is one name
		}
		var ports []uint32
		for _, p := range svc.Ports {
			if httpPort(p, true) {
				ports = append(ports, p.Number)
			}
		}
		for _, port := range ports {
			names := d.claim(svc, port, true, len(ports) == 1)
			if len(names) == 0 {
				continue
			}
			rds := OutboundCluster(port, "", svc.Hostname)
			b.res.Routes = append(b.res.Routes, &routev3.RouteConfiguration{
				Name: rds,
				VirtualHosts: []*routev3.VirtualHost{{
					Name: svc.Hostname + ":" + strconv.FormatUint(uint64(port), 10), Domains: names,
					Routes: b.sidecarRoutes(svc, port),
				}},
			})
			for _, name := range names {
				b.res.Listeners = append(b.res.Listeners, apiListener(name, rds))
			}
		}
	}
}

// apiListener is a client-side listener: no address or filter chains, an
// HttpConnectionManager the client runs in-process.
func apiListener(name, rds string) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource, RouteConfigName: rds,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: copyAny(routerFilter)}}},
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(m)}}
}

// grpcLBPolicy maps a DestinationRule's simple policy to one grpc-go
// accepts (it rejects a cluster with any other).
func (b *builder) grpcLBPolicy(lb *networking.LoadBalancerSettings, dr *drEntry) clusterv3.Cluster_LbPolicy {
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_LEAST_REQUEST:
		return clusterv3.Cluster_LEAST_REQUEST
	case networking.LoadBalancerSettings_RANDOM:
		if dr != nil {
			b.warnf(dr.obj, "loadBalancer.simple: RANDOM is not supported by proxyless gRPC; ROUND_ROBIN used")
		}
	}
	return clusterv3.Cluster_ROUND_ROBIN
}

// grpcClusterType reports whether gRPC can use the cluster's discovery type.
func (b *builder) grpcClusterType(c *clusterv3.Cluster) bool {
	switch t := c.GetType(); t {
	case clusterv3.Cluster_EDS, clusterv3.Cluster_LOGICAL_DNS:
		return true
	default:
		b.warnf(nil, "cluster %s: proxyless gRPC cannot use cluster type %s (it needs endpoints, or one DNS name); skipped", c.GetName(), t)
		return false
	}
}

// grpcEndpoints drops repeated addresses (two WorkloadEntries for one
// address and port): grpc-go refuses an assignment listing one twice.
func (b *builder) grpcEndpoints(cluster string, eps []*registry.Endpoint) []*registry.Endpoint {
	seen := make(map[string]bool, len(eps))
	out := eps[:0:0]
	for _, e := range eps {
		addr := net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.Port), 10))
		if seen[addr] {
			b.warnf(nil, "cluster %s: endpoint %s is listed twice; the first one kept for gRPC", cluster, addr)
			continue
		}
		seen[addr] = true
		out = append(out, e)
	}
	return out
}

// grpcLocalities gives every locality an identity: grpc-go rejects an
// assignment with a locality without one (Envoy takes it as empty).
func grpcLocalities(cla *endpointv3.ClusterLoadAssignment) {
	for _, l := range cla.GetEndpoints() {
		if l.Locality == nil {
			l.Locality = &corev3.Locality{}
		}
	}
}
