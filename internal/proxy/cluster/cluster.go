// Package cluster holds the proxy's upstream clusters: their settings, their
// endpoints and the load balancer that picks one endpoint per request.
//
// A Cluster's endpoint set is an immutable value swapped atomically, so the
// request path picks a host without taking a lock, and hosts (with their
// connection pools and counters) survive endpoint updates that keep them.
package cluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
)

// Protocol is the HTTP version spoken to a cluster's hosts.
type Protocol int

const (
	HTTP1 Protocol = iota
	HTTP2
	// Downstream means "the protocol the request came in with".
	Downstream
)

// Discovery is how a cluster learns its endpoints.
type Discovery int

const (
	Static Discovery = iota
	StrictDNS
	LogicalDNS
	EDS
	OriginalDst
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Cluster is one upstream cluster. Settings are fixed at creation; the
// endpoint set changes through SetEndpoints.
type Cluster struct {
	Name           string
	Discovery      Discovery
	EDSServiceName string // name to subscribe to in EDS (service_name or Name)
	ConnectTimeout time.Duration
	Protocol       Protocol
	LB             clusterv3.Cluster_LbPolicy
	// DNS settings for STRICT_DNS / LOGICAL_DNS.
	DNSRefresh time.Duration
	dnsTargets []dnsTarget

	config *clusterv3.Cluster
	hosts  atomic.Pointer[HostSet]
	rr     atomic.Uint64
}

type dnsTarget struct {
	host string
	port int
}

// HostSet is an immutable view of a cluster's endpoints.
type HostSet struct {
	All []*Host
	// Healthy hosts the balancer picks from (falls back to All when none
	// is healthy, as Envoy's panic threshold does at 0 healthy).
	Healthy []*Host
	// schedule expands weights for weighted round robin.
	schedule []*Host
}

// Host is one upstream endpoint.
type Host struct {
	Addr     string // "ip:port"
	Hostname string
	Weight   uint32
	Healthy  bool
	Locality *corev3.Locality

	// Active counts requests in flight, for LEAST_REQUEST.
	Active atomic.Int64
	// Pool is the host's connection pool, owned by the proxy; kept across
	// endpoint updates so connections are reused.
	Pool atomic.Value
}

// Config returns the cluster's configuration as received.
func (c *Cluster) Config() *clusterv3.Cluster { return c.config }

// Hosts returns the current endpoint set.
func (c *Cluster) Hosts() *HostSet {
	if hs := c.hosts.Load(); hs != nil {
		return hs
	}
	return &HostSet{}
}

// Pick chooses a host for one request, or nil when the cluster has none.
// hash is used by RANDOM (a per-request random number).
func (c *Cluster) Pick(random uint64) *Host {
	hs := c.hosts.Load()
	if hs == nil || len(hs.All) == 0 {
		return nil
	}
	hosts := hs.Healthy
	if len(hosts) == 0 {
		hosts = hs.All
	}
	switch c.LB {
	case clusterv3.Cluster_LEAST_REQUEST:
		if len(hosts) == 1 {
			return hosts[0]
		}
		// Power of two choices, Envoy's default choice_count 2.
		a := hosts[random%uint64(len(hosts))]
		b := hosts[(random>>32)%uint64(len(hosts))]
		if b.Active.Load() < a.Active.Load() {
			return b
		}
		return a
	case clusterv3.Cluster_RANDOM:
		return hosts[random%uint64(len(hosts))]
	default:
		if len(hs.Healthy) > 0 && hs.schedule != nil {
			return hs.schedule[c.rr.Add(1)%uint64(len(hs.schedule))]
		}
		return hosts[c.rr.Add(1)%uint64(len(hosts))]
	}
}

// SetEndpoints replaces the endpoint set, keeping Host objects (and their
// pools) whose address is unchanged.
func (c *Cluster) SetEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	old := map[string]*Host{}
	if hs := c.hosts.Load(); hs != nil {
		for _, h := range hs.All {
			old[h.Addr] = h
		}
	}
	hs, err := buildHostSet(cla, old)
	if err != nil {
		return err
	}
	c.hosts.Store(hs)
	return nil
}

// setHosts is used by DNS resolution.
func (c *Cluster) setHosts(hosts []*Host) {
	c.hosts.Store(newHostSet(hosts))
}

func buildHostSet(cla *endpointv3.ClusterLoadAssignment, old map[string]*Host) (*HostSet, error) {
	// Envoy balances over the lowest priority with healthy hosts.
	best := -1
	for _, le := range cla.GetEndpoints() {
		p := int(le.GetPriority())
		for _, lb := range le.GetLbEndpoints() {
			if routable(lb.GetHealthStatus()) && (best < 0 || p < best) {
				best = p
			}
		}
	}
	var hosts []*Host
	for i, le := range cla.GetEndpoints() {
		if best >= 0 && int(le.GetPriority()) != best {
			continue
		}
		for j, lb := range le.GetLbEndpoints() {
			ep := lb.GetEndpoint()
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d].endpoint.address: socket_address required", i, j)
			}
			port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
			if !ok {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address: port_value required", i, j)
			}
			if net.ParseIP(sa.GetAddress()) == nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address.address: %q is not an IP address", i, j, sa.GetAddress())
			}
			addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(port.PortValue)))
			w := lb.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			healthy := routable(lb.GetHealthStatus())
			h := old[addr]
			if h == nil || h.Weight != w || h.Healthy != healthy {
				nh := &Host{Addr: addr, Hostname: ep.GetHostname(), Weight: w, Healthy: healthy, Locality: le.GetLocality()}
				if h != nil {
					// Keep the pool so a health or weight change does not drop connections.
					if p := h.Pool.Load(); p != nil {
						nh.Pool.Store(p)
					}
				}
				h = nh
			}
			hosts = append(hosts, h)
		}
	}
	return newHostSet(hosts), nil
}

func routable(s corev3.HealthStatus) bool {
	return s == corev3.HealthStatus_UNKNOWN || s == corev3.HealthStatus_HEALTHY
}

func newHostSet(hosts []*Host) *HostSet {
	hs := &HostSet{All: hosts}
	weighted := false
	for _, h := range hosts {
		if h.Healthy {
			hs.Healthy = append(hs.Healthy, h)
			if h.Weight != hs.Healthy[0].Weight {
				weighted = true
			}
		}
	}
	if weighted {
		hs.schedule = schedule(hs.Healthy)
	}
	return hs
}

// schedule interleaves hosts by weight (smooth weighted round robin, run
// once at update time), so Pick is one atomic add.
func schedule(hosts []*Host) []*Host {
	g := uint32(0)
	total := 0
	for _, h := range hosts {
		g = gcd(g, h.Weight)
	}
	for _, h := range hosts {
		total += int(h.Weight / g)
	}
	if total > 4096 {
		// Very uneven weights: fall back to a random expansion of bounded size.
		out := make([]*Host, 4096)
		var sum uint64
		for _, h := range hosts {
			sum += uint64(h.Weight)
		}
		for i := range out {
			r := rand.Uint64N(sum)
			for _, h := range hosts {
				if r < uint64(h.Weight) {
					out[i] = h
					break
				}
				r -= uint64(h.Weight)
			}
		}
		return out
	}
	out := make([]*Host, 0, total)
	cur := make([]int, len(hosts))
	for len(out) < total {
		best := 0
		for i, h := range hosts {
			cur[i] += int(h.Weight / g)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, hosts[best])
	}
	return out
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// New builds a Cluster from its configuration. The caller has already
// checked that only supported fields are set; New checks their values.
func New(cfg *clusterv3.Cluster) (*Cluster, error) {
	if cfg.GetName() == "" {
		return nil, fmt.Errorf("name: must not be empty")
	}
	c := &Cluster{
		Name:           cfg.GetName(),
		ConnectTimeout: 5 * time.Second,
		LB:             cfg.GetLbPolicy(),
		DNSRefresh:     5 * time.Second,
		config:         proto.Clone(cfg).(*clusterv3.Cluster),
	}
	if d := cfg.GetConnectTimeout(); d != nil {
		c.ConnectTimeout = d.AsDuration()
	}
	if d := cfg.GetDnsRefreshRate(); d != nil {
		c.DNSRefresh = d.AsDuration()
	}
	switch cfg.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM:
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if cfg.GetType() != clusterv3.Cluster_ORIGINAL_DST {
			return nil, fmt.Errorf("lb_policy: CLUSTER_PROVIDED only with type ORIGINAL_DST")
		}
	default:
		return nil, fmt.Errorf("lb_policy: %s is not supported by amime", cfg.GetLbPolicy())
	}
	switch cfg.GetType() {
	case clusterv3.Cluster_STATIC:
		c.Discovery = Static
	case clusterv3.Cluster_STRICT_DNS:
		c.Discovery = StrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		c.Discovery = LogicalDNS
	case clusterv3.Cluster_EDS:
		c.Discovery = EDS
		c.EDSServiceName = cfg.GetEdsClusterConfig().GetServiceName()
		if c.EDSServiceName == "" {
			c.EDSServiceName = c.Name
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		c.Discovery = OriginalDst
	default:
		return nil, fmt.Errorf("type: %s is not supported by amime", cfg.GetType())
	}
	if cfg.GetHttp2ProtocolOptions() != nil {
		c.Protocol = HTTP2
	}
	if a := cfg.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		opts := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(opts); err != nil {
			return nil, fmt.Errorf("typed_extension_protocol_options[%q]: %w", httpProtocolOptionsKey, err)
		}
		switch {
		case opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
			c.Protocol = HTTP2
		case opts.GetUseDownstreamProtocolConfig() != nil:
			c.Protocol = Downstream
		}
	}
	if cfg.GetType() == clusterv3.Cluster_EDS && cfg.GetLoadAssignment() != nil {
		return nil, fmt.Errorf("load_assignment: not allowed with type EDS")
	}
	switch c.Discovery {
	case Static:
		if err := c.SetEndpoints(cfg.GetLoadAssignment()); err != nil {
			return nil, fmt.Errorf("load_assignment.%w", err)
		}
	case StrictDNS, LogicalDNS:
		for i, le := range cfg.GetLoadAssignment().GetEndpoints() {
			for j, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil || sa.GetPortValue() == 0 {
					return nil, fmt.Errorf("load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address: address and port_value required", i, j)
				}
				c.dnsTargets = append(c.dnsTargets, dnsTarget{host: sa.GetAddress(), port: int(sa.GetPortValue())})
			}
		}
		if len(c.dnsTargets) == 0 {
			return nil, fmt.Errorf("load_assignment: a DNS cluster needs at least one endpoint")
		}
		if c.Discovery == LogicalDNS && len(c.dnsTargets) != 1 {
			return nil, fmt.Errorf("load_assignment: LOGICAL_DNS takes exactly one endpoint")
		}
	}
	return c, nil
}
