package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Outcome is what an upstream exchange told about its host.
type Outcome int

const (
	// OutcomeStatus: a response head arrived; Status holds its code.
	OutcomeStatus Outcome = iota
	// OutcomeConnectFailure: no connection could be made (local origin).
	OutcomeConnectFailure
	// OutcomeTimeout: the host did not answer in time (local origin).
	OutcomeTimeout
	// OutcomeReset: the connection broke before a response (local origin).
	OutcomeReset
)

// outlierConfig is Envoy's OutlierDetection with its defaults applied.
// Success-rate and failure-percentage detection are not implemented (their
// enforcing_* fields are accepted, Istio sets enforcing_success_rate 0).
type outlierConfig struct {
	interval, baseEjection, maxEjection           time.Duration
	maxEjectionPercent                            uint32
	consecutive5xx, consecutiveGateway, consLocal uint32
	enforce5xx, enforceGateway, enforceLocal      uint32
	split                                         bool
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func dur(d *durationpb.Duration, def time.Duration, field string) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	v := d.AsDuration()
	if v <= 0 {
		return 0, fmt.Errorf("outlier_detection.%s: must be greater than 0s", field)
	}
	return v, nil
}

func newOutlierConfig(od *clusterv3.OutlierDetection) (*outlierConfig, error) {
	c := &outlierConfig{
		maxEjectionPercent: u32(od.GetMaxEjectionPercent(), 10),
		consecutive5xx:     u32(od.GetConsecutive_5Xx(), 5),
		consecutiveGateway: u32(od.GetConsecutiveGatewayFailure(), 5),
		consLocal:          u32(od.GetConsecutiveLocalOriginFailure(), 5),
		enforce5xx:         u32(od.GetEnforcingConsecutive_5Xx(), 100),
		enforceGateway:     u32(od.GetEnforcingConsecutiveGatewayFailure(), 0),
		enforceLocal:       u32(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		split:              od.GetSplitExternalLocalOriginErrors(),
	}
	var err error
	if c.interval, err = dur(od.GetInterval(), 10*time.Second, "interval"); err != nil {
		return nil, err
	}
	if c.baseEjection, err = dur(od.GetBaseEjectionTime(), 30*time.Second, "base_ejection_time"); err != nil {
		return nil, err
	}
	if c.maxEjection, err = dur(od.GetMaxEjectionTime(), 300*time.Second, "max_ejection_time"); err != nil {
		return nil, err
	}
	for name, v := range map[string]uint32{"max_ejection_percent": c.maxEjectionPercent,
		"enforcing_consecutive_5xx": c.enforce5xx, "enforcing_consecutive_gateway_failure": c.enforceGateway,
		"enforcing_consecutive_local_origin_failure": c.enforceLocal,
		"enforcing_success_rate":                     u32(od.GetEnforcingSuccessRate(), 0)} {
		if v > 100 {
			return nil, fmt.Errorf("outlier_detection.%s: must be at most 100", name)
		}
	}
	return c, nil
}

// hostOutlier is a host's outlier detection state; the request path only
// touches its atomics.
type hostOutlier struct {
	cons5xx, consGateway, consLocal atomic.Uint32
	// ejectedUntil is the UnixNano end of the current ejection, 0 when the
	// host is in service. Only the detector (under its mutex) writes it.
	ejectedUntil atomic.Int64
	ejections    uint32 // times ejected (decays while healthy); under mu
}

// Ejected reports whether outlier detection has taken the host out of
// load balancing.
func (h *Host) Ejected() bool { return h.od.ejectedUntil.Load() != 0 }

// outlierDetector is a cluster's. Ejection decisions are rare and take mu;
// reports of successes are lock-free.
type outlierDetector struct {
	cfg     *outlierConfig
	c       *Cluster
	mu      sync.Mutex
	ejected atomic.Int64 // hosts currently ejected
	// Ejections counts ejections performed (Envoy's ejections_enforced_total).
	Ejections atomic.Uint64
	now       func() time.Time
}

// Report records the outcome of one exchange with h. status is the
// response code for OutcomeStatus.
func (c *Cluster) Report(h *Host, o Outcome, status int) {
	d := c.outlier
	if d == nil || h == nil {
		return
	}
	od := &h.od
	cfg := d.cfg
	if o != OutcomeStatus {
		if cfg.split {
			if n := od.consLocal.Add(1); n == cfg.consLocal {
				d.maybeEject(h, cfg.enforceLocal)
			}
			return
		}
		// Mapped to a gateway error (Envoy: connect failure and reset are
		// 503, timeout 504), counted both ways.
		status = 503
		if o == OutcomeTimeout {
			status = 504
		}
	} else if cfg.split {
		// A response is a local-origin success.
		if od.consLocal.Load() != 0 {
			od.consLocal.Store(0)
		}
	}
	if status < 500 {
		if od.cons5xx.Load() != 0 {
			od.cons5xx.Store(0)
		}
		if od.consGateway.Load() != 0 {
			od.consGateway.Store(0)
		}
		return
	}
	if status == 502 || status == 503 || status == 504 {
		if n := od.consGateway.Add(1); n == cfg.consecutiveGateway {
			d.maybeEject(h, cfg.enforceGateway)
		}
	} else if od.consGateway.Load() != 0 {
		od.consGateway.Store(0)
	}
	if n := od.cons5xx.Add(1); n == cfg.consecutive5xx {
		d.maybeEject(h, cfg.enforce5xx)
	}
}

// maybeEject ejects h when the enforcing percentage and
// max_ejection_percent allow. Envoy allows an ejection while the share
// already ejected is below max_ejection_percent, so one host can always be
// ejected (unless the percentage is 0) even when one host is more than the
// percentage of the cluster.
func (d *outlierDetector) maybeEject(h *Host, enforcing uint32) {
	if enforcing < 100 && rand.Uint32N(100) >= enforcing {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	od := &h.od
	od.cons5xx.Store(0)
	od.consGateway.Store(0)
	od.consLocal.Store(0)
	if od.ejectedUntil.Load() != 0 {
		return
	}
	total := int64(len(d.c.Hosts().All))
	if total == 0 || 100*d.ejected.Load() >= int64(d.cfg.maxEjectionPercent)*total {
		return
	}
	od.ejections++
	t := d.cfg.baseEjection * time.Duration(od.ejections)
	t = min(t, max(d.cfg.maxEjection, d.cfg.baseEjection))
	od.ejectedUntil.Store(d.now().Add(t).UnixNano())
	d.ejected.Add(1)
	d.Ejections.Add(1)
}

// sweep returns hosts whose ejection time is over to service, and lets the
// ejection multiplier of hosts in service decay, as Envoy's interval timer
// does.
func (d *outlierDetector) sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now().UnixNano()
	var n int64
	for _, h := range d.c.Hosts().All {
		od := &h.od
		switch until := od.ejectedUntil.Load(); {
		case until != 0 && until <= now:
			od.ejectedUntil.Store(0)
		case until != 0:
			n++
		case od.ejections > 0:
			od.ejections--
		}
	}
	// Hosts removed from the cluster no longer count as ejected.
	d.ejected.Store(n)
}

// runOutlier sweeps every interval until ctx ends.
func (c *Cluster) runOutlier(ctx context.Context) {
	t := time.NewTicker(c.outlier.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.outlier.sweep()
		}
	}
}

// OutlierEjections returns the number of ejections so far and the hosts
// ejected now.
func (c *Cluster) OutlierEjections() (total uint64, active int64) {
	if c.outlier == nil {
		return 0, 0
	}
	return c.outlier.Ejections.Load(), c.outlier.ejected.Load()
}

// avoidEjected returns h, or when h is ejected another host of hosts that
// is not, searching from index i. When fewer than the panic threshold of
// hosts are in service it returns h: Envoy's panic mode balances over all
// hosts.
func (c *Cluster) avoidEjected(hosts []*Host, i uint64, h *Host) *Host {
	if c.outlier == nil || c.outlier.ejected.Load() == 0 || !h.Ejected() {
		return h
	}
	n := uint64(len(hosts))
	in := uint64(0)
	for _, x := range hosts {
		if !x.Ejected() {
			in++
		}
	}
	if in*100 < uint64(c.panicThreshold)*n || in == 0 {
		return h
	}
	for k := uint64(1); k < n; k++ {
		if x := hosts[(i+k)%n]; !x.Ejected() {
			return x
		}
	}
	return h
}
