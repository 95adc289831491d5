package hcm

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// retryBufferLimit bounds the request body kept for replay: Envoy's
// per_connection_buffer_limit_bytes default (1 MiB). A longer body is
// streamed as usual and the request is not retried.
const retryBufferLimit = 1 << 20

// tryState is one upstream try of a request whose route has a retry
// policy. The forwarding functions consult it before sending anything
// downstream: a retriable failure sets retry and returns instead.
type tryState struct {
	policy *route.Retry
	body   *replayBody // nil when the request has no body
	reader *replayReader
	// last: the retries are used up (URX if this try fails retriably).
	last bool
	// single: the body is too long to replay; no retry, and no URX.
	single bool
	// perTryBound: the try's timeout is the per-try one, not what is left
	// of the route's (a per-try timeout may be retried, the route's not).
	perTryBound bool
	retry       bool // out: retry; nothing was sent downstream
	tried       []*cluster.Host
	// Circuit breaking and outlier detection (breaker.go): the cluster's
	// breaker, whether a retry slot is held for the next try, and what the
	// try that is retried ended with (status, or reset kind; -1 none).
	cb         *cluster.CircuitBreaker
	retryHeld  bool
	lastStatus int
	lastReset  int
}

// mayRetry reports whether another try may follow this one.
func (ts *tryState) mayRetry() bool {
	return !ts.last && !ts.single && (ts.body == nil || ts.body.replayable())
}

// retryReset decides for a try that ended without a response: true means
// retry (ts.retry is set). When the failure was retriable but the retries
// are used up, it flags URX, as Envoy does.
func (ts *tryState) retryReset(kind int, info *streaminfo.Info) bool {
	if ts == nil {
		return false
	}
	ts.lastReset = kind
	if !ts.policy.RetriableReset(kind) {
		return false
	}
	return ts.decide(info)
}

// retryStatus decides for a try that got a response head.
func (ts *tryState) retryStatus(status int, h *header.List, info *streaminfo.Info) bool {
	if ts == nil {
		return false
	}
	ts.lastStatus = status
	if !ts.policy.RetriableStatus(status, grpcStatusOf(h)) {
		return false
	}
	return ts.decide(info)
}

func (ts *tryState) decide(info *streaminfo.Info) bool {
	if ts.mayRetry() {
		// max_retries: a retry the circuit breaker refuses is not made,
		// and this try's outcome goes downstream (Envoy's retry overflow).
		if ts.cb != nil {
			if !ts.cb.AcquireRetry() {
				return false
			}
			ts.retryHeld = true
		}
		ts.retry = true
		ts.reader.abandon()
		return true
	}
	if ts.last && !ts.single && (ts.body == nil || ts.body.replayable()) {
		info.Flags |= streaminfo.UpstreamRetryLimitExceeded
	}
	return false
}

// grpcStatusOf returns the grpc-status of a trailers-only response, -1
// when absent.
func grpcStatusOf(h *header.List) int {
	v, ok := h.Get("grpc-status")
	if !ok || len(v) == 0 || len(v) > 2 {
		return -1
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return -1
		}
		n = n*10 + int(v[i]-'0')
	}
	return n
}

// forwardRetrying forwards a request under its route's retry policy
// (Envoy's router with RetryStateImpl): tries until one succeeds, fails
// in a way the policy does not retry, the retries are used up, the body
// can no longer be replayed, or the route timeout ends.
func (st *stream) forwardRetrying(req *request, rw responder, rt *route.Route, c *cluster.Cluster, rp *route.Retry, path string, timeout time.Duration) bool {
	info := &st.info
	hdrs := &req.r.Headers
	ts := &tryState{policy: rp, cb: c.CB}
	held := false // a retry slot taken for the try under way
	defer func() {
		if held {
			c.CB.ReleaseRetry()
		}
		if ts.retryHeld {
			c.CB.ReleaseRetry()
		}
	}()
	if req.body != nil {
		if req.bodyLen > retryBufferLimit {
			// Cannot be replayed: a single try, as without a policy.
			ts.single = true
		} else {
			if req.expect100 {
				// Answered once for all tries: a retry must not wait
				// for a client that already sent the body.
				if err := rw.continue100(); err != nil {
					info.Flags |= streaminfo.DownstreamConnectionTermination
					return false
				}
				req.expect100 = false
				hdrs.Del("expect")
			}
			ts.body = &replayBody{src: req.body, limit: retryBufferLimit}
		}
	}
	origBody := req.body
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for try := 1; ; try++ {
		if ts.retryHeld {
			held, ts.retryHeld = true, false
		}
		ts.last = ts.last || try > rp.NumRetries
		ts.retry = false
		info.UpstreamFailed = ""
		info.AttemptCount = try
		if rt.IncludeRequestAttemptCount() {
			hdrs.Set("x-envoy-attempt-count", smallOrFormat(int64(try)))
		}
		host := st.pickRetryHost(c, hdrs, ts)
		if host == nil {
			return st.local(rw, req, 503, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
		}
		ts.tried = append(ts.tried, host)
		info.UpstreamHost = host.Addr
		tryTimeout, perTry := timeout, false
		if !deadline.IsZero() {
			tryTimeout = time.Until(deadline)
			if tryTimeout <= 0 {
				return st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
			}
		}
		if rp.PerTryTimeout > 0 && (tryTimeout <= 0 || rp.PerTryTimeout < tryTimeout) {
			tryTimeout, perTry = rp.PerTryTimeout, true
		}
		ts.perTryBound = perTry
		if tryTimeout > 0 {
			// What this try may take, as Envoy's setTimeoutHeaders.
			hdrs.Set("x-envoy-expected-rq-timeout-ms", smallOrFormat(tryTimeout.Milliseconds()))
		}
		if ts.body != nil {
			ts.reader = ts.body.newReader()
			req.body = ts.reader
		} else {
			ts.reader = nil
			req.body = origBody
		}
		authority, proto := st.upstreamTarget(req, rt, c, host)
		host.Active.Add(1)
		ok := st.sendTry(req, rw, rt, c, host, path, authority, proto, tryTimeout, ts)
		host.Active.Add(-1)
		if held {
			c.CB.ReleaseRetry()
			held = false
		}
		if !ts.retry {
			return ok
		}
		// Jittered exponential back-off (Envoy's
		// JitteredExponentialBackOffStrategy): a random wait below
		// base*(2^try-1), capped at the maximum interval.
		limit := rp.BackOffMax
		if try < 31 {
			limit = min(limit, rp.BackOffBase*time.Duration(uint64(1)<<try-1))
		}
		wait := time.Duration(st.rng.Int64N(int64(max(limit, 1))))
		if !deadline.IsZero() && time.Now().Add(wait).After(deadline) {
			wait = time.Until(deadline)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-st.ctx.Done():
				t.Stop()
				info.Flags |= streaminfo.DownstreamConnectionTermination
				return false
			}
		}
	}
}

// pickRetryHost picks a host, avoiding those already tried when the
// policy has the previous_hosts predicate (Envoy re-picks up to
// host_selection_retry_max_attempts times, then takes the last pick).
func (st *stream) pickRetryHost(c *cluster.Cluster, hdrs *header.List, ts *tryState) *cluster.Host {
	host := st.pickHost(c, hdrs)
	if !ts.policy.PreviousHosts || c.Discovery == cluster.OriginalDst {
		return host
	}
	for i := 0; i < ts.policy.HostSelectionMaxAttempts && host != nil && ts.triedHost(host); i++ {
		host = st.pickHostAttempt(c, hdrs, uint64(i+1))
	}
	return host
}

func (ts *tryState) triedHost(h *cluster.Host) bool {
	for _, t := range ts.tried {
		if t == h {
			return true
		}
	}
	return false
}

var (
	errReplayAbandoned = errors.New("request body: try abandoned for a retry")
	errReplayLost      = errors.New("request body: no longer buffered for replay")
)

// replayBody records a request body, up to limit bytes, as the first try
// streams it, so that later tries can send it again. Tries read it
// through their own replayReader; the HTTP/2 transport reads from a
// goroutine of its own, hence the lock.
type replayBody struct {
	mu       sync.Mutex
	src      io.Reader
	buf      []byte
	total    int   // bytes read from src
	srcErr   error // src's terminal error (io.EOF when read whole)
	limit    int
	overflow bool // more than limit bytes: buf is dropped, no more tries
}

func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

func (b *replayBody) newReader() *replayReader { return &replayReader{b: b} }

// replayReader is one try's view of the body: the recorded bytes first,
// then the rest as it arrives from the client.
type replayReader struct {
	b   *replayBody
	off int
	// dead: the try was abandoned; its transport must not consume bytes
	// the next try needs.
	dead atomic.Bool
}

func (r *replayReader) abandon() {
	if r == nil {
		return
	}
	r.dead.Store(true)
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.dead.Load() {
		return 0, errReplayAbandoned
	}
	if !b.overflow && r.off < len(b.buf) {
		n := copy(p, b.buf[r.off:])
		r.off += n
		return n, nil
	}
	if r.off != b.total {
		return 0, errReplayLost
	}
	if b.srcErr != nil {
		return 0, b.srcErr
	}
	// Held across the read: a previous try's transport may still be
	// blocked here, and what it gets is recorded for this one.
	n, err := b.src.Read(p)
	if n > 0 {
		if !b.overflow {
			if len(b.buf)+n <= b.limit {
				b.buf = append(b.buf, p[:n]...)
			} else {
				b.overflow, b.buf = true, nil
			}
		}
		b.total += n
		r.off += n
	}
	if err != nil {
		b.srcErr = err
	}
	return n, err
}

// Close passes on to the client's body (an HTTP/2 stream, which Close
// unblocks) unless the try was abandoned for a retry that still needs it.
func (r *replayReader) Close() error {
	if r.dead.Load() {
		return nil
	}
	if c, ok := r.b.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
