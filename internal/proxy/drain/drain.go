// Package drain carries a per-connection drain request from the listener
// that accepted a connection to the network filter serving it: when a
// listener update removes or changes the filter chain a connection runs
// on (a PeerAuthentication turning STRICT, say), Envoy drains that
// connection rather than letting it live on under the old rules.
package drain

import "context"

// Signal is one connection's drain request. It is a cancelled context
// underneath, so waiting on it costs no goroutine (AfterFunc).
type Signal struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a signal not yet fired.
func New() *Signal {
	ctx, cancel := context.WithCancel(context.Background())
	return &Signal{ctx: ctx, cancel: cancel}
}

// Drain fires the signal; later calls do nothing.
func (s *Signal) Drain() { s.cancel() }

// Done is closed once Drain was called. A nil Signal never fires.
func (s *Signal) Done() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.ctx.Done()
}

// Draining reports whether Drain was called.
func (s *Signal) Draining() bool { return s != nil && s.ctx.Err() != nil }

// AfterFunc runs f in its own goroutine once the signal fires; stop
// cancels that. A nil Signal never fires.
func (s *Signal) AfterFunc(f func()) (stop func() bool) {
	if s == nil {
		return func() bool { return false }
	}
	return context.AfterFunc(s.ctx, f)
}

type key struct{}

// With returns ctx carrying s.
func With(ctx context.Context, s *Signal) context.Context { return context.WithValue(ctx, key{}, s) }

// From returns the signal ctx carries, or nil.
func From(ctx context.Context) *Signal {
	s, _ := ctx.Value(key{}).(*Signal)
	return s
}
