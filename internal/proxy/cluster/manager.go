package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// Manager owns the set of clusters. Readers (the request path) use Get,
// which is a lock-free map lookup; writers (config updates) are serialized.
type Manager struct {
	log *slog.Logger

	mu        sync.Mutex // serializes writers
	current   atomic.Pointer[map[string]*Cluster]
	endpoints map[string]*endpointv3.ClusterLoadAssignment // last EDS state, by service name
	dnsStop   map[*Cluster]context.CancelFunc
	wg        sync.WaitGroup
	resolver  *net.Resolver
	// OnRemove is called for clusters that leave the set, so their
	// connection pools can be closed.
	OnRemove func(*Cluster)
	// OnHostRemove is called for hosts that leave a cluster (EDS or DNS),
	// so their connection pools can be closed.
	OnHostRemove func(*Host)
}

// NewManager returns an empty manager.
func NewManager(log *slog.Logger) *Manager {
	m := &Manager{log: log, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}, dnsStop: map[*Cluster]context.CancelFunc{}, resolver: net.DefaultResolver}
	empty := map[string]*Cluster{}
	m.current.Store(&empty)
	return m
}

// Get returns the named cluster or nil.
func (m *Manager) Get(name string) *Cluster {
	return (*m.current.Load())[name]
}

// All returns the current clusters by name; callers must not modify it.
func (m *Manager) All() map[string]*Cluster {
	return *m.current.Load()
}

// Build validates and builds clusters without installing them, so a caller
// can reject a whole update (NACK) before anything changes.
func Build(cfgs []*clusterv3.Cluster) (map[string]*Cluster, error) { return BuildWith(cfgs, Options{}) }

// BuildWith is Build with the proxy's options.
func BuildWith(cfgs []*clusterv3.Cluster, opts Options) (map[string]*Cluster, error) {
	out := make(map[string]*Cluster, len(cfgs))
	for _, cfg := range cfgs {
		if _, dup := out[cfg.GetName()]; dup {
			return nil, fmt.Errorf("cluster %q: duplicate name", cfg.GetName())
		}
		c, err := NewWith(cfg, opts)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cfg.GetName(), err)
		}
		out[c.Name] = c
	}
	return out, nil
}

// Replace installs a full cluster set built by Build. Clusters whose
// configuration is unchanged keep their existing object (and so their
// endpoints, pools and counters).
func (m *Manager) Replace(ctx context.Context, next map[string]*Cluster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.current.Load()
	merged := make(map[string]*Cluster, len(next))
	for name, c := range next {
		if o := old[name]; o != nil && proto.Equal(o.config, c.config) {
			merged[name] = o
			continue
		}
		c.onDrop = m.OnHostRemove
		if c.Discovery == EDS {
			if cla := m.endpoints[c.EDSServiceName]; cla != nil {
				if err := c.SetEndpoints(cla); err != nil {
					m.log.Warn("endpoints rejected for new cluster", "cluster", name, "err", err)
				}
			}
		}
		merged[name] = c
		if c.Discovery == StrictDNS || c.Discovery == LogicalDNS {
			m.startDNS(ctx, c)
		}
		if c.outlier != nil {
			m.startOutlier(ctx, c)
		}
	}
	m.current.Store(&merged)
	for name, o := range old {
		if merged[name] != o {
			if stop := m.dnsStop[o]; stop != nil {
				stop()
				delete(m.dnsStop, o)
			}
			if m.OnRemove != nil {
				m.OnRemove(o)
			}
		}
	}
}

// ValidateEndpoints checks assignments without applying them.
func ValidateEndpoints(clas []*endpointv3.ClusterLoadAssignment) error {
	for _, cla := range clas {
		if _, err := buildHostSet(cla, nil, nil); err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", cla.GetClusterName(), err)
		}
	}
	return nil
}

// SetEndpoints records the full EDS state and applies it to EDS clusters.
// Nothing changes when an assignment is rejected.
func (m *Manager) SetEndpoints(clas map[string]*endpointv3.ClusterLoadAssignment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[*Cluster]*HostSet{}
	for _, c := range *m.current.Load() {
		if c.Discovery != EDS {
			continue
		}
		cla := clas[c.EDSServiceName]
		if cla == nil {
			cla = &endpointv3.ClusterLoadAssignment{ClusterName: c.EDSServiceName}
		}
		hs, err := c.buildEndpoints(cla)
		if err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", c.EDSServiceName, err)
		}
		next[c] = hs
	}
	m.endpoints = clas
	for c, hs := range next {
		c.swapHosts(hs)
	}
	return nil
}

// HasEndpoints reports whether EDS has delivered an assignment for the
// cluster (Envoy keeps an EDS cluster warming until then).
func (m *Manager) HasEndpoints(serviceName string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.endpoints[serviceName]
	return ok
}

// Close stops DNS resolution and outlier detection.
func (m *Manager) Close() {
	m.mu.Lock()
	for c, stop := range m.dnsStop {
		stop()
		delete(m.dnsStop, c)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// startOutlier runs the cluster's outlier detection sweeps until the
// cluster leaves the set or the manager closes. Called with m.mu held.
func (m *Manager) startOutlier(ctx context.Context, c *Cluster) {
	ctx, cancel := context.WithCancel(ctx)
	if prev := m.dnsStop[c]; prev != nil {
		m.dnsStop[c] = func() { prev(); cancel() }
	} else {
		m.dnsStop[c] = cancel
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c.runOutlier(ctx)
	}()
}

// startDNS resolves the cluster's targets now and then every DNSRefresh.
// Called with m.mu held.
func (m *Manager) startDNS(ctx context.Context, c *Cluster) {
	ctx, cancel := context.WithCancel(ctx)
	m.dnsStop[c] = cancel
	m.resolveOnce(ctx, c)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(c.DNSRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.resolveOnce(ctx, c)
			}
		}
	}()
}

func (m *Manager) resolveOnce(ctx context.Context, c *Cluster) {
	// Each target keeps its last good answer when its lookup fails, as
	// Envoy's strict DNS resolve targets do; the others still update.
	changed := false
	for i := range c.dnsTargets {
		t := &c.dnsTargets[i]
		ips, err := m.lookup(ctx, c.dnsFamily, t.host)
		if err != nil {
			if ctx.Err() != nil {
				return // stopped: Close, or the cluster left the set
			}
			m.log.Warn("dns resolution failed", "cluster", c.Name, "host", t.host, "err", err)
			continue
		}
		if c.Discovery == LogicalDNS && len(ips) > 1 {
			ips = ips[:1]
		}
		t.ips, t.resolved, changed = ips, true, true
	}
	if !changed {
		return
	}
	// The resolved addresses stand in for the names; each host keeps its
	// endpoint's weight, health status, priority and locality.
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: c.Name}
	for _, t := range c.dnsTargets {
		if !t.resolved {
			continue
		}
		le := &endpointv3.LocalityLbEndpoints{Locality: t.le.GetLocality(), Priority: t.le.GetPriority()}
		for _, ip := range t.ips {
			lb := proto.Clone(t.lb).(*endpointv3.LbEndpoint)
			ep := lb.GetEndpoint()
			if ep.GetHostname() == "" {
				ep.Hostname = t.host
			}
			ep.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(t.port)},
			}}}
			le.LbEndpoints = append(le.LbEndpoints, lb)
		}
		cla.Endpoints = append(cla.Endpoints, le)
	}
	if err := c.SetEndpoints(cla); err != nil {
		// New checked the endpoints' values; an address from the resolver
		// is always an IP.
		m.log.Error("dns hosts rejected", "cluster", c.Name, "err", err)
	}
}

// lookup resolves host for the cluster's dns_lookup_family (Envoy's
// default AUTO: IPv6, falling back to IPv4).
func (m *Manager) lookup(ctx context.Context, family clusterv3.Cluster_DnsLookupFamily, host string) ([]net.IP, error) {
	var order []string
	switch family {
	case clusterv3.Cluster_V4_ONLY:
		order = []string{"ip4"}
	case clusterv3.Cluster_V6_ONLY:
		order = []string{"ip6"}
	case clusterv3.Cluster_V4_PREFERRED:
		order = []string{"ip4", "ip6"}
	case clusterv3.Cluster_ALL:
		order = []string{"ip"}
	default: // AUTO
		order = []string{"ip6", "ip4"}
	}
	var err error
	for _, network := range order {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Each family gets its own time, so a server that never answers
		// AAAA queries still leaves time for the IPv4 fallback.
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var ips []net.IP
		ips, err = m.resolver.LookupIP(qctx, network, host)
		cancel()
		if err == nil && len(ips) > 0 {
			return ips, nil
		}
		if err == nil {
			err = fmt.Errorf("lookup %s: no %s address", host, network)
		}
	}
	return nil, err
}
