package hcm

import (
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Circuit breaking and outlier detection around one upstream try. The
// counting and the decisions live in the cluster package; this file only
// connects them to the forwarding code.

// overflow answers a request refused by the cluster's circuit breaker, as
// Envoy's router does (503, flag UO).
func (st *stream) overflow(rw responder, req *request) bool {
	return st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
		"upstream_reset_before_response_started{overflow}", streaminfo.UpstreamOverflow)
}

// sendTry sends one try to host: an HTTP/1.1 try first takes a connection
// slot from the circuit breaker (waiting as a pending request, or
// overflowing), then the outcome is reported to outlier detection.
// overflowed is true when the try was refused and answered 503 UO.
func (st *stream) sendTry(req *request, rw responder, rt *route.Route, c *cluster.Cluster, host *cluster.Host, path, authority string, proto cluster.Protocol, timeout time.Duration, ts *tryState) bool {
	info := &st.info
	if proto != cluster.HTTP2 {
		// Time spent pending counts against the request's timeout, as in
		// Envoy (the router's timer runs from the start).
		var start time.Time
		if timeout > 0 {
			start = time.Now()
		}
		switch c.CB.AcquireConnectionWithin(st.ctx, timeout) {
		case cluster.Overflow:
			return st.overflow(rw, req)
		case cluster.Cancelled:
			info.Flags |= streaminfo.DownstreamConnectionTermination
			return false
		case cluster.TimedOut:
			return st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
		}
		defer c.CB.ReleaseConnection()
		if timeout > 0 {
			if timeout -= time.Since(start); timeout <= 0 {
				return st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
			}
		}
	}
	flags := info.Flags
	if ts != nil {
		ts.lastStatus, ts.lastReset = 0, -1
	}
	var ok bool
	if proto == cluster.HTTP2 {
		ok = st.forwardH2(req, rw, rt, c, host, path, authority, timeout, ts)
	} else {
		ok = st.forwardH1(req, rw, rt, c, host, path, authority, timeout, ts)
	}
	st.reportOutcome(c, host, flags, ts)
	return ok
}

// reportOutcome tells the host's outlier detector how the try went.
func (st *stream) reportOutcome(c *cluster.Cluster, host *cluster.Host, before streaminfo.Flags, ts *tryState) {
	info := &st.info
	if ts != nil && ts.retry {
		switch {
		case ts.lastStatus > 0:
			c.Report(host, cluster.OutcomeStatus, ts.lastStatus)
		case ts.lastReset == route.ResetConnectFailure:
			c.Report(host, cluster.OutcomeConnectFailure, 0)
		case ts.lastReset == route.ResetPerTryTimeout:
			c.Report(host, cluster.OutcomeTimeout, 0)
		case ts.lastReset >= 0:
			c.Report(host, cluster.OutcomeReset, 0)
		}
		return
	}
	added := info.Flags &^ before
	switch {
	case added&streaminfo.UpstreamConnectionFailure != 0:
		c.Report(host, cluster.OutcomeConnectFailure, 0)
	case added&streaminfo.UpstreamRequestTimeout != 0 && info.Details != "via_upstream":
		c.Report(host, cluster.OutcomeTimeout, 0)
	case info.Details == "via_upstream" && info.ResponseCode > 0:
		c.Report(host, cluster.OutcomeStatus, info.ResponseCode)
	case added&(streaminfo.UpstreamConnectionTermination|streaminfo.UpstreamRemoteReset) != 0,
		strings.HasPrefix(info.Details, "upstream_reset_before_response_started"):
		c.Report(host, cluster.OutcomeReset, 0)
	}
}
