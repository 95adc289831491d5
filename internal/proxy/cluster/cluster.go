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

	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
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
	// IdleTimeout closes upstream connections idle that long (Envoy's
	// default 1 h; 0: never); MaxRequestsPerConnection (0: unlimited)
	// retires a connection after that many requests.
	IdleTimeout              time.Duration
	MaxRequestsPerConnection uint32
	Protocol                 Protocol
	LB                       clusterv3.Cluster_LbPolicy
	// DNS settings for STRICT_DNS / LOGICAL_DNS.
	DNSRefresh time.Duration
	dnsFamily  clusterv3.Cluster_DnsLookupFamily
	dnsTargets []dnsTarget

	config *clusterv3.Cluster
	hosts  atomic.Pointer[HostSet]
	orig   *origDst // ORIGINAL_DST only
	onDrop func(*Host)

	// CB is the DEFAULT priority circuit breaker (always set).
	CB *CircuitBreaker
	// outlier is nil without outlier_detection.
	outlier *outlierDetector
	// panicThreshold is common_lb_config.healthy_panic_threshold (percent),
	// applied to hosts ejected by outlier detection.
	panicThreshold uint32
	// hashCfg is the RING_HASH / MAGLEV configuration (ringhash.go).
	hashCfg hashConfig
	// transport picks each host's TLS (transport.go).
	transport *transport
}

// dnsTarget is one endpoint of a DNS cluster. Only the resolver goroutine
// of the cluster touches ips once resolution has started.
type dnsTarget struct {
	host     string
	port     int
	le       *endpointv3.LocalityLbEndpoints // priority and locality
	lb       *endpointv3.LbEndpoint          // weight, health status, hostname
	ips      []net.IP                        // last good answer
	resolved bool
}

// Envoy's defaults for the knobs amime does not expose
// (ClusterLoadAssignment.Policy.overprovisioning_factor and
// CommonLbConfig.healthy_panic_threshold).
const (
	overprovisioningFactor = 140 // percent
	panicThreshold         = 50  // percent
)

// HostSet is an immutable view of a cluster's endpoints.
type HostSet struct {
	// All is every host of every priority, in configuration order.
	All []*Host
	// Healthy is every host EDS reports HEALTHY or UNKNOWN.
	Healthy []*Host
	// targets split traffic between priorities (and between their healthy
	// and degraded hosts) the way Envoy's priority load does; upTo is the
	// cumulative percentage.
	targets []target
}

type target struct {
	upTo uint64
	p    *picker
}

// picker balances over one list of hosts.
type picker struct {
	hosts []*Host
	// schedule expands weights for weighted round robin (nil when all
	// weights are equal).
	schedule []*Host
	rr       atomic.Uint64
	// hash is the ring or Maglev table for RING_HASH and MAGLEV (ringhash.go).
	hash *hashTable
}

// Host is one upstream endpoint.
type Host struct {
	Addr     string // "ip:port"
	Hostname string
	Weight   uint32
	// Healthy is EDS health status HEALTHY or UNKNOWN.
	Healthy bool
	// Degraded is EDS health status DEGRADED: used only when there are not
	// enough healthy hosts.
	Degraded bool
	Priority uint32
	Locality *corev3.Locality
	// TLS is the host's transport socket (transport_socket_matches on its
	// metadata, else the cluster's transport_socket); nil is plaintext.
	TLS *tlsctx.Client

	// Active counts requests in flight, for LEAST_REQUEST.
	Active atomic.Int64
	// Pool is the host's connection pool, owned by the proxy; kept across
	// endpoint updates so connections are reused.
	Pool atomic.Value

	od hostOutlier
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

// priority picks the priority level for a request from r mod 100, by the
// priority load (Envoy's choosePriority); nil without hosts.
func (hs *HostSet) priority(r uint64) *picker {
	if hs == nil || len(hs.targets) == 0 {
		return nil
	}
	if len(hs.targets) > 1 {
		n := r%100 + 1
		for _, t := range hs.targets {
			if n <= t.upTo {
				return t.p
			}
		}
	}
	return hs.targets[0].p
}

// Pick chooses a host for one request, or nil when the cluster has none.
// random is a per-request random number: its value mod 100 picks the
// priority (Envoy's choosePriority), the rest feeds RANDOM and
// LEAST_REQUEST.
func (c *Cluster) Pick(random uint64) *Host {
	p := c.hosts.Load().priority(random)
	if p == nil {
		return nil
	}
	hosts := p.hosts
	if len(hosts) == 0 {
		return nil
	}
	r := random / 100
	switch c.LB {
	case clusterv3.Cluster_LEAST_REQUEST:
		if len(hosts) == 1 {
			return hosts[0]
		}
		// Power of two choices, Envoy's default choice_count 2.
		a := hosts[r%uint64(len(hosts))]
		b := hosts[(r>>32)%uint64(len(hosts))]
		if b.Active.Load() < a.Active.Load() || a.Ejected() {
			a = b
		}
		return c.avoidEjected(hosts, r, a)
	case clusterv3.Cluster_RANDOM:
		i := r % uint64(len(hosts))
		return c.avoidEjected(hosts, i, hosts[i])
	default:
		if p.schedule != nil {
			i := p.rr.Add(1) % uint64(len(p.schedule))
			return c.avoidEjected(p.schedule, i, p.schedule[i])
		}
		i := p.rr.Add(1) % uint64(len(hosts))
		return c.avoidEjected(hosts, i, hosts[i])
	}
}

// SetEndpoints replaces the endpoint set, keeping Host objects (and their
// pools) whose address and attributes are unchanged.
func (c *Cluster) SetEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	hs, err := c.buildEndpoints(cla)
	if err != nil {
		return err
	}
	c.swapHosts(hs)
	return nil
}

// swapHosts installs hs and hands every host it drops to the drop hook,
// so the proxy can close that host's connections (Envoy drains the pools
// of removed hosts). A host replaced by a new object keeps its pool, which
// is then not dropped.
func (c *Cluster) swapHosts(hs *HostSet) {
	c.buildHashTables(hs)
	old := c.hosts.Swap(hs)
	if old == nil || c.onDrop == nil {
		return
	}
	kept := make(map[any]bool, len(hs.All))
	for _, h := range hs.All {
		if p := h.Pool.Load(); p != nil {
			kept[p] = true
		}
	}
	for _, h := range old.All {
		if p := h.Pool.Load(); p != nil && !kept[p] {
			c.onDrop(h)
		}
	}
}

func (c *Cluster) buildEndpoints(cla *endpointv3.ClusterLoadAssignment) (*HostSet, error) {
	old := map[string]*Host{}
	if hs := c.hosts.Load(); hs != nil {
		for _, h := range hs.All {
			old[h.Addr] = h
		}
	}
	return buildHostSet(cla, old, c.transport)
}

func buildHostSet(cla *endpointv3.ClusterLoadAssignment, old map[string]*Host, tr *transport) (*HostSet, error) {
	var hosts []*Host
	for i, le := range cla.GetEndpoints() {
		if err := checkLocality(i, le); err != nil {
			return nil, err
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
			hosts = append(hosts, reuseHost(old[addr], &Host{
				Addr:     addr,
				Hostname: ep.GetHostname(),
				Weight:   max(lb.GetLoadBalancingWeight().GetValue(), 1),
				Healthy:  routable(lb.GetHealthStatus()),
				Degraded: lb.GetHealthStatus() == corev3.HealthStatus_DEGRADED,
				Priority: le.GetPriority(),
				Locality: le.GetLocality(),
				TLS:      tr.forEndpoint(lb.GetMetadata()),
			}))
		}
	}
	return newHostSet(hosts), nil
}

// maxPriority is Envoy's limit on LocalityLbEndpoints.priority.
const maxPriority = 128

// checkLocality applies Envoy's limits (its proto validation rules) to a
// LocalityLbEndpoints and the weights of its endpoints.
func checkLocality(i int, le *endpointv3.LocalityLbEndpoints) error {
	if le.GetPriority() > maxPriority {
		return fmt.Errorf("endpoints[%d].priority: must be at most %d", i, maxPriority)
	}
	if w := le.GetLoadBalancingWeight(); w != nil && w.GetValue() < 1 {
		return fmt.Errorf("endpoints[%d].load_balancing_weight: must be at least 1", i)
	}
	for j, lb := range le.GetLbEndpoints() {
		if w := lb.GetLoadBalancingWeight(); w != nil && w.GetValue() < 1 {
			return fmt.Errorf("endpoints[%d].lb_endpoints[%d].load_balancing_weight: must be at least 1", i, j)
		}
	}
	return nil
}

// reuseHost returns old when it describes the same endpoint as nh, so its
// counters and pool carry on; otherwise nh, inheriting old's pool so a
// health or weight change does not drop connections. Hosts are shared with
// requests in flight, so they are never modified in place.
func reuseHost(old, nh *Host) *Host {
	if old == nil {
		return nh
	}
	if old.Hostname == nh.Hostname && old.Weight == nh.Weight && old.Healthy == nh.Healthy &&
		old.Degraded == nh.Degraded && old.Priority == nh.Priority && proto.Equal(old.Locality, nh.Locality) && old.TLS == nh.TLS {
		return old
	}
	// A pool's connections carry the host's transport: keep them only
	// while it is the same.
	if p := old.Pool.Load(); p != nil && old.TLS == nh.TLS {
		nh.Pool.Store(p)
	}
	return nh
}

// routable reports the EDS health statuses Envoy treats as healthy: TIMEOUT,
// UNHEALTHY and DRAINING are failed_eds_health, DEGRADED is degraded.
func routable(s corev3.HealthStatus) bool {
	return s == corev3.HealthStatus_UNKNOWN || s == corev3.HealthStatus_HEALTHY
}

// newHostSet computes Envoy's priority load for hosts: each priority's
// availability is its share of healthy (then degraded) hosts times the
// overprovisioning factor, load goes to priorities in order until 100% is
// placed, a priority whose healthy share is under the panic threshold
// balances over all its hosts when the total is short of 100%, and when
// every priority is in panic the load follows the host counts.
// See Envoy's arch overview, load_balancing/priority and panic_threshold.
func newHostSet(hosts []*Host) *HostSet {
	hs := &HostSet{All: hosts}
	maxP := -1
	for _, h := range hosts {
		if h.Healthy {
			hs.Healthy = append(hs.Healthy, h)
		}
		maxP = max(maxP, int(h.Priority))
	}
	if maxP < 0 {
		return hs
	}
	type level struct{ all, healthy, degraded []*Host }
	levels := make([]level, maxP+1)
	for _, h := range hosts {
		l := &levels[h.Priority]
		l.all = append(l.all, h)
		switch {
		case h.Healthy:
			l.healthy = append(l.healthy, h)
		case h.Degraded:
			l.degraded = append(l.degraded, h)
		}
	}
	n := len(levels)
	health, degraded := make([]uint64, n), make([]uint64, n)
	var total uint64
	for i, l := range levels {
		if len(l.all) > 0 {
			health[i] = min(100, overprovisioningFactor*uint64(len(l.healthy))/uint64(len(l.all)))
			degraded[i] = min(100, overprovisioningFactor*uint64(len(l.degraded))/uint64(len(l.all)))
		}
		total += health[i] + degraded[i]
	}
	total = min(total, 100)
	healthyLoad, degradedLoad := make([]uint64, n), make([]uint64, n)
	if total > 0 {
		firstH, rest := distributeLoad(healthyLoad, health, 100, total)
		firstD, rest := distributeLoad(degradedLoad, degraded, rest, total)
		if rest > 0 {
			if firstH >= 0 {
				healthyLoad[firstH] += rest
			} else {
				degradedLoad[firstD] += rest
			}
		}
	}
	inPanic := make([]bool, n)
	totalPanic := true
	for i, l := range levels {
		// A priority (an empty one too) panics when under the threshold,
		// unless the priorities together are healthy enough (normalized
		// total 100%).
		inPanic[i] = total < 100 && (len(l.all) == 0 ||
			uint64(len(l.healthy)+len(l.degraded))*100 < panicThreshold*uint64(len(l.all)))
		totalPanic = totalPanic && inPanic[i]
	}
	if totalPanic {
		rest := uint64(100)
		first := -1
		for i, l := range levels {
			if first < 0 && len(l.all) > 0 {
				first = i
			}
			healthyLoad[i] = 100 * uint64(len(l.all)) / uint64(len(hosts))
			degradedLoad[i] = 0
			rest -= healthyLoad[i]
		}
		healthyLoad[first] += rest
	}
	var upTo uint64
	add := func(load uint64, hosts []*Host) {
		if load == 0 {
			return
		}
		upTo += load
		hs.targets = append(hs.targets, target{upTo: upTo, p: newPicker(hosts)})
	}
	// A priority in panic balances over all its hosts whichever load
	// (healthy or degraded) chose it.
	for i, l := range levels {
		if inPanic[i] {
			add(healthyLoad[i], l.all)
		} else {
			add(healthyLoad[i], l.healthy)
		}
	}
	for i, l := range levels {
		if inPanic[i] {
			add(degradedLoad[i], l.all)
		} else {
			add(degradedLoad[i], l.degraded)
		}
	}
	return hs
}

// distributeLoad is Envoy's: give each priority its availability share of
// what is left, in priority order.
func distributeLoad(load, avail []uint64, total, normalized uint64) (first int, rest uint64) {
	first = -1
	for i, a := range avail {
		if first < 0 && a > 0 {
			first = i
		}
		load[i] = min(total, a*100/normalized)
		total -= load[i]
	}
	return first, total
}

func newPicker(hosts []*Host) *picker {
	p := &picker{hosts: hosts}
	for _, h := range hosts {
		if h.Weight != hosts[0].Weight {
			p.schedule = schedule(hosts)
			break
		}
	}
	// Start each new set at a random place, as Envoy does, so frequent
	// updates do not send every first request to the same host.
	p.rr.Store(rand.Uint64())
	return p
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
func New(cfg *clusterv3.Cluster) (*Cluster, error) { return NewWith(cfg, Options{}) }

// NewWith is New with the proxy's options.
func NewWith(cfg *clusterv3.Cluster, opts Options) (*Cluster, error) {
	if cfg.GetName() == "" {
		return nil, fmt.Errorf("name: must not be empty")
	}
	c := &Cluster{
		Name:           cfg.GetName(),
		ConnectTimeout: 5 * time.Second,
		IdleTimeout:    time.Hour,
		LB:             cfg.GetLbPolicy(),
		DNSRefresh:     5 * time.Second,
		config:         proto.Clone(cfg).(*clusterv3.Cluster),
	}
	if d := cfg.GetConnectTimeout(); d != nil {
		c.ConnectTimeout = d.AsDuration()
		if c.ConnectTimeout <= 0 {
			return nil, fmt.Errorf("connect_timeout: must be greater than 0s")
		}
	}
	if d := cfg.GetDnsRefreshRate(); d != nil {
		c.DNSRefresh = d.AsDuration()
		if c.DNSRefresh <= time.Millisecond {
			return nil, fmt.Errorf("dns_refresh_rate: must be greater than 1ms")
		}
	}
	c.dnsFamily = cfg.GetDnsLookupFamily()
	if _, ok := clusterv3.Cluster_DnsLookupFamily_name[int32(c.dnsFamily)]; !ok {
		return nil, fmt.Errorf("dns_lookup_family: unknown value %d", c.dnsFamily)
	}
	switch cfg.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_RANDOM,
		clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
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
		c.orig = &origDst{useHeader: cfg.GetOriginalDstLbConfig().GetUseHttpHeader(), cleanup: 5 * time.Second}
		if d := cfg.GetCleanupInterval(); d != nil {
			if d.AsDuration() <= 0 {
				return nil, fmt.Errorf("cleanup_interval: must be greater than 0")
			}
			c.orig.cleanup = d.AsDuration()
		}
		if cfg.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
			// Envoy: "LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST".
			return nil, fmt.Errorf("lb_policy: %s is not valid for type ORIGINAL_DST, only CLUSTER_PROVIDED is", cfg.GetLbPolicy())
		}
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
		common := opts.GetCommonHttpProtocolOptions()
		if d := common.GetIdleTimeout(); d != nil {
			if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
				return nil, fmt.Errorf("typed_extension_protocol_options[%q].common_http_protocol_options.idle_timeout: must be a non-negative duration", httpProtocolOptionsKey)
			}
			c.IdleTimeout = d.AsDuration() // 0 disables it, as in Envoy
		}
		c.MaxRequestsPerConnection = common.GetMaxRequestsPerConnection().GetValue()
	}
	hc, err := newHashConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.hashCfg = hc
	if c.transport, err = compileTransport(cfg, opts.Secrets); err != nil {
		return nil, err
	}
	cb, err := newCircuitBreaker(cfg.GetCircuitBreakers())
	if err != nil {
		return nil, err
	}
	c.CB = cb
	c.panicThreshold = panicThreshold
	if v := cfg.GetCommonLbConfig().GetHealthyPanicThreshold(); v != nil {
		if v.GetValue() < 0 || v.GetValue() > 100 {
			return nil, fmt.Errorf("common_lb_config.healthy_panic_threshold: must be between 0 and 100")
		}
		c.panicThreshold = uint32(v.GetValue())
	}
	if od := cfg.GetOutlierDetection(); od != nil {
		oc, err := newOutlierConfig(od)
		if err != nil {
			return nil, err
		}
		c.outlier = &outlierDetector{cfg: oc, c: c, now: time.Now}
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
		for i, le := range c.config.GetLoadAssignment().GetEndpoints() {
			if err := checkLocality(i, le); err != nil {
				return nil, fmt.Errorf("load_assignment.%w", err)
			}
			for j, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				if sa.GetAddress() == "" || sa.GetPortValue() == 0 {
					return nil, fmt.Errorf("load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address.socket_address: address and port_value required", i, j)
				}
				c.dnsTargets = append(c.dnsTargets, dnsTarget{host: sa.GetAddress(), port: int(sa.GetPortValue()), le: le, lb: lb})
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
