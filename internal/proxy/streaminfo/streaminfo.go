// Package streaminfo records what happened to one request as it crossed the
// proxy: the response flags Envoy defines, the route and upstream chosen,
// timings and byte counts. Logs and metrics read it; the data path fills it.
package streaminfo

import (
	"time"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Flags is a set of Envoy response flags.
type Flags uint32

// The flags, in the order Envoy prints them.
const (
	FailedLocalHealthCheck           Flags = 1 << iota // LH
	NoHealthyUpstream                                  // UH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionFailure                          // UF
	UpstreamConnectionTermination                      // UC
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	UnauthorizedExternalService                        // UAEX
	RateLimitServiceError                              // RLSE
	DownstreamConnectionTermination                    // DC
	UpstreamRetryLimitExceeded                         // URX
	StreamIdleTimeout                                  // SI
	InvalidEnvoyRequestHeaders                         // IH
	DownstreamProtocolError                            // DPE
	UpstreamMaxStreamDurationReached                   // UMSDR
	ResponseFromCacheFilter                            // RFCF
	NoFilterConfigFound                                // NFCF
	DurationTimeout                                    // DT
	UpstreamProtocolError                              // UPE
	NoClusterFound                                     // NC
	OverloadManager                                    // OM
	DNSResolutionFailed                                // DF
	DropOverLoad                                       // DO
	DownstreamRemoteReset                              // DR
	numFlags
)

var shortNames = [...]string{"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX",
	"RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR"}

// String returns the flags as Envoy's %RESPONSE_FLAGS% prints them: short
// codes joined by commas, or "-" when none is set.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	return string(f.AppendTo(make([]byte, 0, 16)))
}

// AppendTo appends f as String prints it, so that access logs need not
// allocate.
func (f Flags) AppendTo(b []byte) []byte {
	if f == 0 {
		return append(b, '-')
	}
	n := len(b)
	for i := 0; i < len(shortNames); i++ {
		if f&(1<<i) == 0 {
			continue
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, shortNames[i]...)
	}
	return b
}

// Info is one request's record. The data path reuses it across requests on
// a connection, so consumers must copy what they keep.
type Info struct {
	Start          time.Time
	Protocol       string // "HTTP/1.1", "HTTP/2"
	Method         string
	Path           string
	Authority      string
	RequestID      string
	Downstream     string // remote address
	RouteName      string
	Cluster        string
	UpstreamHost   string
	ResponseCode   int
	Flags          Flags
	Details        string // response_code_details, e.g. "via_upstream", "route_not_found"
	BytesReceived  int64
	BytesSent      int64
	UpstreamTime   time.Duration // until the upstream's response head
	Duration       time.Duration
	AttemptCount   int
	UpstreamFailed string // transport failure reason
	// Request headers the access log and metrics report; the data path
	// sets them as it reads the request (empty: absent).
	UserAgent    string // user-agent
	ForwardedFor string // x-forwarded-for as sent upstream
	GRPC         bool   // content-type is application/grpc…: request_protocol "grpc"
	GRPCStatus   string // the response's grpc-status (headers or trailers), "" if none
	// PeerPrincipal is the downstream mTLS peer's identity ("" without a
	// client certificate).
	PeerPrincipal string
	// PeerMetadata is the peer sidecar's x-envoy-peer-metadata: from the
	// request on inbound listeners, from the upstream response on
	// outbound ones ("" when the peer sent none).
	PeerMetadata string
	// Addresses and TLS server name, for access logs.
	DownstreamLocal string // the listener address the request came in on
	UpstreamLocal   string // the proxy's address on the upstream connection
	SNI             string // requested server name of the downstream TLS connection
	// RequestHeaders and ResponseHeaders are the request as received and
	// the response as sent downstream, valid until the consumer returns.
	RequestHeaders  header.List
	ResponseHeaders header.List
}

// Reset clears the record for the next request.
func (i *Info) Reset() { *i = Info{} }

// ParseFlag reads a flag's short name ("UO", "NR", …).
func ParseFlag(name string) (Flags, bool) {
	for i, s := range shortNames {
		if s == name {
			return 1 << i, true
		}
	}
	return 0, false
}
