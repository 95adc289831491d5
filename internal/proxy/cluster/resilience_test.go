package cluster

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func resilientCluster(t *testing.T, cb *clusterv3.CircuitBreakers, od *clusterv3.OutlierDetection, panicPct *float64, addrs ...string) *Cluster {
	t.Helper()
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		eps = append(eps, ep(a, 80))
	}
	cfg := &clusterv3.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:       cla(locality(0, eps...)),
		CircuitBreakers:      cb,
		OutlierDetection:     od,
	}
	if panicPct != nil {
		cfg.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: *panicPct}}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCircuitBreakerDefaults(t *testing.T) {
	c := resilientCluster(t, nil, nil, nil, "10.0.0.1")
	if c.CB.MaxConnections != 1024 || c.CB.MaxPending != 1024 || c.CB.MaxRequests != 1024 || c.CB.MaxRetries != 3 {
		t.Fatalf("defaults: %+v", c.CB)
	}
	c = resilientCluster(t, &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		{Priority: corev3.RoutingPriority_HIGH, MaxRequests: wrapperspb.UInt32(1)},
		{MaxConnections: wrapperspb.UInt32(7), MaxRetries: wrapperspb.UInt32(0)},
	}}, nil, nil, "10.0.0.1")
	if c.CB.MaxConnections != 7 || c.CB.MaxRequests != 1024 || c.CB.MaxRetries != 0 {
		t.Fatalf("thresholds: %+v", c.CB)
	}
	if c.CB.AcquireRetry() || c.CB.RetryOverflow.Load() != 1 {
		t.Fatal("max_retries 0 must refuse retries")
	}
	_, err := New(&clusterv3.Cluster{Name: "c", CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}})
	if err == nil {
		t.Fatal("duplicate DEFAULT thresholds accepted")
	}
}

func TestCircuitBreakerRequests(t *testing.T) {
	cb := &CircuitBreaker{MaxRequests: 2}
	for i, want := range []bool{true, true, false} {
		if got := cb.AcquireRequest(); got != want {
			t.Fatalf("request %d: acquired %v, want %v", i+1, got, want)
		}
	}
	cb.ReleaseRequest()
	if !cb.AcquireRequest() || cb.RqOverflow.Load() != 1 {
		t.Fatal("release did not free a slot")
	}
}

func TestCircuitBreakerPending(t *testing.T) {
	cb := &CircuitBreaker{MaxConnections: 1, MaxPending: 1}
	ctx := context.Background()
	if !cb.AcquireConnection(ctx) {
		t.Fatal("first connection")
	}
	got := make(chan bool)
	go func() { got <- cb.AcquireConnection(ctx) }()
	waitUntil(t, func() bool { _, p, _, _ := cb.Counts(); return p == 1 })
	if cb.AcquireConnection(ctx) || cb.PendingOverflow.Load() != 1 {
		t.Fatal("second waiter must overflow")
	}
	cb.ReleaseConnection()
	if !<-got {
		t.Fatal("pending request not handed the connection")
	}
	if cx, p, _, _ := cb.Counts(); cx != 1 || p != 0 {
		t.Fatalf("counts %d %d", cx, p)
	}
	// A waiter that gives up leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- cb.AcquireConnection(cctx) }()
	waitUntil(t, func() bool { _, p, _, _ := cb.Counts(); return p == 1 })
	cancel()
	if <-got {
		t.Fatal("cancelled waiter got a connection")
	}
	cb.ReleaseConnection()
	if cx, p, _, _ := cb.Counts(); cx != 0 || p != 0 {
		t.Fatalf("counts after release %d %d", cx, p)
	}
}

func TestCircuitBreakerConcurrent(t *testing.T) {
	cb := &CircuitBreaker{MaxConnections: 3, MaxPending: 1 << 20}
	var wg sync.WaitGroup
	var mu sync.Mutex
	busy, peak := 0, 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if !cb.AcquireConnection(context.Background()) {
					t.Error("overflow")
					return
				}
				mu.Lock()
				busy++
				peak = max(peak, busy)
				mu.Unlock()
				mu.Lock()
				busy--
				mu.Unlock()
				cb.ReleaseConnection()
			}
		}()
	}
	wg.Wait()
	if cx, p, _, _ := cb.Counts(); peak > 3 || cx != 0 || p != 0 {
		t.Fatalf("peak %d, left %d connections %d pending", peak, cx, p)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met")
}

// fakeClock drives ejection times.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time { return f.t }

func odCluster(t *testing.T, od *clusterv3.OutlierDetection, panicPct *float64, addrs ...string) (*Cluster, *fakeClock) {
	c := resilientCluster(t, nil, od, panicPct, addrs...)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	c.outlier.now = clk.now
	return c, clk
}

func pickN(c *Cluster, n int) map[string]int {
	out := map[string]int{}
	for i := range n {
		out[c.Pick(uint64(i)).Addr]++
	}
	return out
}

func TestOutlierConsecutive5xx(t *testing.T) {
	zero := 0.0
	c, clk := odCluster(t, &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		BaseEjectionTime:   durationpb.New(10 * time.Second),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}, &zero, "10.0.0.1", "10.0.0.2")
	bad := c.Hosts().All[0]
	c.Report(bad, OutcomeStatus, 500)
	c.Report(bad, OutcomeStatus, 500)
	c.Report(bad, OutcomeStatus, 200) // resets
	c.Report(bad, OutcomeStatus, 500)
	c.Report(bad, OutcomeStatus, 500)
	if bad.Ejected() {
		t.Fatal("ejected before 3 consecutive 5xx")
	}
	c.Report(bad, OutcomeStatus, 500)
	if !bad.Ejected() {
		t.Fatal("not ejected after 3 consecutive 5xx")
	}
	if got := pickN(c, 100); got["10.0.0.1:80"] != 0 {
		t.Fatalf("ejected host picked: %v", got)
	}
	clk.t = clk.t.Add(9 * time.Second)
	c.outlier.sweep()
	if !bad.Ejected() {
		t.Fatal("returned before base_ejection_time")
	}
	clk.t = clk.t.Add(2 * time.Second)
	c.outlier.sweep()
	if bad.Ejected() {
		t.Fatal("not returned after base_ejection_time")
	}
	if got := pickN(c, 100); got["10.0.0.1:80"] != 50 {
		t.Fatalf("returned host not balanced: %v", got)
	}
	// Second ejection lasts twice as long.
	for range 3 {
		c.Report(bad, OutcomeStatus, 503)
	}
	clk.t = clk.t.Add(15 * time.Second)
	c.outlier.sweep()
	if !bad.Ejected() {
		t.Fatal("second ejection shorter than 2 x base")
	}
	clk.t = clk.t.Add(6 * time.Second)
	c.outlier.sweep()
	if bad.Ejected() {
		t.Fatal("second ejection longer than 2 x base")
	}
	if total, active := c.OutlierEjections(); total != 2 || active != 0 {
		t.Fatalf("ejections %d active %d", total, active)
	}
}

func TestOutlierMaxEjectionTime(t *testing.T) {
	c, clk := odCluster(t, &clusterv3.OutlierDetection{
		Consecutive_5Xx:  wrapperspb.UInt32(1),
		BaseEjectionTime: durationpb.New(10 * time.Second),
		MaxEjectionTime:  durationpb.New(15 * time.Second),
	}, nil, "10.0.0.1")
	h := c.Hosts().All[0]
	for i := range 3 {
		c.Report(h, OutcomeStatus, 500)
		if !h.Ejected() {
			t.Fatalf("ejection %d: not ejected", i)
		}
		clk.t = clk.t.Add(15 * time.Second)
		c.outlier.sweep()
		if h.Ejected() {
			t.Fatalf("ejection %d: longer than max_ejection_time", i)
		}
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	// Default 10%: one host of four may still be ejected (Envoy ejects
	// while the ejected share is below the limit), not two.
	c, _ := odCluster(t, &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1)}, nil, addrs...)
	hs := c.Hosts().All
	c.Report(hs[0], OutcomeStatus, 500)
	c.Report(hs[1], OutcomeStatus, 500)
	if !hs[0].Ejected() || hs[1].Ejected() {
		t.Fatalf("10%% of 4: ejected %v %v", hs[0].Ejected(), hs[1].Ejected())
	}
	// 50%: two of four.
	c, _ = odCluster(t, &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(50)}, nil, addrs...)
	hs = c.Hosts().All
	for _, h := range hs {
		c.Report(h, OutcomeStatus, 500)
	}
	if n := countEjected(hs); n != 2 {
		t.Fatalf("50%% of 4: %d ejected", n)
	}
	// 0%: none.
	c, _ = odCluster(t, &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(0)}, nil, addrs...)
	c.Report(c.Hosts().All[0], OutcomeStatus, 500)
	if n := countEjected(c.Hosts().All); n != 0 {
		t.Fatalf("0%%: %d ejected", n)
	}
}

func countEjected(hs []*Host) int {
	n := 0
	for _, h := range hs {
		if h.Ejected() {
			n++
		}
	}
	return n
}

func TestOutlierGatewayAndLocalOrigin(t *testing.T) {
	// Gateway failures: enforcing defaults to 0 in Envoy.
	c, _ := odCluster(t, &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: wrapperspb.UInt32(2), Consecutive_5Xx: wrapperspb.UInt32(100)}, nil, "10.0.0.1", "10.0.0.2")
	h := c.Hosts().All[0]
	c.Report(h, OutcomeStatus, 502)
	c.Report(h, OutcomeStatus, 504)
	if h.Ejected() {
		t.Fatal("gateway ejection enforced at default 0%")
	}
	c, _ = odCluster(t, &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: wrapperspb.UInt32(2), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100), Consecutive_5Xx: wrapperspb.UInt32(100)}, nil, "10.0.0.1", "10.0.0.2")
	h = c.Hosts().All[0]
	c.Report(h, OutcomeStatus, 502)
	c.Report(h, OutcomeStatus, 500) // not a gateway error: resets
	c.Report(h, OutcomeConnectFailure, 0)
	if h.Ejected() {
		t.Fatal("500 did not reset the gateway count")
	}
	c.Report(h, OutcomeTimeout, 0) // local origin counts as a gateway error without split
	if !h.Ejected() {
		t.Fatal("not ejected after 2 gateway failures")
	}
	// Split: local-origin failures count apart and 5xx responses do not
	// reset them.
	c, _ = odCluster(t, &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(2), Consecutive_5Xx: wrapperspb.UInt32(100)}, nil, "10.0.0.1", "10.0.0.2")
	h = c.Hosts().All[0]
	c.Report(h, OutcomeReset, 0)
	c.Report(h, OutcomeStatus, 500)
	if h.Ejected() {
		t.Fatal("ejected early")
	}
	// A response is a local-origin success.
	c.Report(h, OutcomeConnectFailure, 0)
	if h.Ejected() {
		t.Fatal("a response did not reset local-origin failures")
	}
	c.Report(h, OutcomeConnectFailure, 0)
	if !h.Ejected() {
		t.Fatal("not ejected after 2 local-origin failures")
	}
}

func TestOutlierPanic(t *testing.T) {
	// Default panic threshold 50%: with one of two hosts ejected, 50% are
	// available, no panic; with both... only one may be ejected at 50%.
	// Use 3 hosts and 70% ejection: two ejected leaves 33% < 50% => panic,
	// balanced over all.
	c, _ := odCluster(t, &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(70)}, nil, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	hs := c.Hosts().All
	c.Report(hs[0], OutcomeStatus, 500)
	c.Report(hs[1], OutcomeStatus, 500)
	if countEjected(hs) != 2 {
		t.Fatal("setup")
	}
	if got := pickN(c, 300); got["10.0.0.1:80"] != 100 {
		t.Fatalf("panic mode should balance over all: %v", got)
	}
	// Threshold 0 disables panic mode.
	zero := 0.0
	c, _ = odCluster(t, &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(70)}, &zero, "10.0.0.1", "10.0.0.2", "10.0.0.3")
	hs = c.Hosts().All
	c.Report(hs[0], OutcomeStatus, 500)
	c.Report(hs[1], OutcomeStatus, 500)
	if got := pickN(c, 300); got["10.0.0.3:80"] != 300 {
		t.Fatalf("without panic only the healthy host: %v", got)
	}
}

func TestOutlierManagerTimer(t *testing.T) {
	m := NewManager(slog.New(slog.DiscardHandler))
	defer m.Close()
	c := resilientCluster(t, nil, &clusterv3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(1), Interval: durationpb.New(10 * time.Millisecond),
		BaseEjectionTime: durationpb.New(50 * time.Millisecond),
	}, nil, "10.0.0.1", "10.0.0.2")
	m.Replace(context.Background(), map[string]*Cluster{"c": c})
	h := c.Hosts().All[0]
	c.Report(h, OutcomeStatus, 500)
	if !h.Ejected() {
		t.Fatal("not ejected")
	}
	waitUntil(t, func() bool { return !h.Ejected() })
	// Removing the cluster stops its timer (Close waits for it).
	m.Replace(context.Background(), map[string]*Cluster{})
}

func TestOutlierConfigErrors(t *testing.T) {
	for _, od := range []*clusterv3.OutlierDetection{
		{Interval: durationpb.New(0)},
		{MaxEjectionPercent: wrapperspb.UInt32(101)},
		{EnforcingConsecutive_5Xx: wrapperspb.UInt32(200)},
	} {
		if _, err := New(&clusterv3.Cluster{Name: "c", OutlierDetection: od}); err == nil {
			t.Errorf("%v accepted", od)
		}
	}
	if _, err := New(&clusterv3.Cluster{Name: "c", CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 101}}}); err == nil {
		t.Error("panic threshold 101 accepted")
	}
}
