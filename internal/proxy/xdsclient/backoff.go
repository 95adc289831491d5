package xdsclient

import (
	"math/rand/v2"
	"time"
)

// backoff computes reconnect delays: exponential growth capped at max, with
// "full jitter" (a uniform draw in [0, ceiling]) so that many proxies losing
// the same control plane do not reconnect in lock-step.
type backoff struct {
	initial, max time.Duration
	attempt      int
	// randN returns a uniform value in [0, n); injectable for tests.
	randN func(n int64) int64
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, randN: rand.Int64N}
}

// ceiling is the upper bound of the delay for the current attempt:
// min(max, initial * 2^attempt).
func (b *backoff) ceiling() time.Duration {
	d := b.initial
	// Doubling stops at max, which also keeps d from overflowing.
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// next returns the delay before the next attempt and advances the attempt count.
func (b *backoff) next() time.Duration {
	c := b.ceiling()
	if c < b.max {
		b.attempt++
	}
	if c <= 0 {
		return 0
	}
	return time.Duration(b.randN(int64(c) + 1))
}

// reset restarts the growth; called after a stream that proved the server healthy.
func (b *backoff) reset() { b.attempt = 0 }
