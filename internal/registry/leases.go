package registry

import (
	"sort"
	"sync"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

// Leases tracks the heartbeats of self-registered workloads (`amime proxy
// --register` creates a WorkloadEntry and then heartbeats it). A workload
// whose heartbeats stop is unhealthy after unhealthyAfter, so it stops
// receiving traffic while a slow or restarting proxy may still come back,
// and expired after removeAfter, when the control plane deletes its
// WorkloadEntry.
//
// Only entries that have heartbeated are tracked: a WorkloadEntry applied
// by an operator is never judged by liveness. After a control-plane
// restart, calling Heartbeat for every self-registered entry gives each a
// fresh grace period instead of expiring them all at once.
//
// Leases is safe for concurrent use.
type Leases struct {
	now            func() time.Time
	unhealthyAfter time.Duration
	removeAfter    time.Duration

	mu   sync.Mutex
	last map[config.Key]time.Time
}

// NewLeases returns an empty lease table. now is the clock (time.Now in
// production, a fake in tests); removeAfter is raised to unhealthyAfter
// when smaller.
func NewLeases(unhealthyAfter, removeAfter time.Duration, now func() time.Time) *Leases {
	if now == nil {
		now = time.Now
	}
	return &Leases{now: now, unhealthyAfter: unhealthyAfter, removeAfter: max(removeAfter, unhealthyAfter), last: map[config.Key]time.Time{}}
}

// Heartbeat records that the workload is alive now.
func (l *Leases) Heartbeat(k config.Key) {
	t := l.now()
	l.mu.Lock()
	l.last[k] = t
	l.mu.Unlock()
}

// Forget stops tracking a workload (it unregistered, or was deleted).
func (l *Leases) Forget(k config.Key) {
	l.mu.Lock()
	delete(l.last, k)
	l.mu.Unlock()
}

// Healthy implements HealthSource: untracked entries are healthy.
func (l *Leases) Healthy(k config.Key) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.last[k]
	return !ok || now.Sub(t) < l.unhealthyAfter
}

// Expired returns the tracked entries silent for removeAfter or longer,
// sorted, for the control plane to delete (then Forget).
func (l *Leases) Expired() []config.Key {
	now := l.now()
	l.mu.Lock()
	var out []config.Key
	for k, t := range l.last {
		if now.Sub(t) >= l.removeAfter {
			out = append(out, k)
		}
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// NextChange returns the earliest time after now at which some entry turns
// unhealthy or expires, so the control plane can rebuild the registry
// then instead of polling; false when nothing is pending.
func (l *Leases) NextChange() (time.Time, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var next time.Time
	for _, t := range l.last {
		for _, d := range []time.Duration{l.unhealthyAfter, l.removeAfter} {
			if at := t.Add(d); at.After(now) && (next.IsZero() || at.Before(next)) {
				next = at
			}
		}
	}
	return next, !next.IsZero()
}
