package tracing

import (
	"math/rand/v2"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Reason is why a request is traced (Envoy's Tracing::Reason).
type Reason uint8

// The reasons.
const (
	NotTraceable Reason = iota
	RandomSampling
	ServiceForced
	ClientForced
)

// The request-id extension packs the reason into the UUID's version
// character (Envoy's UUIDRequestIDExtension, pack_trace_reason default
// true).
const (
	uuidLen        = 36
	traceBytePos   = 14
	traceForced    = '9'
	traceSampled   = 'a'
	traceClient    = 'b'
	traceNotTraced = '4'
)

// reasonOf reads the trace reason packed in an x-request-id.
func reasonOf(rid string) Reason {
	if len(rid) != uuidLen {
		return NotTraceable
	}
	switch rid[traceBytePos] {
	case traceForced:
		return ServiceForced
	case traceSampled:
		return RandomSampling
	case traceClient:
		return ClientForced
	}
	return NotTraceable
}

// withReason returns rid with the reason packed in; rid itself when it is
// not a UUID or already says so (no allocation then).
func withReason(rid string, r Reason) string {
	if len(rid) != uuidLen {
		return rid
	}
	c := byte(traceNotTraced)
	switch r {
	case ServiceForced:
		c = traceForced
	case ClientForced:
		c = traceClient
	case RandomSampling:
		c = traceSampled
	}
	if rid[traceBytePos] == c {
		return rid
	}
	b := []byte(rid)
	b[traceBytePos] = c
	return string(b)
}

// ridInteger is Envoy's UUIDRequestIDExtension::getInteger: the first 8
// hex digits of the request id.
func ridInteger(rid string) (uint64, bool) {
	if len(rid) < 8 {
		return 0, false
	}
	return hex64(rid[:8], true)
}

// Decide applies Envoy's mutateTracingRequestHeader to a request: it
// returns the trace reason and rewrites x-request-id to carry it. s is the
// route's sampling when the route overrides the connection manager's.
// rng draws client_sampling (Envoy draws it from its random generator).
func Decide(h *header.List, s *Sampling, rng *rand.Rand) Reason {
	rid, ok := h.Get("x-request-id")
	if !ok {
		return NotTraceable
	}
	n, ok := ridInteger(rid)
	if !ok {
		return NotTraceable
	}
	result := n % 10000
	reason := reasonOf(rid)
	// Envoy writes the reason only when it sets one here: a request id
	// that is not a UUID v4 keeps its version character otherwise.
	set := false
	if reason == NotTraceable {
		switch {
		case h.Has("x-client-trace-id") && s.Client.In(rng.Uint64()):
			reason, set = ClientForced, true
		case h.Has("x-envoy-force-trace"):
			reason, set = ServiceForced, true
		case s.Random.In(result):
			reason, set = RandomSampling, true
		}
	}
	if reason != NotTraceable && !s.Overall.In(result) {
		reason, set = NotTraceable, true
	}
	if set {
		if nrid := withReason(rid, reason); nrid != rid {
			h.Set("x-request-id", nrid)
		}
	}
	return reason
}
