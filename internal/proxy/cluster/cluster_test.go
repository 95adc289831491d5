package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// epOpt adjusts one LbEndpoint.
type epOpt func(*endpointv3.LbEndpoint)

func weight(w uint32) epOpt {
	return func(lb *endpointv3.LbEndpoint) { lb.LoadBalancingWeight = wrapperspb.UInt32(w) }
}

func health(s corev3.HealthStatus) epOpt {
	return func(lb *endpointv3.LbEndpoint) { lb.HealthStatus = s }
}

func hostname(n string) epOpt {
	return func(lb *endpointv3.LbEndpoint) { lb.GetEndpoint().Hostname = n }
}

func sockAddr(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func ep(addr string, port uint32, opts ...epOpt) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(addr, port)}}}
	for _, o := range opts {
		o(lb)
	}
	return lb
}

func locality(prio uint32, eps ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	return &endpointv3.LocalityLbEndpoints{Priority: prio, LbEndpoints: eps}
}

func cla(les ...*endpointv3.LocalityLbEndpoints) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: les}
}

func staticCluster(lb clusterv3.Cluster_LbPolicy, a *endpointv3.ClusterLoadAssignment) *Cluster {
	c, err := New(&clusterv3.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy:             lb,
		LoadAssignment:       a,
	})
	if err != nil {
		panic(err)
	}
	return c
}

func TestNewErrors(t *testing.T) {
	typ := func(d clusterv3.Cluster_DiscoveryType) *clusterv3.Cluster_Type {
		return &clusterv3.Cluster_Type{Type: d}
	}
	badAny := &anypb.Any{TypeUrl: "type.googleapis.com/" + httpProtocolOptionsKey, Value: []byte{0xff}}
	tests := []struct {
		name string
		cfg  *clusterv3.Cluster
		want string
	}{
		{"empty name", &clusterv3.Cluster{}, "name: must not be empty"},
		{"unsupported lb policy", &clusterv3.Cluster{Name: "c", LbPolicy: clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG},
			"lb_policy: LOAD_BALANCING_POLICY_CONFIG is not supported by amime"},
		{"cluster provided without original dst", &clusterv3.Cluster{Name: "c", LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED},
			"lb_policy: CLUSTER_PROVIDED only with type ORIGINAL_DST"},
		// Envoy: "LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST".
		{"original dst with round robin", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_ORIGINAL_DST)},
			"lb_policy: ROUND_ROBIN is not valid for type ORIGINAL_DST, only CLUSTER_PROVIDED is"},
		{"unknown type", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(99)}, "type: 99 is not supported by amime"},
		{"zero connect timeout", &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(0)},
			"connect_timeout: must be greater than 0s"},
		{"dns refresh 1ms", &clusterv3.Cluster{Name: "c", DnsRefreshRate: durationpb.New(time.Millisecond)},
			"dns_refresh_rate: must be greater than 1ms"},
		{"unknown dns family", &clusterv3.Cluster{Name: "c", DnsLookupFamily: 42}, "dns_lookup_family: unknown value 42"},
		{"bad protocol options", &clusterv3.Cluster{Name: "c", TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: badAny}},
			`typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]: `},
		{"eds with load assignment", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_EDS), LoadAssignment: cla()},
			"load_assignment: not allowed with type EDS"},
		{"static hostname", &clusterv3.Cluster{Name: "c", LoadAssignment: cla(locality(0, ep("example.com", 80)))},
			`load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "example.com" is not an IP address`},
		{"static no socket address", &clusterv3.Cluster{Name: "c", LoadAssignment: cla(locality(0, &endpointv3.LbEndpoint{}))},
			"load_assignment.endpoints[0].lb_endpoints[0].endpoint.address: socket_address required"},
		{"static named port", &clusterv3.Cluster{Name: "c", LoadAssignment: cla(locality(0, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}}}}}}}))},
			"load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address: port_value required"},
		{"zero endpoint weight", &clusterv3.Cluster{Name: "c", LoadAssignment: cla(locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80, weight(0))))},
			"load_assignment.endpoints[0].lb_endpoints[1].load_balancing_weight: must be at least 1"},
		{"priority above 128", &clusterv3.Cluster{Name: "c", LoadAssignment: cla(locality(129, ep("10.0.0.1", 80)))},
			"load_assignment.endpoints[0].priority: must be at most 128"},
		{"dns without endpoints", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_STRICT_DNS)},
			"load_assignment: a DNS cluster needs at least one endpoint"},
		{"dns port zero", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_STRICT_DNS), LoadAssignment: cla(locality(0, ep("localhost", 0)))},
			"load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address: address and port_value required"},
		{"dns zero weight", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_STRICT_DNS), LoadAssignment: cla(locality(0, ep("localhost", 80, weight(0))))},
			"load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1"},
		{"logical dns two endpoints", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: typ(clusterv3.Cluster_LOGICAL_DNS), LoadAssignment: cla(locality(0, ep("a.test", 80), ep("b.test", 80)))},
			"load_assignment: LOGICAL_DNS takes exactly one endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err == nil {
				t.Fatalf("New succeeded (%+v), want error %q", c, tc.want)
			}
			got := err.Error()
			// The protocol options case ends with protobuf's own message.
			if got != tc.want && !(tc.want[len(tc.want)-1] == ' ' && len(got) > len(tc.want) && got[:len(tc.want)] == tc.want) {
				t.Errorf("error %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewSettings(t *testing.T) {
	h2opts, _ := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}},
	}})
	downOpts, _ := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
		UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{},
	}})
	eds := &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	tests := []struct {
		name     string
		cfg      *clusterv3.Cluster
		protocol Protocol
		timeout  time.Duration
		refresh  time.Duration
		eds      string
	}{
		{"defaults", &clusterv3.Cluster{Name: "a"}, HTTP1, 5 * time.Second, 5 * time.Second, ""},
		{"timeouts", &clusterv3.Cluster{Name: "a", ConnectTimeout: durationpb.New(250 * time.Millisecond), DnsRefreshRate: durationpb.New(2 * time.Second)},
			HTTP1, 250 * time.Millisecond, 2 * time.Second, ""},
		{"http2 protocol options", &clusterv3.Cluster{Name: "a", Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}, HTTP2, 5 * time.Second, 5 * time.Second, ""},
		{"explicit http2", &clusterv3.Cluster{Name: "a", TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: h2opts}}, HTTP2, 5 * time.Second, 5 * time.Second, ""},
		{"downstream protocol", &clusterv3.Cluster{Name: "a", TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: downOpts}}, Downstream, 5 * time.Second, 5 * time.Second, ""},
		{"eds default service name", &clusterv3.Cluster{Name: "a", ClusterDiscoveryType: eds}, HTTP1, 5 * time.Second, 5 * time.Second, "a"},
		{"eds service name", &clusterv3.Cluster{Name: "a", ClusterDiscoveryType: eds, EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "svc"}},
			HTTP1, 5 * time.Second, 5 * time.Second, "svc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.Protocol != tc.protocol || c.ConnectTimeout != tc.timeout || c.DNSRefresh != tc.refresh || c.EDSServiceName != tc.eds {
				t.Errorf("got protocol %d timeout %v refresh %v eds %q, want %d %v %v %q",
					c.Protocol, c.ConnectTimeout, c.DNSRefresh, c.EDSServiceName, tc.protocol, tc.timeout, tc.refresh, tc.eds)
			}
		})
	}
}

// pickCounts picks n times with ROUND_ROBIN-independent random numbers
// 0..n-1 and counts the hosts chosen.
func pickCounts(c *Cluster, randoms []uint64) map[string]int {
	got := map[string]int{}
	for _, r := range randoms {
		h := c.Pick(r)
		if h == nil {
			got["<nil>"]++
			continue
		}
		got[h.Addr]++
	}
	return got
}

func seq(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i)
	}
	return out
}

func TestHealthStatus(t *testing.T) {
	// Three healthy hosts keep the priority fully available (3/4 * 1.4 >
	// 100%), so the fourth gets traffic only if its status is routable.
	tests := []struct {
		status   corev3.HealthStatus
		routable bool
	}{
		{corev3.HealthStatus_UNKNOWN, true},
		{corev3.HealthStatus_HEALTHY, true},
		{corev3.HealthStatus_UNHEALTHY, false},
		{corev3.HealthStatus_DRAINING, false},
		{corev3.HealthStatus_TIMEOUT, false},
		{corev3.HealthStatus_DEGRADED, false},
	}
	for _, tc := range tests {
		t.Run(tc.status.String(), func(t *testing.T) {
			c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(locality(0,
				ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("10.0.0.3", 80), ep("10.0.0.4", 80, health(tc.status)))))
			hs := c.Hosts()
			if len(hs.All) != 4 || hs.All[3].Healthy != tc.routable {
				t.Fatalf("hosts %d, fourth healthy=%v, want 4, %v", len(hs.All), hs.All[3].Healthy, tc.routable)
			}
			got := pickCounts(c, seq(400))
			if n := got["10.0.0.4:80"]; (n > 0) != tc.routable {
				t.Errorf("fourth host picked %d times of 400 (%v), routable=%v", n, got, tc.routable)
			}
		})
	}
}

func TestPriorityLoad(t *testing.T) {
	hosts := func(prio uint32, healthy, unhealthy int, base int) *endpointv3.LocalityLbEndpoints {
		le := locality(prio)
		for i := range healthy + unhealthy {
			var opts []epOpt
			if i >= healthy {
				opts = append(opts, health(corev3.HealthStatus_UNHEALTHY))
			}
			le.LbEndpoints = append(le.LbEndpoints, ep(fmt.Sprintf("10.0.%d.%d", prio, base+i), 80, opts...))
		}
		return le
	}
	// Rows from Envoy's panic threshold and priority level docs, with four
	// hosts per priority (25% steps). Loads are exact because Pick takes
	// the priority from random%100.
	tests := []struct {
		name             string
		a                *endpointv3.ClusterLoadAssignment
		p0, p1           int  // picks of 100 landing in each priority
		p0All, p1AllSeen bool // whether unhealthy hosts get traffic (panic)
	}{
		{"P0 healthy takes all", cla(hosts(0, 4, 0, 1), hosts(1, 4, 0, 1)), 100, 0, false, false},
		{"P0 25% spills 65% to P1", cla(hosts(0, 1, 3, 1), hosts(1, 4, 0, 1)), 35, 65, false, false},
		{"P0 50% spills 30% to P1", cla(hosts(0, 2, 2, 1), hosts(1, 4, 0, 1)), 70, 30, false, false},
		{"P0 0% sends all to P1", cla(hosts(0, 0, 4, 1), hosts(1, 4, 0, 1)), 0, 100, false, false},
		{"both 25% panic", cla(hosts(0, 1, 3, 1), hosts(1, 1, 3, 1)), 50, 50, true, true},
		// Envoy's total panic: load by host count across priorities.
		{"none healthy", cla(hosts(0, 0, 4, 1), hosts(1, 0, 4, 1)), 50, 50, true, true},
		{"none healthy uneven", cla(hosts(0, 0, 1, 1), hosts(1, 0, 3, 1)), 25, 75, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, tc.a)
			var p0, p1 int
			unhealthy := map[uint32]bool{}
			for r := range uint64(100) {
				h := c.Pick(r)
				if h == nil {
					t.Fatalf("Pick(%d) = nil", r)
				}
				if h.Priority == 0 {
					p0++
				} else {
					p1++
				}
				if !h.Healthy {
					unhealthy[h.Priority] = true
				}
			}
			if p0 != tc.p0 || p1 != tc.p1 {
				t.Errorf("priority split %d/%d, want %d/%d", p0, p1, tc.p0, tc.p1)
			}
			if unhealthy[0] != tc.p0All || unhealthy[1] != tc.p1AllSeen {
				t.Errorf("unhealthy hosts picked in P0=%v P1=%v, want %v %v", unhealthy[0], unhealthy[1], tc.p0All, tc.p1AllSeen)
			}
		})
	}
}

func TestPanicSinglePriority(t *testing.T) {
	// One of four healthy is under the 50% panic threshold: Envoy balances
	// over every host, so each gets an even share of round robin.
	c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(locality(0,
		ep("10.0.0.1", 80), ep("10.0.0.2", 80, health(corev3.HealthStatus_UNHEALTHY)),
		ep("10.0.0.3", 80, health(corev3.HealthStatus_DRAINING)), ep("10.0.0.4", 80, health(corev3.HealthStatus_TIMEOUT)))))
	got := pickCounts(c, seq(400))
	for _, a := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"} {
		if got[a] != 100 {
			t.Errorf("%s picked %d of 400, want 100 (%v)", a, got[a], got)
		}
	}
	// Two of four is at the threshold, not under it: only healthy hosts.
	c = staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(locality(0,
		ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("10.0.0.3", 80, health(corev3.HealthStatus_UNHEALTHY)), ep("10.0.0.4", 80, health(corev3.HealthStatus_UNHEALTHY)))))
	got = pickCounts(c, seq(400))
	if got["10.0.0.1:80"] != 200 || got["10.0.0.2:80"] != 200 {
		t.Errorf("at 50%% healthy got %v, want the two healthy hosts 200 each", got)
	}
}

func TestDegradedFallback(t *testing.T) {
	// One healthy and one degraded host: 70% healthy availability, the
	// remaining 30% goes to the degraded host (Envoy's degraded load).
	c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(locality(0,
		ep("10.0.0.1", 80), ep("10.0.0.2", 80, health(corev3.HealthStatus_DEGRADED)))))
	got := pickCounts(c, seq(100))
	if got["10.0.0.1:80"] != 70 || got["10.0.0.2:80"] != 30 {
		t.Errorf("got %v, want 70 healthy / 30 degraded", got)
	}
}

func TestPickEmpty(t *testing.T) {
	for _, a := range []*endpointv3.ClusterLoadAssignment{nil, cla(), cla(locality(0))} {
		c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, a)
		if h := c.Pick(1); h != nil {
			t.Errorf("Pick on %v = %s, want nil", a, h.Addr)
		}
	}
	var c Cluster // never given endpoints
	if c.Pick(0) != nil || len(c.Hosts().All) != 0 {
		t.Error("zero Cluster has hosts")
	}
}

func TestRoundRobin(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		period  int
	}{
		{"equal", []uint32{1, 1, 1}, 3},
		{"equal heavy", []uint32{5, 5}, 2},
		{"3:1", []uint32{3, 1}, 4},
		{"5:1:1", []uint32{5, 1, 1}, 7},
		{"gcd 2:4", []uint32{2, 4}, 3},
		{"1:2:3:4", []uint32{1, 2, 3, 4}, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			le := locality(0)
			var total uint32
			g := uint32(0)
			for i, w := range tc.weights {
				le.LbEndpoints = append(le.LbEndpoints, ep(fmt.Sprintf("10.0.0.%d", i+1), 80, weight(w)))
				total += w
				g = gcd(g, w)
			}
			c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(le))
			// Over any window of whole periods every host gets exactly its
			// share, whatever the random starting point.
			periods := 5
			got := pickCounts(c, make([]uint64, tc.period*periods))
			for i, w := range tc.weights {
				a := fmt.Sprintf("10.0.0.%d:80", i+1)
				if want := int(w/g) * periods; got[a] != want {
					t.Errorf("%s picked %d, want %d (%v)", a, got[a], want, got)
				}
			}
			p := c.Hosts().targets[0].p
			equal := true
			for _, w := range tc.weights {
				equal = equal && w == tc.weights[0]
			}
			if equal {
				if p.schedule != nil {
					t.Errorf("equal weights built a schedule of %d", len(p.schedule))
				}
				return
			}
			checkSmooth(t, p.schedule, tc.weights, g)
		})
	}
}

// checkSmooth checks that the schedule is one period long and interleaved:
// in every prefix each host's count stays within one of its exact share
// (smooth weighted round robin), rather than bunched as AAAB.
func checkSmooth(t *testing.T, sched []*Host, weights []uint32, g uint32) {
	t.Helper()
	var total uint32
	for _, w := range weights {
		total += w / g
	}
	if len(sched) != int(total) {
		t.Fatalf("schedule length %d, want %d", len(sched), total)
	}
	count := map[string]int{}
	for k, h := range sched {
		count[h.Addr]++
		for i, w := range weights {
			a := fmt.Sprintf("10.0.0.%d:80", i+1)
			exact := float64(k+1) * float64(w/g) / float64(total)
			if d := float64(count[a]) - exact; d <= -1 || d >= 1 {
				t.Fatalf("after %d picks %s has %d, exact share %.2f: not smooth", k+1, a, count[a], exact)
			}
		}
	}
}

func TestLeastRequest(t *testing.T) {
	c := staticCluster(clusterv3.Cluster_LEAST_REQUEST, cla(locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("10.0.0.3", 80))))
	hs := c.Hosts().All
	hs[0].Active.Store(5)
	hs[1].Active.Store(1)
	hs[2].Active.Store(3)
	// Pick draws its two candidates from r = random/100: r mod 3 and
	// (r>>32) mod 3. Of any two distinct candidates the one with fewer
	// active requests must win.
	for a := range uint64(3) {
		for b := range uint64(3) {
			low := (a + 3 - b%3) % 3 // so that (b<<32 + low) % 3 == a, as 2^32 % 3 == 1
			r := (b<<32 + low) * 100
			got := c.Pick(r)
			want := hs[a]
			if hs[b].Active.Load() < hs[a].Active.Load() {
				want = hs[b]
			}
			if got != want {
				t.Errorf("candidates %s,%s: picked %s, want %s", hs[a].Addr, hs[b].Addr, got.Addr, want.Addr)
			}
		}
	}
	// With real random numbers the least loaded host wins most often and
	// the busiest only when drawn twice (1/9).
	rng := rand.New(rand.NewPCG(1, 2))
	got := map[*Host]int{}
	for range 9000 {
		got[c.Pick(rng.Uint64())]++
	}
	if got[hs[1]] <= got[hs[2]] || got[hs[2]] <= got[hs[0]] || got[hs[0]] > 1300 {
		t.Errorf("picks by active 5/1/3: %d/%d/%d, want least loaded most and busiest about 1000", got[hs[0]], got[hs[1]], got[hs[2]])
	}
	// A single host is always picked.
	one := staticCluster(clusterv3.Cluster_LEAST_REQUEST, cla(locality(0, ep("10.0.0.9", 80))))
	if h := one.Pick(12345); h == nil || h.Addr != "10.0.0.9:80" {
		t.Errorf("single host pick = %v", h)
	}
}

func TestRandom(t *testing.T) {
	c := staticCluster(clusterv3.Cluster_RANDOM, cla(locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80), ep("10.0.0.3", 80))))
	rng := rand.New(rand.NewPCG(3, 4))
	randoms := make([]uint64, 30000)
	for i := range randoms {
		randoms[i] = rng.Uint64()
	}
	got := pickCounts(c, randoms)
	// 10000 expected each; the standard deviation is about 82.
	for _, a := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"} {
		if got[a] < 9500 || got[a] > 10500 {
			t.Errorf("%s picked %d of 30000, want about 10000 (%v)", a, got[a], got)
		}
	}
	// The same random number gives the same host.
	if first, second := c.Pick(42), c.Pick(42); first != second {
		t.Error("RANDOM is not a function of the random number")
	}
}

func TestSetEndpointsKeepsHosts(t *testing.T) {
	c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, cla(locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80))))
	first := c.Hosts().All
	pool := &struct{ name string }{"pool"}
	first[0].Pool.Store(pool)
	first[1].Pool.Store(pool)
	first[0].Active.Store(7)

	type want struct {
		same     bool // the very Host object is kept (counters too)
		keepPool bool
	}
	tests := []struct {
		name string
		eps  *endpointv3.ClusterLoadAssignment
		h0   want
	}{
		{"unchanged", cla(locality(0, ep("10.0.0.1", 80), ep("10.0.0.2", 80))), want{true, true}},
		{"reordered", cla(locality(0, ep("10.0.0.2", 80), ep("10.0.0.1", 80))), want{true, true}},
		{"weight changed", cla(locality(0, ep("10.0.0.1", 80, weight(3)), ep("10.0.0.2", 80))), want{false, true}},
		{"health changed", cla(locality(0, ep("10.0.0.1", 80, health(corev3.HealthStatus_DRAINING)), ep("10.0.0.2", 80))), want{false, true}},
		{"hostname changed", cla(locality(0, ep("10.0.0.1", 80, hostname("new.example")), ep("10.0.0.2", 80))), want{false, true}},
		{"priority changed", cla(locality(1, ep("10.0.0.1", 80)), locality(0, ep("10.0.0.2", 80))), want{false, true}},
		{"port changed", cla(locality(0, ep("10.0.0.1", 81), ep("10.0.0.2", 80))), want{false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := staticCluster(clusterv3.Cluster_ROUND_ROBIN, nil)
			c.hosts.Store(newHostSet(first))
			if err := c.SetEndpoints(tc.eps); err != nil {
				t.Fatal(err)
			}
			var h0 *Host
			for _, h := range c.Hosts().All {
				if h.Addr == "10.0.0.1:80" || h.Addr == "10.0.0.1:81" {
					h0 = h
				}
			}
			if (h0 == first[0]) != tc.h0.same {
				t.Errorf("host kept = %v, want %v", h0 == first[0], tc.h0.same)
			}
			if (h0.Pool.Load() == pool) != tc.h0.keepPool {
				t.Errorf("pool kept = %v, want %v", h0.Pool.Load() == pool, tc.h0.keepPool)
			}
			// The new Host carries the new attributes, not stale ones.
			wantEP := tc.eps.GetEndpoints()
			for _, le := range wantEP {
				for _, lb := range le.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					if sa.GetAddress() != "10.0.0.1" {
						continue
					}
					if h0.Hostname != lb.GetEndpoint().GetHostname() || h0.Priority != le.GetPriority() ||
						h0.Weight != max(lb.GetLoadBalancingWeight().GetValue(), 1) || h0.Healthy != routable(lb.GetHealthStatus()) {
						t.Errorf("host %+v does not reflect %v", h0, lb)
					}
				}
			}
			// The untouched host is kept whatever happened to the other.
			for _, h := range c.Hosts().All {
				if h.Addr == "10.0.0.2:80" && h != first[1] {
					t.Error("unchanged 10.0.0.2 was replaced")
				}
			}
		})
	}
}

func TestValidateEndpoints(t *testing.T) {
	err := ValidateEndpoints([]*endpointv3.ClusterLoadAssignment{
		cla(locality(0, ep("10.0.0.1", 80))),
		{ClusterName: "bad", Endpoints: []*endpointv3.LocalityLbEndpoints{locality(0, ep("not-an-ip", 80))}},
	})
	want := `cluster_load_assignment "bad": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "not-an-ip" is not an IP address`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if err := ValidateEndpoints([]*endpointv3.ClusterLoadAssignment{cla(locality(0, ep("::1", 80)))}); err != nil {
		t.Errorf("IPv6 endpoint rejected: %v", err)
	}
}
