package server

import (
	"sync"
	"time"
)

// flow bounds the bytes of responses sent and not yet acknowledged. gRPC
// serializes a whole response into its buffers before writing it, at the
// pace the client reads, so a push to 1000 proxies at once would hold
// their 1000 configurations in memory together (gigabytes at 1000
// services). A proxy waits before its response is serialized until the
// bytes in flight leave room for it (Istio bounds concurrent pushes the
// same way, PILOT_PUSH_THROTTLE); its bytes count until it has replied to
// every response it was sent. A proxy that already has bytes in flight is
// never held back: its next responses are admitted, so an ACK it owes
// cannot wait on itself.
type flow struct {
	limit int64 // <= 0: no limit
	wait  time.Duration

	mu   sync.Mutex
	cond *sync.Cond
	used int64
	held map[string]*flowNode // by node id
}

type flowNode struct {
	bytes   int64
	pending map[string]string // type -> nonce of the unanswered response
}

func newFlow(limit int64, wait time.Duration) *flow {
	f := &flow{limit: limit, wait: wait, held: map[string]*flowNode{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// admit waits until a response of size bytes to node may be serialized.
// After the wait bound it goes ahead anyway: a client that stops replying
// must not stall the others for good.
func (f *flow) admit(node string, size int64) {
	if f.limit <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.held[node]; n != nil {
		n.bytes += size
		f.used += size
		return
	}
	if f.used > 0 && f.used+size > f.limit {
		deadline := time.Now().Add(f.wait)
		timer := time.AfterFunc(f.wait, func() {
			f.mu.Lock()
			f.cond.Broadcast()
			f.mu.Unlock()
		})
		for f.used > 0 && f.used+size > f.limit && time.Now().Before(deadline) {
			f.cond.Wait()
		}
		timer.Stop()
	}
	f.held[node] = &flowNode{bytes: size, pending: map[string]string{}}
	f.used += size
}

// sent records the nonce of a response the node must answer.
func (f *flow) sent(node, typeURL, nonce string) {
	if f.limit <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.held[node]; n != nil {
		n.pending[typeURL] = nonce
	}
}

// replied records an ACK or NACK; the node's bytes are released once it
// has answered everything it was sent.
func (f *flow) replied(node, typeURL, nonce string) {
	if f.limit <= 0 || nonce == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.held[node]
	if n == nil || n.pending[typeURL] != nonce {
		return
	}
	delete(n.pending, typeURL)
	if len(n.pending) == 0 {
		f.releaseLocked(node, n)
	}
}

// gone releases what a disconnected node held.
func (f *flow) gone(node string) {
	if f.limit <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.held[node]; n != nil {
		f.releaseLocked(node, n)
	}
}

func (f *flow) releaseLocked(node string, n *flowNode) {
	f.used -= n.bytes
	delete(f.held, node)
	f.cond.Broadcast()
}
