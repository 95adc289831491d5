// Package translate turns Istio configuration and the service registry into
// the Envoy v3 resources (LDS, RDS, CDS, EDS) of one proxy. Translate is a
// pure function: no clock, no randomness, no I/O; its output is sorted so
// that the same input always gives byte-identical resources.
//
// Names follow Istio so that istioctl habits carry over: clusters
// "outbound|<port>|<subset>|<host>", "inbound|<port>||", "BlackHoleCluster",
// "PassthroughCluster"; listeners "<ip>_<port>"; route configurations
// "http_proxy" (the HTTP_PROXY listener, as Istio names the route of a
// Sidecar egress listener with protocol HTTP_PROXY), "<port>" (per-port
// outbound listeners) and "http.<port>" (gateways).
//
// Only what the amime proxy implements is emitted (see proxy.Rules); Istio
// settings the proxy cannot carry out yet are left out and reported in
// Resources.Warnings, one line per object and field. VirtualService routes
// are compiled with the proxy's route compiler before they are emitted, so
// one bad regex costs one route (and a warning), not the proxy's whole
// route table.
//
// Choices where Istio leaves room, or has no equivalent outside Kubernetes:
//   - The HTTP_PROXY route ("http_proxy") has one virtual host per service
//     port with the "host:port" forms of the hostname, its short names
//     (Istio's GenerateAltVirtualHosts for the proxy's namespace) and VIPs;
//     bare names only for port 80, since clients send the port otherwise.
//     Routes are built per port, so destination ports default correctly on
//     multi-port services (Istio's http_proxy leaves them to the caller).
//   - Unknown hosts: REGISTRY_ONLY answers 502 (block_all). ALLOW_ANY routes
//     to PassthroughCluster (ORIGINAL_DST) as Istio does; behind HTTP_PROXY
//     the original destination is the sidecar itself, so such requests fail
//     (503) until the proxy can forward by Host header. Declare external
//     hosts with a MESH_EXTERNAL ServiceEntry (DNS), or leave them out of
//     the proxy with NO_PROXY.
//   - Ports of unknown protocol are HTTP on the HTTP_PROXY listener and TCP
//     on per-port listeners (Istio would sniff).
//   - Inbound: one listener per workload port on the proxy's first IP, HTTP
//     ports with inline routes to inbound|<port>|| (STATIC 127.0.0.1:<target>).
//   - Unhealthy endpoints stay in EDS as UNHEALTHY; DNS clusters list only
//     healthy targets (unless none is).
//
// Proxyless gRPC (Proxy.Type GRPC, Istio's GENERATOR=grpc) gets the same
// routes and clusters through the same builders, shaped for grpc-go's xDS
// client (gRFCs A27, A28, A31); see grpc.go for what differs.
package translate

import (
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Input is the configuration snapshot a proxy's view is computed from.
// ServiceEntries and WorkloadEntries reach the translator through Registry.
type Input struct {
	VirtualServices  []*config.Object
	DestinationRules []*config.Object
	Gateways         []*config.Object
	// Security policies (security.istio.io): they shape the inbound side
	// of sidecars and gateways (mTLS, JWT authentication, authorization).
	PeerAuthentications    []*config.Object
	RequestAuthentications []*config.Object
	AuthorizationPolicies  []*config.Object
	// Telemetries (telemetry.istio.io) shape tracing and access logs.
	Telemetries []*config.Object
	// JWKS holds the key sets the control plane fetched for
	// RequestAuthentication jwksUri (and issuer discovery), by URI. A URI
	// missing here gets a key set no token verifies against (fail closed).
	JWKS     map[string]string
	Registry *registry.Registry
	// Shared, when set, shares resources between translations (see
	// Shared); the results are the same.
	Shared *Shared
}

// ProxyType is Istio's node type.
type ProxyType int

const (
	// Sidecar runs beside one workload: outbound to every visible service,
	// inbound to its own workload.
	Sidecar ProxyType = iota
	// Router is a gateway: listeners come from the Gateways selecting it.
	Router
	// GRPC is a proxyless gRPC client (grpc-go's xds resolver; Istio's
	// GENERATOR=grpc): api_listeners named as the targets it dials, and
	// the endpoints it connects to directly. No sidecar, no inbound:
	// Proxy.Inbound and Proxy.Outbound are ignored.
	GRPC
)

// Proxy describes the proxy asking for configuration.
type Proxy struct {
	ID        string
	Type      ProxyType
	Namespace string
	Labels    map[string]string
	// IPs are the workload's addresses; the first one is where inbound
	// listeners bind (0.0.0.0 when empty).
	IPs            []string
	ServiceAccount string
	// Inbound lists the ports the proxy's own workload serves.
	Inbound  []InboundPort
	Outbound Outbound
	Mesh     Mesh
	// MTLS: the proxy holds a workload certificate (SDS secrets "default"
	// and "ROOTCA"). Its inbound side then applies PeerAuthentication and
	// its clusters originate mTLS to endpoints that have a sidecar (auto
	// mTLS); without one it is plaintext both ways.
	MTLS bool
}

// InboundPort is one port of the proxy's workload.
type InboundPort struct {
	Name     string
	Protocol registry.Protocol
	// Port is the service port; it names the cluster inbound|<Port>||.
	Port uint32
	// ListenPort is where other proxies connect (the endpoint port the
	// registry advertises for this workload); 0 means Port.
	ListenPort uint32
	// TargetPort is where the application listens on 127.0.0.1; 0 means
	// Port.
	TargetPort uint32
}

// Outbound says how the application reaches its sidecar. Outside
// Kubernetes there is no transparent capture: the application either uses
// the sidecar as its HTTP_PROXY or connects to per-port listeners.
type Outbound struct {
	// HTTPProxy is the ip:port of the listener applications use as
	// HTTP_PROXY (e.g. 127.0.0.1:15001). It routes by Host header across
	// every visible HTTP service port (route configuration "http_proxy").
	// Empty: no such listener.
	HTTPProxy string
	// BindIP, when set, gets one listener per visible service port on
	// BindIP:<port> (Istio's Sidecar egress listener with "bind"): HTTP
	// ports route by Host (route configuration "<port>"), other ports
	// forward with tcp_proxy. With HTTPProxy also set, only non-HTTP ports
	// get a listener here. Use an address no local application binds,
	// such as 127.0.0.2.
	BindIP string
}

// OutboundTrafficPolicy is the mesh's policy for hosts outside the registry.
type OutboundTrafficPolicy int

const (
	// AllowAny sends unknown hosts to PassthroughCluster.
	AllowAny OutboundTrafficPolicy = iota
	// RegistryOnly answers unknown hosts with 502 (BlackHole).
	RegistryOnly
)

// Mesh holds the mesh-wide settings the translator reads. Zero values take
// Istio's defaults.
type Mesh struct {
	TrustDomain           string // "cluster.local"
	DomainSuffix          string // service DNS suffix, "cluster.local"
	RootNamespace         string // "istio-system": mesh-wide DestinationRules
	OutboundTrafficPolicy OutboundTrafficPolicy
	ConnectTimeout        time.Duration // 10s
	// DefaultHTTPRetry replaces Istio's default retry policy for routes
	// without `retries` (MeshConfig.defaultHttpRetryPolicy).
	DefaultHTTPRetry *networking.HTTPRetry
	// Config is the MeshConfig the operator gave (nil: Istio's defaults);
	// its telemetry settings (accessLogFile, extensionProviders,
	// defaultProviders, defaultConfig.tracing) are read from it.
	Config *meshconfig.MeshConfig
}

func (m Mesh) withDefaults() Mesh {
	if m.TrustDomain == "" {
		m.TrustDomain = "cluster.local"
	}
	if m.DomainSuffix == "" {
		m.DomainSuffix = "cluster.local"
	}
	if m.RootNamespace == "" {
		m.RootNamespace = "istio-system"
	}
	if m.ConnectTimeout <= 0 {
		m.ConnectTimeout = 10 * time.Second
	}
	return m
}

// SpiffeID is the proxy's identity,
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
func (p *Proxy) SpiffeID() string {
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", p.Mesh.withDefaults().TrustDomain, p.Namespace, sa)
}

// Resources is one proxy's configuration, each list sorted by name.
// Messages may share sub-messages: treat them as read-only.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Warnings name the configuration that was not (fully) translated and
	// why, e.g. `VirtualService default/reviews: http[0].fault: not
	// translated: ...`. Sorted, without duplicates.
	Warnings []string
}

// ByType returns the resources keyed by xDS type URL, the shape
// go-control-plane's cache.NewSnapshot takes.
func (r *Resources) ByType() map[resourcev3.Type][]types.Resource {
	out := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: make([]types.Resource, 0, len(r.Listeners)),
		resourcev3.RouteType:    make([]types.Resource, 0, len(r.Routes)),
		resourcev3.ClusterType:  make([]types.Resource, 0, len(r.Clusters)),
		resourcev3.EndpointType: make([]types.Resource, 0, len(r.Endpoints)),
	}
	for _, l := range r.Listeners {
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
	}
	for _, rc := range r.Routes {
		out[resourcev3.RouteType] = append(out[resourcev3.RouteType], rc)
	}
	for _, c := range r.Clusters {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], c)
	}
	for _, e := range r.Endpoints {
		out[resourcev3.EndpointType] = append(out[resourcev3.EndpointType], e)
	}
	return out
}

// Translate computes the resources of one proxy. It fails only when the
// proxy description itself is unusable; configuration it cannot carry out
// is skipped and listed in Warnings.
func Translate(in Input, proxy Proxy) (*Resources, error) {
	return translate(in, proxy, false)
}

func translate(in Input, proxy Proxy, outboundOnly bool) (*Resources, error) {
	if err := checkProxy(&proxy); err != nil {
		return nil, err
	}
	b := newBuilder(in, &proxy)
	b.outboundOnly = outboundOnly
	b.buildClusters()
	switch proxy.Type {
	case Sidecar:
		b.buildSidecarListeners()
	case Router:
		b.buildGatewayListeners()
	case GRPC:
		b.buildGRPCListeners()
	}
	return b.finish(), nil
}

func checkProxy(p *Proxy) error {
	if p.Type != Sidecar && p.Type != Router && p.Type != GRPC {
		return fmt.Errorf("proxy %q: unknown type %d", p.ID, p.Type)
	}
	if p.Outbound.HTTPProxy != "" {
		if _, err := netip.ParseAddrPort(p.Outbound.HTTPProxy); err != nil {
			return fmt.Errorf("proxy %q: outbound HTTP proxy address: %v", p.ID, err)
		}
	}
	if p.Outbound.BindIP != "" {
		if _, err := netip.ParseAddr(p.Outbound.BindIP); err != nil {
			return fmt.Errorf("proxy %q: outbound bind IP: %v", p.ID, err)
		}
	}
	if len(p.IPs) > 0 {
		if _, err := netip.ParseAddr(p.IPs[0]); err != nil {
			return fmt.Errorf("proxy %q: IP: %v", p.ID, err)
		}
	}
	for i, ip := range p.Inbound {
		if ip.Port == 0 {
			return fmt.Errorf("proxy %q: inbound[%d]: port is required", p.ID, i)
		}
	}
	p.Mesh = p.Mesh.withDefaults()
	return nil
}
