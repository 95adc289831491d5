package hcm

import (
	"net/netip"

	"google.golang.org/protobuf/types/known/structpb"

	"context"
	"errors"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/http1"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
	"github.com/amime-mesh/amime/internal/proxy/upstream"
)

// Body lengths passed to responder.writeHead besides a byte count.
const (
	lengthUnknown = -1 // stream it (chunked on HTTP/1.1)
	noBody        = -2 // HEAD, 204, 304
)

// request is a downstream request as the forwarding core sees it,
// whatever the downstream protocol.
type request struct {
	r         route.Request
	body      io.Reader // nil when the request has no body
	bodyLen   int64     // -1 when unknown (chunked, HTTP/2 without content-length)
	expect100 bool
	upgrade   bool // a WebSocket upgrade request
	http2     bool
	grpc      bool
}

// responder writes the response downstream.
type responder interface {
	continue100() error
	writeHead(status int, h header.List, bodyLen int64) error
	write(p []byte) (int, error)
	flush() error
	// finish ends the body, with trailers when the protocol carries them.
	finish(trailers header.List) error
	// tunnel takes over the connection after a 101 (HTTP/1.1 only).
	tunnel(up net.Conn, upBuffered []byte) error
}

// stream holds the per-connection scratch state reused by every request.
type stream struct {
	h         *Handler
	rng       *rand.Rand
	remote    string // downstream remote address, ip:port
	remIP     string
	localAddr string
	// origDst is where the client meant to connect: the listener address,
	// or with transparent capture the address before redirection.
	origDst string
	info    streaminfo.Info
	buf     []byte // body copy buffer
	head    []byte // head serialization buffer
	resp    header.List
	env     route.Env
	ctx     context.Context
	// last route timeout and its text, to not format it per request.
	lastTimeout     time.Duration
	lastTimeoutText string
	// Consistent hashing (hash.go): the request hash and a generated
	// cookie to return.
	hash      uint64
	hashOK    bool
	setCookie string
	// peer is the downstream TLS peer (nil: plaintext).
	peer *downstreamPeer
	// remoteAddr and localAddrPort are remote and localAddr parsed, for
	// RBAC.
	remoteAddr, localAddrPort netip.AddrPort
	// meta is the request's dynamic metadata by filter namespace (JWT
	// authentication results for RBAC); nil until a filter sets some.
	meta      map[string]*structpb.Struct
	rbacAttrs rbac.Attributes
	// peerX is the connection manager's peer metadata exchange, once its
	// filter ran on the request (nil: none).
	peerX *peerExchange
	// reqHdrs is the request's header list, for the access log.
	reqHdrs *header.List
	// trace is the request's tracing state (trace.go), reused.
	trace    tracing.Active
	traceReq tracing.Request
}

func (st *stream) timeoutText(d time.Duration) string {
	if d != st.lastTimeout || st.lastTimeoutText == "" {
		st.lastTimeout, st.lastTimeoutText = d, strconv.FormatInt(d.Milliseconds(), 10)
	}
	return st.lastTimeoutText
}

func newStream(h *Handler, ctx context.Context, nc net.Conn) *stream {
	st := &stream{h: h, rng: newRand(), ctx: ctx, buf: make([]byte, 32<<10)}
	if nc != nil {
		st.remote = nc.RemoteAddr().String()
		st.localAddr = nc.LocalAddr().String()
		st.origDst = st.localAddr
		st.remIP, _, _ = net.SplitHostPort(st.remote)
		st.remoteAddr, st.localAddrPort = addrPort(st.remote), addrPort(st.localAddr)
	}
	st.env = route.Env{DownstreamRemoteAddress: st.remote, DownstreamRemoteAddressWithoutPort: st.remIP, DownstreamLocalAddress: st.localAddr, Hostname: hostname}
	return st
}

var hostname, _ = os.Hostname()

// serve handles one request end to end. It returns false when the
// downstream connection cannot carry another request.
func (st *stream) serve(req *request, rw responder) bool {
	h := st.h
	info := &st.info
	info.Reset()
	info.Start = time.Now()
	info.Method = req.r.Method
	info.Path = req.r.Path
	info.Authority = req.r.Authority
	info.Downstream = st.remote
	if st.peer.mutual() {
		info.PeerPrincipal = st.peer.conn.PeerPrincipal
	}
	info.UserAgent, _ = req.r.Headers.Get("user-agent")
	info.GRPC = req.grpc
	if req.http2 {
		info.Protocol = "HTTP/2"
	} else {
		info.Protocol = "HTTP/1.1"
	}
	defer st.complete()
	st.hashOK, st.setCookie = false, ""
	st.meta = nil
	st.peerX = nil
	st.reqHdrs = &req.r.Headers
	info.DownstreamLocal = st.localAddr
	if st.peer != nil {
		info.SNI = st.peer.conn.SNI
	}
	if h.cfg.Tracing != nil {
		st.trace.Reset()
	}

	hdrs := &req.r.Headers
	st.requestID(req)

	if req.upgrade && !h.cfg.WebSocket {
		return st.local(rw, req, 403, "", "upgrade_failed", 0)
	}
	if req.r.Method == "CONNECT" {
		return st.local(rw, req, 403, "", "connect_not_supported", 0)
	}
	// x-forwarded-proto is settled before routing, as Envoy does: at the
	// edge (use_remote_address) a client's value is replaced, so that it
	// cannot skip require_tls redirects or fake its scheme upstream.
	if h.cfg.UseRemoteAddress {
		hdrs.Set("x-forwarded-proto", req.r.Scheme)
	} else {
		hdrs.SetIfAbsent("x-forwarded-proto", req.r.Scheme)
	}
	table := h.table()
	var rt *route.Route
	if table != nil {
		rt = table.Select(&req.r, st.rng.Uint64())
	}
	if tc := h.cfg.Tracing; tc != nil {
		st.beginTrace(tc, req, rt)
	}
	for _, f := range h.cfg.filters {
		if answered, ok := f.decode(st, req, rw, rt); answered {
			return ok
		}
	}
	if rt == nil {
		return st.local(rw, req, 404, "", "route_not_found", streaminfo.NoRouteFound)
	}
	info.RouteName = rt.Name()
	switch rt.Kind() {
	case route.DirectResponse:
		st.resp.Reset()
		if loc := rt.Location(&req.r); loc != "" {
			st.resp.Add("location", loc)
		}
		return st.localWith(rw, req, rt, rt.Status(), rt.Body(), "direct_response", 0)
	case route.Redirect:
		st.resp.Reset()
		st.resp.Add("location", rt.Location(&req.r))
		return st.localWith(rw, req, rt, rt.Status(), "", "via_redirect", 0)
	}
	name := rt.ClusterName(&req.r)
	info.Cluster = name
	var c *cluster.Cluster
	if name != "" {
		c = h.env.Clusters.Get(name)
	}
	if c == nil {
		return st.local(rw, req, rt.ClusterNotFoundStatus(), "", "cluster_not_found", streaminfo.NoClusterFound)
	}
	// The request as the upstream will see it.
	stripHopByHop(hdrs, req.upgrade)
	if h.cfg.UseRemoteAddress {
		if !h.cfg.SkipXffAppend && st.remIP != "" {
			if v, ok := hdrs.Get("x-forwarded-for"); ok {
				hdrs.Set("x-forwarded-for", v+", "+st.remIP)
			} else {
				hdrs.Add("x-forwarded-for", st.remIP)
			}
		}
	}
	h.cfg.applyXFCC(hdrs, st.peer)
	// As sent upstream, which is what Envoy's %REQ(X-FORWARDED-FOR)% logs.
	info.ForwardedFor, _ = hdrs.Get("x-forwarded-for")
	timeout := rt.Timeouts().Request
	if timeout > 0 {
		hdrs.Set("x-envoy-expected-rq-timeout-ms", st.timeoutText(timeout))
	}
	if rt.IncludeRequestAttemptCount() {
		hdrs.Set("x-envoy-attempt-count", "1")
	}
	path, rewritten := rt.RewritePath(&req.r)
	if rewritten {
		hdrs.Set("x-envoy-original-path", req.r.Path)
	}
	st.env.Request = &req.r
	rt.MutateRequest(hdrs, &st.env)
	if h.cfg.Tracing != nil {
		// After the route's mutations, as Envoy's router injects; every
		// try and mirror carries this context.
		st.trace.Inject(hdrs)
	}
	// Request mirroring (mirror.go): fire-and-forget copies; with a body the
	// copy is taken as the upstream send below streams it.
	if mps := rt.MirrorPolicies(); mps != nil {
		st.startMirrors(req, rt, mps, path)
	}

	// Consistent hashing (hash.go): the hash of the route's hash_policy
	// for RING_HASH / MAGLEV clusters, used by pickHost.
	st.computeHash(req, rt, c)

	// Circuit breaking (breaker.go): max_requests bounds the requests in
	// flight to the cluster; tries take connection slots in sendTry.
	if !c.CB.AcquireRequest() {
		return st.overflow(rw, req)
	}
	defer c.CB.ReleaseRequest()

	if rp := rt.RetryPolicyCompiled(); rp != nil {
		return st.forwardRetrying(req, rw, rt, c, rp, path, timeout)
	}
	// The host is chosen after the route's header mutations, as Envoy's
	// router does: an ORIGINAL_DST cluster may read a header they set.
	host := st.pickHost(c, hdrs)
	if host == nil {
		return st.local(rw, req, 503, "no healthy upstream", "no_healthy_upstream", streaminfo.NoHealthyUpstream)
	}
	info.UpstreamHost = host.Addr
	info.AttemptCount = 1
	authority, proto := st.upstreamTarget(req, rt, c, host)
	host.Active.Add(1)
	defer host.Active.Add(-1)
	// Connection slot, send, outlier detection report: breaker.go.
	return st.sendTry(req, rw, rt, c, host, path, authority, proto, timeout, nil)
}

// upstreamTarget returns the authority the host is sent and the protocol
// spoken to it.
func (st *stream) upstreamTarget(req *request, rt *route.Route, c *cluster.Cluster, host *cluster.Host) (string, cluster.Protocol) {
	authority := req.r.Authority
	if a, ok := rt.RewriteHost(&req.r); ok {
		authority = a
	} else if rt.AutoHostRewrite() && host.Hostname != "" {
		authority = host.Hostname
	}
	proto := c.Protocol
	if proto == cluster.Downstream {
		if req.http2 {
			proto = cluster.HTTP2
		} else {
			proto = cluster.HTTP1
		}
	}
	return authority, proto
}

// pickHost chooses the upstream host: the load balancer's pick, or for an
// ORIGINAL_DST cluster the connection's original destination (or the
// x-envoy-original-dst-host header when the cluster allows it).
func (st *stream) pickHost(c *cluster.Cluster, hdrs *header.List) *cluster.Host {
	return st.pickHostAttempt(c, hdrs, 0)
}

// pickHostAttempt is pickHost for the attempt-th host selection retry: a
// request hash is then changed as Envoy's ThreadAwareLoadBalancer does
// (hash ^= ~0 - attempt + 1), to reach another host.
func (st *stream) pickHostAttempt(c *cluster.Cluster, hdrs *header.List, attempt uint64) *cluster.Host {
	if st.hashOK {
		h := st.hash
		if attempt > 0 {
			h ^= ^uint64(0) - attempt + 1
		}
		return c.PickHash(h)
	}
	if c.Discovery != cluster.OriginalDst {
		return c.Pick(st.rng.Uint64())
	}
	if c.UseHTTPHeader() {
		if v, ok := hdrs.Get("x-envoy-original-dst-host"); ok {
			return c.OriginalDstHost(v)
		}
	}
	return c.OriginalDstHost(st.origDst)
}

func (st *stream) complete() {
	st.info.Duration = time.Since(st.info.Start)
	if st.trace.Sampled() {
		st.finishTrace()
	}
	if len(st.h.cfg.loggers) > 0 {
		if st.reqHdrs != nil {
			st.info.RequestHeaders = *st.reqHdrs
		}
		for _, l := range st.h.cfg.loggers {
			l.Log(&st.info)
		}
	}
	if f := st.h.env.OnComplete; f != nil {
		f(&st.info)
	}
}

// requestID applies Envoy's x-request-id rules.
func (st *stream) requestID(req *request) {
	hdrs := &req.r.Headers
	id, ok := hdrs.Get("x-request-id")
	if st.h.cfg.GenerateRequestID && (!ok || id == "" || (st.h.cfg.UseRemoteAddress && !st.h.cfg.PreserveExternalRequestID)) {
		id = newUUID(st.rng)
		hdrs.Set("x-request-id", id)
	}
	st.info.RequestID = id
}

// forwardH1 sends the request over an HTTP/1.1 connection from the host's
// pool and streams the response back.
//
// ts is nil without a retry policy; otherwise a retriable failure returns
// with ts.retry set and nothing sent downstream.
// maxStaleConns bounds the reused connections found closed that a request
// without a body is replayed past before it fails.
const maxStaleConns = 16

func (st *stream) forwardH1(req *request, rw responder, rt *route.Route, c *cluster.Cluster, host *cluster.Host, path, authority string, timeout time.Duration, ts *tryState) bool {
	info := &st.info
	pool := poolFor(c, host)
	hdrs := &req.r.Headers
	hdrs.Set("host", authority)
	chunked := false
	if req.body != nil && req.bodyLen < 0 {
		hdrs.Set("transfer-encoding", "chunked")
		chunked = true
	}
	if req.expect100 {
		hdrs.Del("expect")
	}
	// A request without a body can be replayed on a fresh connection when a
	// reused one turns out to be closed by the host.
	replayable := req.body == nil
	start := time.Now()
	var conn *upstream.Conn
	for attempt := 0; ; attempt++ {
		var err error
		conn, err = pool.Get(st.ctx)
		if err != nil {
			info.UpstreamFailed = err.Error()
			if ts.retryReset(route.ResetConnectFailure, info) {
				return true
			}
			return st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", "upstream_reset_before_response_started{connection_failure}", streaminfo.UpstreamConnectionFailure)
		}
		st.head = http1.AppendRequestHead(st.head[:0], req.r.Method, path, 1, *hdrs)
		_, err = conn.W.Write(st.head)
		if err == nil && req.body != nil {
			if req.expect100 {
				if err := rw.continue100(); err != nil {
					pool.Discard(conn)
					info.Flags |= streaminfo.DownstreamConnectionTermination
					return false
				}
			}
			var n int64
			n, err = st.copyRequestBody(conn, req, chunked)
			info.BytesReceived = n
			if errors.Is(err, errDownstream) {
				pool.Discard(conn)
				info.Flags |= streaminfo.DownstreamConnectionTermination
				return false
			}
		}
		if err == nil {
			err = conn.W.Flush()
		}
		if err == nil {
			err = conn.SetTimeout(start, timeout)
			if err == nil {
				err = st.readResponseHead(conn)
			}
		}
		if err == nil {
			break
		}
		pool.Discard(conn)
		if isTimeout(err) {
			if ts != nil && ts.perTryBound && ts.retryReset(route.ResetPerTryTimeout, info) {
				return true
			}
			return st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
		}
		// Every idle connection to a host that drained (a listener
		// update, a restart) is dead at once: each is discarded in turn
		// until a fresh one is dialed, which is never Reused.
		if conn.Reused && replayable && attempt < maxStaleConns {
			continue
		}
		info.UpstreamFailed = err.Error()
		if ts.retryReset(route.ResetOther, info) {
			return true
		}
		return st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", "upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination)
	}
	info.UpstreamTime = time.Since(start)
	resp := &conn.Resp
	if ts != nil && resp.Status != 101 && ts.retryStatus(resp.Status, &resp.Headers, info) {
		st.releaseRetried(pool, conn, req.r.Method)
		return true
	}

	if resp.Status == 101 {
		if !req.upgrade {
			pool.Discard(conn)
			return st.local(rw, req, 502, "", "upstream_upgrade_without_request", streaminfo.UpstreamProtocolError)
		}
		info.ResponseCode = 101
		info.Details = "via_upstream"
		_ = conn.NetConn().SetReadDeadline(time.Time{})
		st.respHeaders(&resp.Headers, rt, req, true)
		if err := rw.writeHead(101, resp.Headers, noBody); err != nil {
			pool.Discard(conn)
			return false
		}
		buffered, _ := conn.R.Peek(conn.R.Buffered())
		_ = rw.tunnel(conn.NetConn(), buffered)
		pool.Discard(conn)
		return false
	}

	kind, n := http1.ResponseBodyKind(resp, req.r.Method)
	bodyLen := int64(noBody)
	switch kind {
	case http1.BodyLength:
		bodyLen = n
	case http1.BodyChunked, http1.BodyUntilClose:
		bodyLen = lengthUnknown
	}
	st.respHeaders(&resp.Headers, rt, req, false)
	info.ResponseCode = resp.Status
	info.Details = "via_upstream"
	if err := rw.writeHead(resp.Status, resp.Headers, bodyLen); err != nil {
		pool.Discard(conn)
		info.Flags |= streaminfo.DownstreamConnectionTermination
		return false
	}
	conn.Body.Reset(conn.R, kind, n)
	sent, err := st.copyResponseBody(&conn.Body, conn, rw)
	info.BytesSent = sent
	if err != nil {
		pool.Discard(conn)
		var de downstreamError
		if errors.As(err, &de) {
			info.Flags |= streaminfo.DownstreamConnectionTermination
		} else if isTimeout(err) {
			info.Flags |= streaminfo.UpstreamRequestTimeout
		} else {
			info.Flags |= streaminfo.UpstreamConnectionTermination
		}
		return false
	}
	if err := rw.finish(conn.Body.Trailers); err != nil {
		pool.Discard(conn)
		return false
	}
	if resp.KeepAlive && kind != http1.BodyUntilClose {
		pool.Put(conn)
	} else {
		pool.Discard(conn)
	}
	return true
}

// releaseRetried disposes of the connection of a response that is retried:
// a short body is skipped so the connection can be reused, as a retry
// storm must not also be a reconnect storm.
func (st *stream) releaseRetried(pool *upstream.Pool, conn *upstream.Conn, method string) {
	kind, n := http1.ResponseBodyKind(&conn.Resp, method)
	if !conn.Resp.KeepAlive || kind == http1.BodyUntilClose || kind == http1.BodyChunked || n > 64<<10 {
		pool.Discard(conn)
		return
	}
	conn.Body.Reset(conn.R, kind, n)
	if _, err := io.Copy(io.Discard, &conn.Body); err != nil {
		pool.Discard(conn)
		return
	}
	pool.Put(conn)
}

// readResponseHead reads the final response head, skipping 100 Continue
// and other informational responses (but returning 101).
func (st *stream) readResponseHead(conn *upstream.Conn) error {
	for {
		if err := http1.ReadResponseHead(conn.R, &conn.Resp, st.h.cfg.Limits); err != nil {
			return err
		}
		if conn.Resp.Status >= 200 || conn.Resp.Status == 101 {
			return nil
		}
	}
}

var errDownstream = errors.New("downstream read failed")

type downstreamError struct{ err error }

func (e downstreamError) Error() string { return "downstream: " + e.err.Error() }
func (e downstreamError) Unwrap() error { return e.err }

// copyRequestBody streams the downstream body to the upstream connection.
func (st *stream) copyRequestBody(conn *upstream.Conn, req *request, chunked bool) (int64, error) {
	var total int64
	var cw http1.ChunkedWriter
	if chunked {
		cw.Reset(conn.W)
	}
	for {
		n, rerr := req.body.Read(st.buf)
		if n > 0 {
			total += int64(n)
			var werr error
			if chunked {
				_, werr = cw.Write(st.buf[:n])
			} else {
				_, werr = conn.W.Write(st.buf[:n])
			}
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			if chunked {
				return total, cw.Close(nil)
			}
			return total, nil
		}
		if rerr != nil {
			return total, errDownstream
		}
	}
}

// copyResponseBody streams the upstream body downstream, flushing whenever
// the upstream has nothing more buffered so streams stay interactive.
func (st *stream) copyResponseBody(body io.Reader, conn *upstream.Conn, rw responder) (int64, error) {
	var total int64
	for {
		n, rerr := body.Read(st.buf)
		if n > 0 {
			total += int64(n)
			if _, err := rw.write(st.buf[:n]); err != nil {
				return total, downstreamError{err}
			}
			// Flush when no more bytes are at hand, so streams stay interactive.
			if rerr == nil && (conn == nil || conn.R.Buffered() == 0) {
				if err := rw.flush(); err != nil {
					return total, downstreamError{err}
				}
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// respHeaders applies the response-side header rules.
func (st *stream) respHeaders(h *header.List, rt *route.Route, req *request, upgrade bool) {
	stripHopByHop(h, upgrade)
	if st.info.UpstreamTime >= 0 {
		h.Set("x-envoy-upstream-service-time", millis(st.info.UpstreamTime))
	}
	st.serverHeader(h)
	if st.setCookie != "" {
		h.Add("set-cookie", st.setCookie)
	}
	if rt != nil {
		if rt.IncludeAttemptCountInResponse() {
			h.Set("x-envoy-attempt-count", smallOrFormat(int64(max(st.info.AttemptCount, 1))))
		}
		st.env.Request = &req.r
		rt.MutateResponse(h, &st.env)
	}
	if st.h.cfg.AlwaysSetRequestIDInResponse && st.info.RequestID != "" {
		h.Set("x-request-id", st.info.RequestID)
	}
	if st.h.cfg.Tracing != nil {
		st.trace.Response(h)
	}
	if st.peerX != nil {
		st.peerX.response(st, h)
	}
	st.info.ResponseHeaders = *h
}

func (st *stream) serverHeader(h *header.List) {
	switch st.h.cfg.ServerHeader {
	case 0: // OVERWRITE
		h.Set("server", st.h.cfg.ServerName)
	case 1: // APPEND_IF_ABSENT
		h.SetIfAbsent("server", st.h.cfg.ServerName)
	}
}

// local sends a response generated by the proxy.
func (st *stream) local(rw responder, req *request, status int, body, details string, flags streaminfo.Flags) bool {
	st.resp.Reset()
	st.info.Flags |= flags
	return st.localWith(rw, req, nil, status, body, details, flags)
}

// localWith sends a local reply whose extra headers are already in st.resp.
func (st *stream) localWith(rw responder, req *request, rt *route.Route, status int, body, details string, flags streaminfo.Flags) bool {
	st.info.ResponseCode = status
	st.info.Details = details
	h := &st.resp
	if req.grpc && !h.Has("grpc-status") { // not already a gRPC reply
		status, body = grpcLocalReply(h, status, body)
	}
	if req.grpc {
		st.info.GRPCStatus, _ = h.Get("grpc-status")
	}
	if body != "" {
		h.Add("content-type", "text/plain")
	}
	h.Add("content-length", strconv.Itoa(len(body)))
	h.Add("date", st.h.dates.get())
	st.serverHeader(h)
	if rt != nil {
		st.env.Request = &req.r
		rt.MutateResponse(h, &st.env)
	}
	if st.h.cfg.AlwaysSetRequestIDInResponse && st.info.RequestID != "" {
		h.Set("x-request-id", st.info.RequestID)
	}
	if st.h.cfg.Tracing != nil {
		st.trace.Response(h)
	}
	st.info.ResponseHeaders = *h
	bodyLen := int64(len(body))
	if req.r.Method == "HEAD" {
		bodyLen = noBody
	}
	if err := rw.writeHead(status, *h, bodyLen); err != nil {
		return false
	}
	if bodyLen > 0 {
		if _, err := rw.write([]byte(body)); err != nil {
			return false
		}
	}
	if err := rw.finish(nil); err != nil {
		return false
	}
	st.info.BytesSent = int64(len(body))
	// A request whose body was not read cannot share the connection with
	// the next one, unless the caller drains it.
	return true
}

// stripHopByHop removes connection-specific headers (RFC 9110 §7.6.1),
// keeping the upgrade pair for WebSocket.
func stripHopByHop(h *header.List, upgrade bool) {
	if v, ok := h.Get("connection"); ok {
		// Headers the sender nominated as connection-specific go too.
		for _, tok := range strings.Split(v, ",") {
			tok = header.Lower(strings.TrimSpace(tok))
			switch tok {
			case "", "close", "keep-alive", "upgrade":
			default:
				h.Del(tok)
			}
		}
	}
	h.Del("connection")
	h.Del("keep-alive")
	h.Del("proxy-connection")
	h.Del("transfer-encoding")
	h.Del("http2-settings")
	if te, ok := h.Get("te"); ok && te != "trailers" {
		h.Del("te")
	}
	if upgrade {
		h.Add("connection", "upgrade")
	} else {
		h.Del("upgrade")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// smallInts avoids formatting the usual service times.
var smallInts = func() [1000]string {
	var s [1000]string
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func millis(d time.Duration) string { return smallOrFormat(d.Milliseconds()) }

func smallOrFormat(n int64) string {
	if n >= 0 && n < int64(len(smallInts)) {
		return smallInts[n]
	}
	return strconv.FormatInt(n, 10)
}

const hexDigits = "0123456789abcdef"

// newUUID returns a random (version 4) UUID string.
func newUUID(r *rand.Rand) string {
	var b [36]byte
	hi, lo := r.Uint64(), r.Uint64()
	hi = hi&^(0xf<<12) | 0x4<<12 // version 4
	lo = lo&^(0x3<<62) | 0x2<<62 // variant 10
	var raw [16]byte
	for i := 0; i < 8; i++ {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	j := 0
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j] = hexDigits[c>>4]
		b[j+1] = hexDigits[c&0xf]
		j += 2
	}
	return string(b[:])
}
