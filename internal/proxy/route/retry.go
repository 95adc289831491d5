package route

import (
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
)

// RetryOn is a set of Envoy retry conditions (x-envoy-retry-on and
// x-envoy-retry-grpc-on values).
type RetryOn uint32

// The retry conditions amime implements.
const (
	Retry5xx RetryOn = 1 << iota
	RetryGatewayError
	RetryReset
	RetryConnectFailure
	RetryRetriable4xx
	RetryRefusedStream
	RetryRetriableStatusCodes
	RetryGrpcCancelled
	RetryGrpcDeadlineExceeded
	RetryGrpcInternal
	RetryGrpcResourceExhausted
	RetryGrpcUnavailable
	// RetryResetBeforeRequest is honoured for connect failures only: the
	// one reset amime can tell happened before the request was sent.
	RetryResetBeforeRequest
)

var retryOnNames = map[string]RetryOn{
	"5xx":                    Retry5xx,
	"gateway-error":          RetryGatewayError,
	"reset":                  RetryReset,
	"connect-failure":        RetryConnectFailure,
	"retriable-4xx":          RetryRetriable4xx,
	"refused-stream":         RetryRefusedStream,
	"retriable-status-codes": RetryRetriableStatusCodes,
	"cancelled":              RetryGrpcCancelled,
	"deadline-exceeded":      RetryGrpcDeadlineExceeded,
	"internal":               RetryGrpcInternal,
	"resource-exhausted":     RetryGrpcResourceExhausted,
	"unavailable":            RetryGrpcUnavailable,
	"reset-before-request":   RetryResetBeforeRequest,
}

// Envoy's defaults (router/retry_state_impl.cc).
const (
	defaultBackOffBase = 25 * time.Millisecond
	previousHostsName  = "envoy.retry_host_predicates.previous_hosts"
)

// Retry is a compiled RetryPolicy, as the router executes it.
type Retry struct {
	On         RetryOn
	NumRetries int
	// PerTryTimeout bounds each try; 0: only the route timeout applies.
	PerTryTimeout time.Duration
	StatusCodes   []int
	// BackOffBase and BackOffMax drive Envoy's jittered exponential
	// back-off: try n waits a random time in [0, min(base*(2^n-1), max)).
	BackOffBase, BackOffMax time.Duration
	// PreviousHosts is the previous_hosts retry host predicate: retries
	// avoid hosts already tried, re-picking up to HostSelectionMaxAttempts.
	PreviousHosts            bool
	HostSelectionMaxAttempts int
}

// RetriableStatus reports whether a response head asks for a retry under
// the policy: status and, for gRPC, the grpc-status of a trailers-only
// response (grpcStatus < 0 when absent).
func (p *Retry) RetriableStatus(status, grpcStatus int) bool {
	on := p.On
	switch {
	case on&Retry5xx != 0 && status >= 500 && status <= 599:
		return true
	case on&RetryGatewayError != 0 && (status == 502 || status == 503 || status == 504):
		return true
	case on&RetryRetriable4xx != 0 && status == 409:
		return true
	case on&RetryRetriableStatusCodes != 0:
		for _, c := range p.StatusCodes {
			if c == status {
				return true
			}
		}
	}
	switch grpcStatus {
	case 1:
		return on&RetryGrpcCancelled != 0
	case 4:
		return on&RetryGrpcDeadlineExceeded != 0
	case 8:
		return on&RetryGrpcResourceExhausted != 0
	case 13:
		return on&RetryGrpcInternal != 0
	case 14:
		return on&RetryGrpcUnavailable != 0
	}
	return false
}

// Reset kinds for RetriableReset.
const (
	ResetConnectFailure = iota // could not connect
	ResetRefusedStream         // HTTP/2 REFUSED_STREAM
	ResetOther                 // connection closed or stream reset mid-request
	ResetPerTryTimeout         // the try's own timeout fired
)

// RetriableReset reports whether a try that ended without a response may
// be retried, as Envoy's RetryStateImpl::wouldRetryFromReset: 5xx and
// gateway-error count any reset (it would become a 5xx), as does reset.
func (p *Retry) RetriableReset(kind int) bool {
	if p.On&(Retry5xx|RetryGatewayError|RetryReset) != 0 {
		return true
	}
	switch kind {
	case ResetConnectFailure:
		return p.On&(RetryConnectFailure|RetryResetBeforeRequest) != 0
	case ResetRefusedStream:
		return p.On&RetryRefusedStream != 0
	}
	return false
}

// RetryPolicyCompiled returns the route's compiled retry policy, nil when
// the route has none.
func (r *Route) RetryPolicyCompiled() *Retry { return r.e.retryC }

// compileRetry parses a RetryPolicy; durations were checked by checkRetry.
func compileRetry(rp *routev3.RetryPolicy, p string) (*Retry, error) {
	out := &Retry{NumRetries: 1, BackOffBase: defaultBackOffBase, HostSelectionMaxAttempts: 1}
	if rp.NumRetries != nil {
		out.NumRetries = int(rp.NumRetries.GetValue())
	}
	for _, tok := range strings.Split(rp.RetryOn, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		bit, ok := retryOnNames[tok]
		if !ok {
			return nil, errf(p+".retry_on", "retry condition %q is not supported by amime", tok)
		}
		out.On |= bit
	}
	if rp.PerTryTimeout != nil {
		out.PerTryTimeout = rp.PerTryTimeout.AsDuration().Truncate(time.Millisecond)
	}
	for _, c := range rp.RetriableStatusCodes {
		out.StatusCodes = append(out.StatusCodes, int(c))
	}
	if bo := rp.RetryBackOff; bo != nil {
		out.BackOffBase = max(bo.BaseInterval.AsDuration().Truncate(time.Millisecond), time.Millisecond)
	}
	out.BackOffMax = 10 * out.BackOffBase
	if mx := rp.GetRetryBackOff().GetMaxInterval(); mx != nil {
		out.BackOffMax = max(mx.AsDuration().Truncate(time.Millisecond), time.Millisecond)
	}
	for i, hp := range rp.RetryHostPredicate {
		tc := hp.GetTypedConfig()
		isPrev := hp.GetName() == previousHostsName
		if tc != nil {
			isPrev = tc.MessageIs((*previoushostsv3.PreviousHostsPredicate)(nil))
		}
		if !isPrev {
			return nil, errf(p+".retry_host_predicate["+itoa(i)+"]", "retry host predicate %q is not supported by amime (%s is)", hp.GetName(), previousHostsName)
		}
		out.PreviousHosts = true
	}
	if rp.HostSelectionRetryMaxAttempts > 0 {
		out.HostSelectionMaxAttempts = int(rp.HostSelectionRetryMaxAttempts)
	}
	return out, nil
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
