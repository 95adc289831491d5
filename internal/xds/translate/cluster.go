package translate

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/registry"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

var (
	// Marshalled once: every HTTP/2 cluster carries the same options.
	http2Options = mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	// PassthroughCluster speaks whatever the downstream spoke, as in Istio.
	downstreamOptions = mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}},
	})
	adsSource = &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
)

func mustAny(m proto.Message) *anypb.Any {
	// Deterministic: maps (a Struct's fields, RBAC policies, JWT
	// providers) in a fixed order, so that an unchanged configuration
	// serializes to the same bytes. Otherwise every push would look like
	// a change to proxies, which drain connections whose filter chain
	// changed.
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

// copyAny gives each resource its own Any, sharing the immutable bytes.
func copyAny(a *anypb.Any) *anypb.Any { return &anypb.Any{TypeUrl: a.TypeUrl, Value: a.Value} }

func (b *builder) connectTimeout() *durationpb.Duration { return durationpb.New(b.mesh.ConnectTimeout) }

func (b *builder) buildClusters() {
	if b.proxy.Type != GRPC {
		b.shared(nil, nil, b.catchAllClusters)
	}
	checked := map[*drEntry]bool{}
	for _, svc := range b.services {
		dr := b.destinationRule(svc.Hostname, svc.Namespace)
		if dr != nil && !checked[dr] {
			checked[dr] = true
			b.checkDestinationRule(dr)
		}
		b.shared(svc, dr, func() {
			meta := b.serviceMetadata(svc)
			for _, port := range svc.Ports {
				if port.Protocol == registry.UDP {
					continue
				}
				b.outboundCluster(svc, meta, port, nil, dr)
				if dr != nil {
					for _, ss := range dr.spec.GetSubsets() {
						b.outboundCluster(svc, meta, port, ss, dr)
					}
				}
			}
		})
	}
	if b.proxy.Type == Sidecar && !b.outboundOnly {
		b.inboundClusters()
	}
}

// catchAllClusters are where routes for hosts outside the registry go.
// Proxyless gRPC gets neither: its clients dial registry hosts only, and
// grpc-go supports neither STATIC nor ORIGINAL_DST clusters.
func (b *builder) catchAllClusters() {
	b.res.Clusters = append(b.res.Clusters,
		&clusterv3.Cluster{
			Name:                 BlackHoleCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       b.connectTimeout(),
		},
		&clusterv3.Cluster{
			Name:                          PassthroughCluster,
			ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:                      clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:                b.connectTimeout(),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: copyAny(downstreamOptions)},
		})
}

func (b *builder) outboundCluster(svc *registry.Service, meta *structpb.Value, port registry.Port, subset *networking.Subset, dr *drEntry) {
	if subset != nil && subset.GetName() == "" {
		return
	}
	name := OutboundCluster(port.Number, subset.GetName(), svc.Hostname)
	lb := effectiveLB(dr, subset, port.Number)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: b.connectTimeout(),
		LbPolicy:       lbPolicy(lb),
		Metadata:       clusterMetadata(meta, subset, dr),
	}
	if b.proxy.Type == GRPC {
		c.LbPolicy = b.grpcLBPolicy(lb, dr)
	} else if ch := lb.GetConsistentHash(); ch != nil {
		applyConsistentHash(c, ch)
	}
	eps := svc.Endpoints(port.Number, subset.GetLabels())
	switch svc.Resolution {
	case networking.ServiceEntry_STATIC:
		b.edsCluster(c, eps)
	case networking.ServiceEntry_NONE:
		if len(svc.Endpoints(port.Number, nil)) > 0 {
			b.edsCluster(c, eps)
			break
		}
		// No endpoints: forward to the address the client dialled.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(svc.Endpoints(port.Number, nil)) == 0 {
			if registry.IsWildcard(svc.Hostname) {
				b.warnf(nil, "cluster %s: a wildcard host cannot be resolved by DNS; skipped", name)
				return
			}
			// Without endpoints the host itself is resolved.
			eps = []*registry.Endpoint{{Address: svc.Hostname, Port: targetPort(port), Weight: 1, Healthy: true}}
		}
		if len(eps) == 0 {
			b.warnf(nil, "cluster %s: subset %q selects no endpoint and a DNS cluster needs one; skipped", name, subset.GetName())
			return
		}
		// The proxy resolves DNS targets without looking at health: leave
		// unhealthy workloads out unless none is healthy (Envoy's panic mode).
		if healthy := healthyOnly(eps); len(healthy) > 0 {
			eps = healthy
		}
		t := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN {
			if len(eps) == 1 {
				t = clusterv3.Cluster_LOGICAL_DNS
			} else {
				b.warnf(nil, "cluster %s: DNS_ROUND_ROBIN takes one endpoint, got %d; using STRICT_DNS", name, len(eps))
			}
		} else if len(svc.Endpoints(port.Number, nil)) == 0 {
			// One host name, resolved per connection as Envoy advises for
			// large external services.
			t = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: t}
		c.LoadAssignment = loadAssignment(name, eps)
	default:
		b.warnf(nil, "cluster %s: resolution %s is not supported yet; skipped", name, svc.Resolution)
		return
	}
	if b.proxy.Type == GRPC {
		if !b.grpcClusterType(c) {
			return
		}
	} else {
		if port.Protocol.IsHTTP2() {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: copyAny(http2Options)}
		}
		applyResilience(c, dr, subset, port.Number)
		if !b.upstreamTLS(c, svc, dr, subset, port, eps) {
			return
		}
	}
	b.res.Clusters = append(b.res.Clusters, c)
}

func targetPort(p registry.Port) uint32 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Number
}

func healthyOnly(eps []*registry.Endpoint) []*registry.Endpoint {
	var out []*registry.Endpoint
	for _, e := range eps {
		if e.Healthy {
			out = append(out, e)
		}
	}
	return out
}

// edsCluster makes c an EDS cluster and adds its assignment. EDS needs IP
// addresses: other endpoints are left out.
func (b *builder) edsCluster(c *clusterv3.Cluster, eps []*registry.Endpoint) {
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: c.Name}
	ips := eps[:0:0]
	for _, e := range eps {
		if _, err := netip.ParseAddr(e.Address); err != nil {
			b.warnf(nil, "cluster %s: endpoint %q is not an IP address; left out", c.Name, e.Address)
			continue
		}
		ips = append(ips, e)
	}
	if b.proxy.Type == GRPC {
		ips = b.grpcEndpoints(c.Name, ips)
	}
	cla := loadAssignment(c.Name, ips)
	if b.proxy.Type == GRPC {
		grpcLocalities(cla)
	}
	b.res.Endpoints = append(b.res.Endpoints, cla)
}

// sidecarMetadata is Istio's marker for the mTLS transport socket match,
// shared by every endpoint that has a sidecar (read-only).
var sidecarMetadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
	"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
}}

// loadAssignment groups endpoints by locality (sorted), keeping their
// order within a locality. The endpoint messages are allocated in blocks:
// this is the translator's hottest path (one message tree per endpoint).
func loadAssignment(name string, eps []*registry.Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	n := len(eps)
	var (
		lbs     = make([]endpointv3.LbEndpoint, n)
		ids     = make([]endpointv3.LbEndpoint_Endpoint, n)
		ends    = make([]endpointv3.Endpoint, n)
		addrs   = make([]corev3.Address, n)
		sas     = make([]corev3.Address_SocketAddress, n)
		sockets = make([]corev3.SocketAddress, n)
		ports   = make([]corev3.SocketAddress_PortValue, n)
		weights = make([]wrapperspb.UInt32Value, n)
	)
	byLocality := map[string]*endpointv3.LocalityLbEndpoints{}
	var localities []string
	for i, e := range eps {
		l := byLocality[e.Locality]
		if l == nil {
			l = &endpointv3.LocalityLbEndpoints{Locality: parseLocality(e.Locality), LoadBalancingWeight: wrapperspb.UInt32(0)}
			byLocality[e.Locality] = l
			localities = append(localities, e.Locality)
		}
		ports[i].PortValue = e.Port
		sockets[i].Address, sockets[i].PortSpecifier = e.Address, &ports[i]
		sas[i].SocketAddress = &sockets[i]
		addrs[i].Address = &sas[i]
		ends[i].Address = &addrs[i]
		ids[i].Endpoint = &ends[i]
		weights[i].Value = e.Weight
		lb := &lbs[i]
		lb.HostIdentifier, lb.LoadBalancingWeight, lb.HealthStatus = &ids[i], &weights[i], corev3.HealthStatus_HEALTHY
		if !e.Healthy {
			lb.HealthStatus = corev3.HealthStatus_UNHEALTHY
		}
		if e.Sidecar {
			lb.Metadata = sidecarMetadata
		}
		l.LbEndpoints = append(l.LbEndpoints, lb)
		l.LoadBalancingWeight.Value += e.Weight
	}
	sort.Strings(localities)
	for _, l := range localities {
		cla.Endpoints = append(cla.Endpoints, byLocality[l])
	}
	return cla
}

func parseLocality(s string) *corev3.Locality {
	if s == "" {
		return nil
	}
	parts := strings.SplitN(s, "/", 3)
	l := &corev3.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l
}

func socketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// serviceMetadata describes a service for telemetry and proxy-config, as
// Istio's filter_metadata.istio.services; shared by the service's clusters.
func (b *builder) serviceMetadata(svc *registry.Service) *structpb.Value {
	name := svc.Hostname
	if i := strings.IndexByte(name, '.'); i > 0 && strings.HasSuffix(name, ".svc."+b.mesh.DomainSuffix) {
		name = name[:i]
	}
	return structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		"host":      structpb.NewStringValue(svc.Hostname),
		"name":      structpb.NewStringValue(name),
		"namespace": structpb.NewStringValue(svc.Namespace),
	}})}})
}

func clusterMetadata(services *structpb.Value, subset *networking.Subset, dr *drEntry) *corev3.Metadata {
	fields := map[string]*structpb.Value{"services": services}
	if subset != nil {
		fields["subset"] = structpb.NewStringValue(subset.GetName())
	}
	if dr != nil {
		fields["config"] = structpb.NewStringValue(configPath(dr.obj.Meta.Namespace, "destination-rule", dr.obj.Meta.Name))
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: fields}}}
}

func configPath(ns, kind, name string) string {
	return "/apis/networking.istio.io/v1/namespaces/" + ns + "/" + kind + "/" + name
}

// effectiveLB applies Istio's MergeTrafficPolicy for the load balancer: a
// matching port-level setting replaces the rule's, a subset's policy
// replaces both, and the subset's own port-level setting comes last.
func effectiveLB(dr *drEntry, subset *networking.Subset, port uint32) *networking.LoadBalancerSettings {
	if dr == nil {
		return nil
	}
	pick := func(tp *networking.TrafficPolicy, lb *networking.LoadBalancerSettings) *networking.LoadBalancerSettings {
		if tp.GetLoadBalancer() != nil {
			lb = tp.GetLoadBalancer()
		}
		for _, pls := range tp.GetPortLevelSettings() {
			if pls.GetPort().GetNumber() == port {
				// Port-level settings do not inherit (Istio's docs).
				return pls.GetLoadBalancer()
			}
		}
		return lb
	}
	lb := pick(dr.spec.GetTrafficPolicy(), nil)
	if tp := subset.GetTrafficPolicy(); tp != nil {
		lb = pick(tp, lb)
	}
	return lb
}

// lbPolicy maps Istio's simple policies; anything else gets Istio's
// default, LEAST_REQUEST.
func lbPolicy(lb *networking.LoadBalancerSettings) clusterv3.Cluster_LbPolicy {
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		return clusterv3.Cluster_ROUND_ROBIN
	case networking.LoadBalancerSettings_RANDOM:
		return clusterv3.Cluster_RANDOM
	}
	return clusterv3.Cluster_LEAST_REQUEST
}

// applyConsistentHash is the consistentHash case of Istio's
// applyLoadBalancer: MAGLEV when asked (table_size when set), otherwise
// RING_HASH with minimum_ring_size (ringHash's, else the deprecated
// minimumRingSize, else Envoy's default 1024).
func applyConsistentHash(c *clusterv3.Cluster, ch *networking.LoadBalancerSettings_ConsistentHashLB) {
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		if n := ch.GetMaglev().GetTableSize(); n != 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(n)}}
		}
	case ch.GetRingHash() != nil:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		if n := ch.GetRingHash().GetMinimumRingSize(); n != 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
		}
	default:
		n := uint64(1024)
		if ch.GetMinimumRingSize() != 0 {
			n = ch.GetMinimumRingSize()
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
	}
}

// hashPolicy is Istio's consistentHashToHashPolicy for the destination's
// effective load balancer settings, nil without consistentHash.
func (b *builder) hashPolicy(vs *vsEntry, d *networking.Destination, port uint32) []*routev3.RouteAction_HashPolicy {
	if b.proxy.Type == GRPC {
		return nil
	}
	host := b.resolveHost(d.GetHost(), vs.obj.Meta.Namespace)
	svc := b.reg.Lookup(host, b.proxy.Namespace)
	if svc == nil {
		return nil
	}
	switch {
	case d.GetPort() != nil:
		port = d.GetPort().GetNumber()
	case len(svc.Ports) == 1:
		port = svc.Ports[0].Number
	}
	return b.serviceHashPolicy(host, svc.Namespace, d.GetSubset(), port)
}

// serviceHashPolicy is the hash policy of the consistentHash that applies
// to host's port (and subset), nil when none.
func (b *builder) serviceHashPolicy(host, svcNS, subsetName string, port uint32) []*routev3.RouteAction_HashPolicy {
	if b.proxy.Type == GRPC {
		return nil
	}
	dr := b.destinationRule(host, svcNS)
	if dr == nil {
		return nil
	}
	var subset *networking.Subset
	if subsetName != "" {
		for _, s := range dr.spec.GetSubsets() {
			if s.GetName() == subsetName {
				subset = s
			}
		}
		if subset == nil {
			return nil
		}
	}
	ch := effectiveLB(dr, subset, port).GetConsistentHash()
	if ch == nil {
		return nil
	}
	hp := &routev3.RouteAction_HashPolicy{}
	switch {
	case ch.GetHttpHeaderName() != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()}}
	case ch.GetHttpCookie() != nil:
		ck := ch.GetHttpCookie()
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: ck.GetName(), Path: ck.GetPath(), Ttl: ck.GetTtl()}}
	case ch.GetUseSourceIp():
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
	case ch.GetHttpQueryParameterName() != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: ch.GetHttpQueryParameterName()}}
	default:
		return nil
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// checkDestinationRule reports the traffic policy fields the proxy cannot
// carry out yet.
func (b *builder) checkDestinationRule(dr *drEntry) {
	b.checkPolicy(dr, "trafficPolicy", dr.spec.GetTrafficPolicy())
	for i, s := range dr.spec.GetSubsets() {
		if s.GetName() == "" {
			b.warnf(dr.obj, "subsets[%d]: a subset needs a name; skipped", i)
		}
		b.checkPolicy(dr, fmt.Sprintf("subsets[%d].trafficPolicy", i), s.GetTrafficPolicy())
	}
	if dr.spec.GetWorkloadSelector() != nil {
		b.warnf(dr.obj, "workloadSelector: not translated yet: the rule applies to every proxy that sees it")
	}
}

func (b *builder) checkPolicy(dr *drEntry, path string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	check := func(path string, p policyPart) {
		b.checkResilience(dr, path, p.GetConnectionPool(), p.GetOutlierDetection())
		lb := p.GetLoadBalancer()
		switch {
		case lb.GetConsistentHash() != nil && b.proxy.Type == GRPC:
			b.warnf(dr.obj, "%s.loadBalancer.consistentHash: not translated for proxyless gRPC", path)
		case lb.GetConsistentHash().GetHttpCookie().GetAttributes() != nil:
			b.warnf(dr.obj, "%s.loadBalancer.consistentHash.httpCookie.attributes: not translated: the proxy sets no cookie attributes", path)
		case lb.GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH:
			b.warnf(dr.obj, "%s.loadBalancer.simple: PASSTHROUGH not translated yet (ORIGINAL_DST); LEAST_REQUEST used", path)
		}
		if lb.GetLocalityLbSetting() != nil {
			b.warnf(dr.obj, "%s.loadBalancer.localityLbSetting: not translated: the proxy has no locality-aware balancing yet", path)
		}
		if lb.GetWarmup() != nil || lb.GetWarmupDurationSecs() != nil {
			b.warnf(dr.obj, "%s.loadBalancer.warmup: not translated: the proxy has no slow start yet", path)
		}
	}
	check(path, tp)
	for i, pls := range tp.GetPortLevelSettings() {
		check(fmt.Sprintf("%s.portLevelSettings[%d]", path, i), pls)
	}
	if tp.GetTunnel() != nil {
		b.warnf(dr.obj, "%s.tunnel: not translated: the proxy has no CONNECT tunnelling yet", path)
	}
	if tp.GetProxyProtocol() != nil {
		b.warnf(dr.obj, "%s.proxyProtocol: not translated: the proxy has no PROXY protocol yet", path)
	}
	if tp.GetRetryBudget() != nil {
		b.warnf(dr.obj, "%s.retryBudget: not translated: the proxy has no retry budgets yet", path)
	}
}

// inboundClusters forward to the local application.
func (b *builder) inboundClusters() {
	seen := map[uint32]bool{}
	for _, in := range b.proxy.Inbound {
		if seen[in.Port] {
			continue
		}
		seen[in.Port] = true
		name := InboundCluster(in.Port)
		target := in.TargetPort
		if target == 0 {
			target = in.Port
		}
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       b.connectTimeout(),
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.0.1", target)}}}},
			}}},
		}
		if in.Protocol.IsHTTP2() {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: copyAny(http2Options)}
		}
		b.res.Clusters = append(b.res.Clusters, c)
	}
}

// checkResilience reports the connectionPool and outlierDetection fields
// applyResilience does not translate.
func (b *builder) checkResilience(dr *drEntry, path string, cp *networking.ConnectionPoolSettings, od *networking.OutlierDetection) {
	if b.proxy.Type == GRPC && (cp != nil || od != nil) {
		b.warnf(dr.obj, "%s: connectionPool and outlierDetection are not translated for proxyless gRPC", path)
		return
	}
	if tcp := cp.GetTcp(); tcp != nil {
		if tcp.GetTcpKeepalive() != nil || tcp.GetMaxConnectionDuration() != nil || tcp.GetIdleTimeout() != nil {
			b.warnf(dr.obj, "%s.connectionPool.tcp: only maxConnections and connectTimeout are translated", path)
		}
	}
	if h := cp.GetHttp(); h != nil {
		if h.GetH2UpgradePolicy() != 0 || h.GetUseClientProtocol() || h.GetMaxConcurrentStreams() != 0 || h.GetHttp2KeepAlive() != nil {
			b.warnf(dr.obj, "%s.connectionPool.http: only http1MaxPendingRequests, http2MaxRequests, maxRetries, idleTimeout and maxRequestsPerConnection are translated", path)
		}
	}
	if od.GetConsecutiveErrors() != 0 {
		b.warnf(dr.obj, "%s.outlierDetection.consecutiveErrors: deprecated, not translated; use consecutive5xxErrors", path)
	}
	if len(od.GetOutlierDetectionHttpErrorCodes()) > 0 {
		b.warnf(dr.obj, "%s.outlierDetection.outlierDetectionHttpErrorCodes: not translated", path)
	}
}
