package cluster

import (
	"fmt"
	"testing"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func hashCluster(t *testing.T, lb clusterv3.Cluster_LbPolicy, n int) *Cluster {
	t.Helper()
	c := staticCluster(lb, hashCLA(n))
	if c == nil {
		t.Fatal("no cluster")
	}
	return c
}

func hashCLA(n int) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for i := range n {
		eps = append(eps, ep(fmt.Sprintf("10.0.0.%d", i+1), 80))
	}
	return cla(locality(0, eps...))
}

func keyHash(i int) uint64 { return xxhash.Sum64String(fmt.Sprintf("user-%d", i)) }

func TestHashSameKeySameHost(t *testing.T) {
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		c := hashCluster(t, lb, 5)
		for i := range 100 {
			h := c.PickHash(keyHash(i))
			for range 10 {
				if g := c.PickHash(keyHash(i)); g != h {
					t.Fatalf("%s: key %d picked %s then %s", lb, i, h.Addr, g.Addr)
				}
			}
		}
	}
}

func TestHashDistribution(t *testing.T) {
	const hosts, keys = 5, 20000
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		c := hashCluster(t, lb, hosts)
		counts := map[string]int{}
		for i := range keys {
			counts[c.PickHash(keyHash(i)).Addr]++
		}
		if len(counts) != hosts {
			t.Fatalf("%s: %d hosts used, want %d", lb, len(counts), hosts)
		}
		for a, n := range counts {
			// Within ±30% of the even share (ring of 1024 points).
			if n < keys/hosts*7/10 || n > keys/hosts*13/10 {
				t.Errorf("%s: host %s got %d of %d keys: %v", lb, a, n, keys, counts)
			}
		}
	}
}

func TestHashAddHostMovesFewKeys(t *testing.T) {
	const keys = 20000
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		c := hashCluster(t, lb, 4)
		before := make([]string, keys)
		for i := range keys {
			before[i] = c.PickHash(keyHash(i)).Addr
		}
		if err := c.SetEndpoints(hashCLA(5)); err != nil {
			t.Fatal(err)
		}
		moved := 0
		for i := range keys {
			if a := c.PickHash(keyHash(i)).Addr; a != before[i] {
				moved++
			}
		}
		// About 1/5 of the keys should move to the new host.
		if moved < keys/5*6/10 || moved > keys/5*15/10 {
			t.Errorf("%s: %d of %d keys moved, want about %d", lb, moved, keys, keys/5)
		}
	}
}

func TestHashWeighted(t *testing.T) {
	c := staticCluster(clusterv3.Cluster_RING_HASH, cla(locality(0, ep("10.0.0.1", 80, weight(1)), ep("10.0.0.2", 80, weight(3)))))
	counts := map[string]int{}
	for i := range 20000 {
		counts[c.PickHash(keyHash(i)).Addr]++
	}
	if r := float64(counts["10.0.0.2:80"]) / float64(counts["10.0.0.1:80"]); r < 2 || r > 4.5 {
		t.Errorf("weight 3:1 gave %v", counts)
	}
}

func TestHashConfigErrors(t *testing.T) {
	for name, cfg := range map[string]*clusterv3.Cluster{
		"min>max": {LbPolicy: clusterv3.Cluster_RING_HASH, LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(4096), MaximumRingSize: wrapperspb.UInt64(1024)}}},
		"maglev not prime": {LbPolicy: clusterv3.Cluster_MAGLEV, LbConfig: &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
			TableSize: wrapperspb.UInt64(1000)}}},
		"ring config with maglev": {LbPolicy: clusterv3.Cluster_MAGLEV, LbConfig: &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{}}},
	} {
		cfg.Name = "c"
		cfg.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestHashAvoidsEjectedHost(t *testing.T) {
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		c, err := New(&clusterv3.Cluster{
			Name:                 "c",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LbPolicy:             lb,
			LoadAssignment:       hashCLA(4),
			OutlierDetection:     &clusterv3.OutlierDetection{},
		})
		if err != nil {
			t.Fatal(err)
		}
		// Eject the host of key 0 by hand.
		victim := c.PickHash(keyHash(0))
		victim.od.ejectedUntil.Store(1)
		c.outlier.ejected.Add(1)
		for i := range 1000 {
			if c.PickHash(keyHash(i)) == victim {
				t.Fatalf("%s: ejected host picked for key %d", lb, i)
			}
		}
		// Keys of other hosts stay put once the host returns.
		victim.od.ejectedUntil.Store(0)
		c.outlier.ejected.Add(-1)
		if c.PickHash(keyHash(0)) != victim {
			t.Errorf("%s: key 0 did not return to its host", lb)
		}
	}
}
