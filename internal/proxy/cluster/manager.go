package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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
func Build(cfgs []*clusterv3.Cluster) (map[string]*Cluster, error) {
	out := make(map[string]*Cluster, len(cfgs))
	for _, cfg := range cfgs {
		if _, dup := out[cfg.GetName()]; dup {
			return nil, fmt.Errorf("cluster %q: duplicate name", cfg.GetName())
		}
		c, err := New(cfg)
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
		if _, err := buildHostSet(cla, nil); err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", cla.GetClusterName(), err)
		}
	}
	return nil
}

// SetEndpoints records the full EDS state and applies it to EDS clusters.
func (m *Manager) SetEndpoints(clas map[string]*endpointv3.ClusterLoadAssignment) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endpoints = clas
	for _, c := range *m.current.Load() {
		if c.Discovery != EDS {
			continue
		}
		cla := clas[c.EDSServiceName]
		if cla == nil {
			cla = &endpointv3.ClusterLoadAssignment{ClusterName: c.EDSServiceName}
		}
		if err := c.SetEndpoints(cla); err != nil {
			return fmt.Errorf("cluster_load_assignment %q: %w", c.EDSServiceName, err)
		}
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

// Close stops DNS resolution.
func (m *Manager) Close() {
	m.mu.Lock()
	for c, stop := range m.dnsStop {
		stop()
		delete(m.dnsStop, c)
	}
	m.mu.Unlock()
	m.wg.Wait()
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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var hosts []*Host
	old := map[string]*Host{}
	for _, h := range c.Hosts().All {
		old[h.Addr] = h
	}
	for _, t := range c.dnsTargets {
		ips, err := m.resolver.LookupIPAddr(ctx, t.host)
		if err != nil {
			// Keep the last good answer, as Envoy does on resolution failure.
			m.log.Warn("dns resolution failed", "cluster", c.Name, "host", t.host, "err", err)
			return
		}
		if c.Discovery == LogicalDNS && len(ips) > 1 {
			ips = ips[:1]
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip.IP.String(), strconv.Itoa(t.port))
			h := old[addr]
			if h == nil {
				h = &Host{Addr: addr, Hostname: t.host, Weight: 1, Healthy: true}
			}
			hosts = append(hosts, h)
		}
	}
	c.setHosts(hosts)
}
