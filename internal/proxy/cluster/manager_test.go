package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// countingHandler is a slog handler that counts records by message, so a
// test can see the manager's DNS failures.
type countingHandler struct {
	mu    sync.Mutex
	count map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count == nil {
		h.count = map[string]int{}
	}
	h.count[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) get(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[msg]
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func edsCluster(name, service string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	if service != "" {
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: service}
	}
	return c
}

func dnsCluster(name string, typ clusterv3.Cluster_DiscoveryType, family clusterv3.Cluster_DnsLookupFamily, refresh time.Duration, eps ...*endpointv3.LbEndpoint) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		DnsLookupFamily:      family,
		DnsRefreshRate:       durationpb.New(refresh),
		LoadAssignment:       cla(locality(0, eps...)),
	}
}

func mustBuild(t *testing.T, cfgs ...*clusterv3.Cluster) map[string]*Cluster {
	t.Helper()
	set, err := Build(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func addrs(c *Cluster) []string {
	var out []string
	for _, h := range c.Hosts().All {
		out = append(out, h.Addr)
	}
	sort.Strings(out)
	return out
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		cfgs []*clusterv3.Cluster
		want string
	}{
		{"duplicate", []*clusterv3.Cluster{{Name: "a"}, {Name: "b"}, {Name: "a"}}, `cluster "a": duplicate name`},
		{"invalid", []*clusterv3.Cluster{{Name: "a"}, {Name: "b", LbPolicy: clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG}}, `cluster "b": lb_policy: LOAD_BALANCING_POLICY_CONFIG is not supported by amime`},
		{"unnamed", []*clusterv3.Cluster{{}}, `cluster "": name: must not be empty`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Build(tc.cfgs)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Build = %v, %v; want error %q", set, err, tc.want)
			}
		})
	}
	set := mustBuild(t, &clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "b"})
	if len(set) != 2 || set["a"].Name != "a" || set["b"].Name != "b" {
		t.Errorf("Build = %v", set)
	}
}

func TestReplace(t *testing.T) {
	m := NewManager(quietLog())
	var removed []string
	var removedObjs []*Cluster
	m.OnRemove = func(c *Cluster) {
		removed = append(removed, c.Name)
		removedObjs = append(removedObjs, c)
	}
	ctx := context.Background()
	static := func(name string, timeout time.Duration) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(timeout), LoadAssignment: cla(locality(0, ep("10.0.0.1", 80)))}
	}
	m.Replace(ctx, mustBuild(t, static("a", time.Second), static("b", time.Second)))
	a1, b1 := m.Get("a"), m.Get("b")
	if a1 == nil || b1 == nil || m.Get("c") != nil || len(m.All()) != 2 {
		t.Fatalf("after first Replace: %v", m.All())
	}
	if len(removed) != 0 {
		t.Fatalf("OnRemove called for %v on first install", removed)
	}
	a1.Hosts().All[0].Active.Store(3) // state that must survive

	// a unchanged, b changed, c new.
	m.Replace(ctx, mustBuild(t, static("a", time.Second), static("b", 2*time.Second), static("c", time.Second)))
	if m.Get("a") != a1 {
		t.Error("unchanged cluster a was replaced")
	}
	if m.Get("a").Hosts().All[0].Active.Load() != 3 {
		t.Error("unchanged cluster lost its host state")
	}
	if m.Get("b") == b1 || m.Get("b").ConnectTimeout != 2*time.Second {
		t.Error("changed cluster b was not replaced")
	}
	if m.Get("c") == nil {
		t.Error("new cluster c missing")
	}
	if !slices.Equal(removed, []string{"b"}) || removedObjs[0] != b1 {
		t.Errorf("OnRemove for %v, want the old b", removed)
	}

	// Everything removed.
	removed = nil
	m.Replace(ctx, map[string]*Cluster{})
	sort.Strings(removed)
	if !slices.Equal(removed, []string{"a", "b", "c"}) || len(m.All()) != 0 {
		t.Errorf("OnRemove for %v, clusters left %v", removed, m.All())
	}
}

func TestEDS(t *testing.T) {
	m := NewManager(quietLog())
	ctx := context.Background()
	// Endpoints arrive before the cluster exists (EDS answered first).
	if err := m.SetEndpoints(map[string]*endpointv3.ClusterLoadAssignment{
		"svc": {ClusterName: "svc", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80))}},
	}); err != nil {
		t.Fatal(err)
	}
	if !m.HasEndpoints("svc") || m.HasEndpoints("other") {
		t.Errorf("HasEndpoints svc=%v other=%v, want true false", m.HasEndpoints("svc"), m.HasEndpoints("other"))
	}
	m.Replace(ctx, mustBuild(t, edsCluster("web", "svc"), edsCluster("other", "")))
	if got := addrs(m.Get("web")); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Errorf("new EDS cluster hosts %v", got)
	}
	if got := addrs(m.Get("other")); len(got) != 0 {
		t.Errorf("cluster without assignment has hosts %v", got)
	}

	// A full update: web's assignment changes, other's arrives.
	if err := m.SetEndpoints(map[string]*endpointv3.ClusterLoadAssignment{
		"svc":   {ClusterName: "svc", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("10.0.0.2", 80))}},
		"other": {ClusterName: "other", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("10.0.1.1", 81))}},
	}); err != nil {
		t.Fatal(err)
	}
	if got := addrs(m.Get("web")); !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Errorf("web hosts %v", got)
	}
	if got := addrs(m.Get("other")); !slices.Equal(got, []string{"10.0.1.1:81"}) {
		t.Errorf("other hosts %v", got)
	}

	// A rejected update changes nothing, for any cluster.
	err := m.SetEndpoints(map[string]*endpointv3.ClusterLoadAssignment{
		"svc":   {ClusterName: "svc", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("10.0.0.3", 80))}},
		"other": {ClusterName: "other", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("bad", 81))}},
	})
	if err == nil || !strings.HasPrefix(err.Error(), `cluster_load_assignment "other": `) {
		t.Fatalf("bad assignment: err %v", err)
	}
	if got := addrs(m.Get("web")); !slices.Equal(got, []string{"10.0.0.2:80"}) {
		t.Errorf("web changed by a rejected update: %v", got)
	}

	// An assignment missing from the state of the world empties the cluster.
	if err := m.SetEndpoints(map[string]*endpointv3.ClusterLoadAssignment{}); err != nil {
		t.Fatal(err)
	}
	if got := addrs(m.Get("web")); len(got) != 0 || m.HasEndpoints("svc") {
		t.Errorf("web hosts %v HasEndpoints %v after removal", got, m.HasEndpoints("svc"))
	}
}

// localhostAddrs is what the resolver gives for localhost in a family.
func localhostAddrs(network, port string) []string {
	ips, err := net.DefaultResolver.LookupIP(context.Background(), network, "localhost")
	if err != nil {
		return nil
	}
	var out []string
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.String(), port))
	}
	sort.Strings(out)
	return out
}

func TestStrictDNS(t *testing.T) {
	v4 := localhostAddrs("ip4", "8080")
	v6 := localhostAddrs("ip6", "8080")
	all := localhostAddrs("ip", "8080")
	if !slices.Contains(v4, "127.0.0.1:8080") {
		t.Fatalf("this machine does not resolve localhost to 127.0.0.1: %v", v4)
	}
	auto := v6 // Envoy's AUTO: IPv6 first, IPv4 when there is none
	if len(auto) == 0 {
		auto = v4
	}
	preferV4 := v4
	tests := []struct {
		family clusterv3.Cluster_DnsLookupFamily
		want   []string
	}{
		{clusterv3.Cluster_AUTO, auto},
		{clusterv3.Cluster_V4_ONLY, v4},
		{clusterv3.Cluster_V4_PREFERRED, preferV4},
		{clusterv3.Cluster_ALL, all},
		{clusterv3.Cluster_V6_ONLY, v6},
	}
	for _, tc := range tests {
		t.Run(tc.family.String(), func(t *testing.T) {
			m := NewManager(quietLog())
			defer m.Close()
			m.Replace(context.Background(), mustBuild(t, dnsCluster("d", clusterv3.Cluster_STRICT_DNS, tc.family, time.Hour,
				ep("localhost", 8080, weight(3)))))
			c := m.Get("d")
			if got := addrs(c); !slices.Equal(got, tc.want) {
				t.Fatalf("hosts %v, want %v", got, tc.want)
			}
			// Resolved hosts keep the endpoint's attributes.
			for _, h := range c.Hosts().All {
				if h.Hostname != "localhost" || h.Weight != 3 || !h.Healthy {
					t.Errorf("host %s: hostname %q weight %d healthy %v", h.Addr, h.Hostname, h.Weight, h.Healthy)
				}
			}
		})
	}
}

func TestStrictDNSRefresh(t *testing.T) {
	m := NewManager(quietLog())
	defer m.Close()
	m.Replace(context.Background(), mustBuild(t, dnsCluster("d", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, 20*time.Millisecond,
		ep("localhost", 9000, hostname("web.internal")))))
	c := m.Get("d")
	if got := addrs(c); !slices.Equal(got, []string{"127.0.0.1:9000"}) {
		t.Fatalf("hosts %v", got)
	}
	if h := c.Hosts().All[0]; h.Hostname != "web.internal" {
		t.Errorf("endpoint hostname not kept: %q", h.Hostname)
	}
	// Wipe the hosts: only a new resolution (on dns_refresh_rate) brings
	// them back.
	c.hosts.Store(newHostSet(nil))
	eventually(t, 5*time.Second, "re-resolution", func() bool { return len(c.Hosts().All) == 1 })
}

func TestStrictDNSKeepLastGood(t *testing.T) {
	h := &countingHandler{}
	m := NewManager(slog.New(h))
	defer m.Close()
	// Two targets: the failing one must not hold back the good one.
	set := mustBuild(t, dnsCluster("d", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, 20*time.Millisecond,
		ep("nonexistent.invalid", 80), ep("localhost", 81)))
	c := set["d"]
	// White box: the unresolvable target had an answer before, as if its
	// name had resolved and then stopped resolving.
	c.dnsTargets[0].ips, c.dnsTargets[0].resolved = []net.IP{net.ParseIP("10.9.9.9")}, true
	m.Replace(context.Background(), set)
	want := []string{"10.9.9.9:80", "127.0.0.1:81"}
	if got := addrs(c); !slices.Equal(got, want) {
		t.Fatalf("hosts %v, want %v", got, want)
	}
	// Several refreshes fail; the last good answer stays.
	eventually(t, 30*time.Second, "repeated resolution failures", func() bool { return h.get("dns resolution failed") >= 3 })
	if got := addrs(c); !slices.Equal(got, want) {
		t.Errorf("hosts after failures %v, want %v", got, want)
	}
}

func TestStrictDNSNeverResolved(t *testing.T) {
	m := NewManager(quietLog())
	defer m.Close()
	m.Replace(context.Background(), mustBuild(t, dnsCluster("d", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, time.Hour,
		ep("nonexistent.invalid", 80))))
	if c := m.Get("d"); c.Pick(0) != nil || len(c.Hosts().All) != 0 {
		t.Errorf("unresolvable cluster has hosts %v", addrs(c))
	}
}

func TestLogicalDNS(t *testing.T) {
	m := NewManager(quietLog())
	defer m.Close()
	m.Replace(context.Background(), mustBuild(t,
		dnsCluster("logical", clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_ALL, time.Hour, ep("localhost", 80)),
		dnsCluster("strict", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_ALL, time.Hour, ep("localhost", 80))))
	logical, strict := m.Get("logical").Hosts().All, m.Get("strict").Hosts().All
	if len(logical) != 1 || len(strict) == 0 {
		t.Fatalf("logical %d hosts, strict %d", len(logical), len(strict))
	}
	// The one address is the resolver's first.
	if first := localhostAddrs("ip", "80"); !slices.Contains(first, logical[0].Addr) {
		t.Errorf("logical host %s not among %v", logical[0].Addr, first)
	}
}

// resolvers counts the manager's DNS refresh goroutines, by their stacks,
// so other tests' goroutines do not blur the count.
func resolvers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "cluster.(*Manager).startDNS.func")
}

func TestCloseStopsDNS(t *testing.T) {
	baseline := runtime.NumGoroutine()
	m := NewManager(quietLog())
	m.Replace(context.Background(), mustBuild(t,
		dnsCluster("a", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, 10*time.Millisecond, ep("localhost", 80)),
		dnsCluster("b", clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_V4_ONLY, 10*time.Millisecond, ep("localhost", 80))))
	if n := resolvers(); n != 2 {
		t.Fatalf("%d resolver goroutines for two DNS clusters", n)
	}
	// Removing one cluster stops its goroutine.
	m.Replace(context.Background(), mustBuild(t,
		dnsCluster("a", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, 10*time.Millisecond, ep("localhost", 80))))
	eventually(t, 5*time.Second, "removed cluster's resolver to stop", func() bool { return resolvers() == 1 })
	// Close returns only once the rest have ended.
	m.Close()
	if n := resolvers(); n != 0 {
		t.Errorf("%d resolver goroutines after Close", n)
	}
	eventually(t, 5*time.Second, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

func TestCloseOnContextCancel(t *testing.T) {
	// The context given to Replace also ends resolution.
	ctx, cancel := context.WithCancel(context.Background())
	m := NewManager(quietLog())
	m.Replace(ctx, mustBuild(t, dnsCluster("a", clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_V4_ONLY, 10*time.Millisecond, ep("localhost", 80))))
	if n := resolvers(); n != 1 {
		t.Fatalf("%d resolver goroutines", n)
	}
	cancel()
	eventually(t, 5*time.Second, "resolver to stop", func() bool { return resolvers() == 0 })
	m.Close() // still fine after the context ended
}
