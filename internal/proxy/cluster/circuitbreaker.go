package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Envoy's default thresholds (circuit_breakers.thresholds unset).
const (
	defaultMaxConnections = 1024
	defaultMaxPending     = 1024
	defaultMaxRequests    = 1024
	defaultMaxRetries     = 3
)

// CircuitBreaker is a cluster's DEFAULT priority circuit breaker (Envoy's
// ResourceManager). The request path only uses atomics; a mutex is taken
// only by requests that must wait for a connection and by the release that
// hands them one.
//
// Connections are modelled as "connections busy with a request": an
// HTTP/1.1 request holds one from AcquireConnection to ReleaseConnection,
// and a request that finds max_connections busy waits as pending (at most
// max_pending_requests of them; beyond that it overflows). Idle pooled
// connections are not counted, so the pool may hold more idle connections
// than max_connections. HTTP/2 requests take no connection slot (they are
// multiplexed); only max_requests bounds them.
type CircuitBreaker struct {
	MaxConnections, MaxPending, MaxRequests, MaxRetries int64

	connections, pending, requests, retries atomic.Int64
	// Overflows counts requests refused by each threshold (Envoy's
	// upstream_cx_overflow, upstream_rq_pending_overflow, ...).
	CxOverflow, PendingOverflow, RqOverflow, RetryOverflow atomic.Uint64

	mu      sync.Mutex
	waiters []chan struct{} // pending requests, oldest first
}

func newCircuitBreaker(cfg *clusterv3.CircuitBreakers) (*CircuitBreaker, error) {
	cb := &CircuitBreaker{MaxConnections: defaultMaxConnections, MaxPending: defaultMaxPending,
		MaxRequests: defaultMaxRequests, MaxRetries: defaultMaxRetries}
	seen := false
	for i, t := range cfg.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			// Only DEFAULT priority routes exist in amime; HIGH thresholds
			// are accepted and have nothing to limit.
			continue
		}
		if seen {
			return nil, fmt.Errorf("circuit_breakers.thresholds[%d]: duplicate DEFAULT priority", i)
		}
		seen = true
		if v := t.GetMaxConnections(); v != nil {
			cb.MaxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			cb.MaxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			cb.MaxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			cb.MaxRetries = int64(v.GetValue())
		}
	}
	return cb, nil
}

// tryInc increments n when it is below limit.
func tryInc(n *atomic.Int64, limit int64) bool {
	for {
		v := n.Load()
		if v >= limit {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// AcquireRequest takes an active-request slot; false means overflow.
func (cb *CircuitBreaker) AcquireRequest() bool {
	if tryInc(&cb.requests, cb.MaxRequests) {
		return true
	}
	cb.RqOverflow.Add(1)
	return false
}

// ReleaseRequest returns a slot taken by AcquireRequest.
func (cb *CircuitBreaker) ReleaseRequest() { cb.requests.Add(-1) }

// AcquireRetry takes an active-retry slot; false means overflow.
func (cb *CircuitBreaker) AcquireRetry() bool {
	if tryInc(&cb.retries, cb.MaxRetries) {
		return true
	}
	cb.RetryOverflow.Add(1)
	return false
}

// ReleaseRetry returns a slot taken by AcquireRetry.
func (cb *CircuitBreaker) ReleaseRetry() { cb.retries.Add(-1) }

// AcquireConnection takes a connection slot, waiting as a pending request
// while all are busy. It returns false when the pending queue is full
// (overflow) or ctx ends while waiting.
func (cb *CircuitBreaker) AcquireConnection(ctx context.Context) bool {
	return cb.AcquireConnectionWithin(ctx, 0) == Acquired
}

// Acquisition is the result of AcquireConnectionWithin.
type Acquisition int

const (
	Acquired  Acquisition = iota
	Overflow              // max_pending_requests reached
	Cancelled             // ctx ended while pending
	TimedOut              // maxWait passed while pending
)

// AcquireConnectionWithin is AcquireConnection waiting at most maxWait
// (0: no limit) as a pending request; the timer exists only while waiting.
func (cb *CircuitBreaker) AcquireConnectionWithin(ctx context.Context, maxWait time.Duration) Acquisition {
	if tryInc(&cb.connections, cb.MaxConnections) {
		return Acquired
	}
	cb.mu.Lock()
	// Announce the wait before the second try: a release that does not see
	// pending > 0 happened before this try, which then sees its slot.
	if !tryInc(&cb.pending, cb.MaxPending) {
		cb.mu.Unlock()
		cb.PendingOverflow.Add(1)
		return Overflow
	}
	if tryInc(&cb.connections, cb.MaxConnections) {
		cb.pending.Add(-1)
		cb.mu.Unlock()
		return Acquired
	}
	ch := make(chan struct{})
	cb.waiters = append(cb.waiters, ch)
	cb.mu.Unlock()
	var timeout <-chan time.Time
	if maxWait > 0 {
		t := time.NewTimer(maxWait)
		defer t.Stop()
		timeout = t.C
	}
	res := Cancelled
	select {
	case <-ch:
		return Acquired // the releaser handed its slot over
	case <-ctx.Done():
	case <-timeout:
		res = TimedOut
	}
	cb.mu.Lock()
	for i, w := range cb.waiters {
		if w == ch {
			cb.waiters = append(cb.waiters[:i], cb.waiters[i+1:]...)
			cb.pending.Add(-1)
			cb.mu.Unlock()
			return res
		}
	}
	cb.mu.Unlock()
	// Handed a slot while giving up: pass it on.
	cb.ReleaseConnection()
	return res
}

// ReleaseConnection returns a slot taken by AcquireConnection, handing it
// to the oldest pending request if any.
func (cb *CircuitBreaker) ReleaseConnection() {
	cb.connections.Add(-1)
	if cb.pending.Load() == 0 {
		return
	}
	cb.mu.Lock()
	if len(cb.waiters) > 0 && tryInc(&cb.connections, cb.MaxConnections) {
		ch := cb.waiters[0]
		cb.waiters = cb.waiters[1:]
		cb.pending.Add(-1)
		close(ch)
	}
	cb.mu.Unlock()
}

// Counts returns the current open (busy) connections, pending requests,
// active requests and active retries.
func (cb *CircuitBreaker) Counts() (connections, pending, requests, retries int64) {
	return cb.connections.Load(), cb.pending.Load(), cb.requests.Load(), cb.retries.Load()
}
