package cluster

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Consistent-hash load balancing (RING_HASH and MAGLEV). The ring or table
// of each picker is built when an endpoint set is installed, so a pick is a
// lookup in an immutable slice.

// Envoy's defaults and limits (ring_hash_lb_config, maglev_lb_config).
const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 * 1024 * 1024
	maxRingSizeLimit   = 8 * 1024 * 1024
	defaultMaglevSize  = 65537
)

// hashConfig is the cluster's consistent-hash configuration.
type hashConfig struct {
	minRing, maxRing uint64
	maglevSize       uint64
}

// IsHashLB reports whether the cluster balances by request hash.
func (c *Cluster) IsHashLB() bool {
	return c.LB == clusterv3.Cluster_RING_HASH || c.LB == clusterv3.Cluster_MAGLEV
}

func newHashConfig(cfg *clusterv3.Cluster) (hashConfig, error) {
	hc := hashConfig{minRing: defaultMinRingSize, maxRing: defaultMaxRingSize, maglevSize: defaultMaglevSize}
	if rc := cfg.GetRingHashLbConfig(); rc != nil {
		if cfg.GetLbPolicy() != clusterv3.Cluster_RING_HASH {
			return hc, fmt.Errorf("ring_hash_lb_config: only with lb_policy RING_HASH")
		}
		if rc.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return hc, fmt.Errorf("ring_hash_lb_config.hash_function: only XX_HASH is supported by amime")
		}
		if v := rc.GetMinimumRingSize(); v != nil {
			hc.minRing = v.GetValue()
		}
		if v := rc.GetMaximumRingSize(); v != nil {
			hc.maxRing = v.GetValue()
		}
		if hc.maxRing > maxRingSizeLimit {
			return hc, fmt.Errorf("ring_hash_lb_config.maximum_ring_size: must be at most %d", maxRingSizeLimit)
		}
		if hc.minRing > hc.maxRing {
			// Envoy: "ring hash: minimum_ring_size (...) > maximum_ring_size (...)".
			return hc, fmt.Errorf("ring_hash_lb_config: minimum_ring_size (%d) > maximum_ring_size (%d)", hc.minRing, hc.maxRing)
		}
	}
	if mc := cfg.GetMaglevLbConfig(); mc != nil {
		if cfg.GetLbPolicy() != clusterv3.Cluster_MAGLEV {
			return hc, fmt.Errorf("maglev_lb_config: only with lb_policy MAGLEV")
		}
		if v := mc.GetTableSize(); v != nil {
			hc.maglevSize = v.GetValue()
			if hc.maglevSize == 0 || hc.maglevSize > 5000011 || !isPrime(hc.maglevSize) {
				return hc, fmt.Errorf("maglev_lb_config.table_size: must be a prime number at most 5000011")
			}
		}
	}
	return hc, nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// hashTable maps a hash to a host index of its picker.
type hashTable struct {
	// ring hash: sorted points and their hosts.
	points []uint64
	owners []*Host
	// maglev: lookup table.
	table []*Host
}

func (t *hashTable) lookup(hash uint64) int {
	if t.table != nil {
		return int(hash % uint64(len(t.table)))
	}
	i, _ := slices.BinarySearch(t.points, hash)
	if i == len(t.points) {
		i = 0
	}
	return i
}

func (t *hashTable) at(i int) *Host {
	if t.table != nil {
		return t.table[i]
	}
	return t.owners[i]
}

func (t *hashTable) size() int {
	if t.table != nil {
		return len(t.table)
	}
	return len(t.points)
}

// buildRing is Envoy's RingHashLoadBalancer: each host gets a number of
// points proportional to its weight, the ring having between minRing and
// maxRing entries; point i of host "addr" hashes "addr_i".
func buildRing(hosts []*Host, hc hashConfig) *hashTable {
	if len(hosts) == 0 {
		return &hashTable{}
	}
	var sum uint64
	minW := ^uint64(0)
	for _, h := range hosts {
		sum += uint64(h.Weight)
		minW = min(minW, uint64(h.Weight))
	}
	// Scale so the lightest host gets at least one point and the ring at
	// least minRing points, capped at maxRing.
	minNorm := float64(minW) / float64(sum)
	scale := min(float64(max(hc.minRing, uint64(1/minNorm+0.5))), float64(hc.maxRing))
	t := &hashTable{}
	type point struct {
		h uint64
		o *Host
	}
	var pts []point
	var target, current float64
	buf := make([]byte, 0, 64)
	for _, h := range hosts {
		target += scale * float64(h.Weight) / float64(sum)
		for i := 0; current < target; i++ {
			buf = append(append(append(buf[:0], h.Addr...), '_'), strconv.Itoa(i)...)
			pts = append(pts, point{xxhash.Sum64(buf), h})
			current++
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	t.points = make([]uint64, len(pts))
	t.owners = make([]*Host, len(pts))
	for i, p := range pts {
		t.points[i], t.owners[i] = p.h, p.o
	}
	return t
}

// buildMaglev is the Maglev lookup table (Eisenbud et al.), weighted as
// Envoy's MaglevTable: each host fills its preference list in turn, hosts
// with a larger weight taking proportionally more turns.
func buildMaglev(hosts []*Host, size uint64) *hashTable {
	if len(hosts) == 0 {
		return &hashTable{}
	}
	n := len(hosts)
	offset, skip, next := make([]uint64, n), make([]uint64, n), make([]uint64, n)
	progress := make([]float64, n)
	var maxW uint32
	for i, h := range hosts {
		offset[i] = xxhash.Sum64String(h.Addr) % size
		skip[i] = xxhash.Sum64String(h.Addr+"\x00seed")%(size-1) + 1
		maxW = max(maxW, h.Weight)
	}
	table := make([]*Host, size)
	var filled uint64
	for iter := 1; filled < size; iter++ {
		for i, h := range hosts {
			if filled == size {
				break
			}
			// Weighted turns: a host takes a turn whenever its
			// accumulated share reaches the next whole number.
			if float64(h.Weight)*float64(iter)/float64(maxW) < progress[i]+1 {
				continue
			}
			progress[i]++
			for {
				c := (offset[i] + next[i]*skip[i]) % size
				next[i]++
				if table[c] == nil {
					table[c] = h
					filled++
					break
				}
			}
		}
	}
	return &hashTable{table: table}
}

// buildHashTables gives every picker of hs its ring or Maglev table.
// Called before hs is published.
func (c *Cluster) buildHashTables(hs *HostSet) {
	if !c.IsHashLB() {
		return
	}
	for _, t := range hs.targets {
		if c.LB == clusterv3.Cluster_MAGLEV {
			t.p.hash = buildMaglev(t.p.hosts, c.hashCfg.maglevSize)
		} else {
			t.p.hash = buildRing(t.p.hosts, c.hashCfg)
		}
	}
}

// PickHash chooses a host for a request hash, or nil when the cluster has
// none. The same hash picks the same host while the endpoint set is
// unchanged; an ejected host is passed over for the next host on the ring
// (or table), unless too few hosts are in service (panic mode), as Pick
// does. A cluster that is not RING_HASH or MAGLEV uses Pick.
func (c *Cluster) PickHash(hash uint64) *Host {
	p := c.hosts.Load().priority(hash)
	if p == nil {
		return nil
	}
	t := p.hash
	if t == nil {
		return c.Pick(hash)
	}
	if t.size() == 0 {
		return nil
	}
	i := t.lookup(hash)
	h := t.at(i)
	if c.outlier == nil || c.outlier.ejected.Load() == 0 || !h.Ejected() {
		return h
	}
	in := 0
	for _, x := range p.hosts {
		if !x.Ejected() {
			in++
		}
	}
	if in == 0 || uint64(in)*100 < uint64(c.panicThreshold)*uint64(len(p.hosts)) {
		return h
	}
	n := t.size()
	for k := 1; k < n; k++ {
		if x := t.at((i + k) % n); !x.Ejected() {
			return x
		}
	}
	return h
}
