package hcm

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// h2State is the HTTP/2 server shared by a Handler's connections.
type h2State struct {
	once     sync.Once
	hs       *http.Server
	srv      *http2.Server
	goneAway atomic.Bool
}

func (h *Handler) h2() *h2State {
	h.h2s.once.Do(func() {
		s := &h.h2s
		s.hs = &http.Server{ConnState: func(_ net.Conn, cs http.ConnState) {
			// A connection that registered with the server after Drain sent
			// GOAWAY to the others (it raced with it) must get one too.
			if cs == http.StateActive && h.env.Conns.Draining() {
				s.goAwayAll()
			}
		}}
		// Envoy's default max frame size (16 KiB, the RFC's initial value):
		// x/net would advertise 1 MiB and accept oversized frames.
		s.srv = &http2.Server{IdleTimeout: h.cfg.IdleTimeout, MaxReadFrameSize: 16 << 10}
		_ = http2.ConfigureServer(s.hs, s.srv)
	})
	return &h.h2s
}

// goAwayAll starts the graceful shutdown of every connection of the
// server: GOAWAY(NO_ERROR) now, close once their streams are done.
func (s *h2State) goAwayAll() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Shutdown with a done context only runs the shutdown hooks, among them
	// x/net/http2's, which sends GOAWAY on every connection it serves.
	_ = s.hs.Shutdown(ctx)
}

// downConn is what the streams of one HTTP/2 connection share.
type downConn struct {
	nc                   net.Conn
	remote, remIP, local string
	peer                 *downstreamPeer
	// parsed remote and local, for RBAC
	remoteAddr, localAddrPort netip.AddrPort
}

// prefixConn replays bytes already buffered by the HTTP/1.1 reader.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// serveH2 serves an HTTP/2 connection (prior knowledge); br holds bytes
// already read from nc, if any.
func (h *Handler) serveH2(ctx context.Context, nc net.Conn, br *bufio.Reader, tc *trackedConn) {
	s := h.h2()
	// x/net closes the connection itself, possibly with unread bytes (a bad
	// preface, a connection error): linger so the client reads the GOAWAY
	// instead of a reset.
	var conn net.Conn = &lingerConn{Conn: nc}
	if br != nil && br.Buffered() > 0 {
		conn = &prefixConn{Conn: conn, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), nc)}
	}
	_ = nc.SetReadDeadline(time.Time{})
	h.env.Conns.mu.Lock()
	tc.goAway = func() {
		// Once is enough: it reaches every connection of the server.
		if s.goneAway.CompareAndSwap(false, true) {
			s.goAwayAll()
		}
	}
	h.env.Conns.mu.Unlock()
	dc := &downConn{nc: nc, remote: nc.RemoteAddr().String(), local: nc.LocalAddr().String(), peer: peerOf(nc)}
	dc.remIP, _, _ = net.SplitHostPort(dc.remote)
	dc.remoteAddr, dc.localAddrPort = addrPort(dc.remote), addrPort(dc.local)
	s.srv.ServeConn(conn, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.hs,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.serveH2Request(w, r, dc)
		}),
	})
}

// lingerConn half-closes and drains before closing.
type lingerConn struct {
	net.Conn
	once sync.Once
}

func (c *lingerConn) Close() error {
	var err error
	c.once.Do(func() {
		lingerClose(c.Conn)
		err = c.Conn.Close()
	})
	return err
}

func (h *Handler) serveH2Request(w http.ResponseWriter, r *http.Request, dc *downConn) {
	st, _ := h.streams.Get().(*stream)
	if st == nil {
		st = newStream(h, r.Context(), dc.nc)
		st.peer = dc.peer
		st.remoteAddr, st.localAddrPort = dc.remoteAddr, dc.localAddrPort
	} else {
		// A recycled stream may have served another connection.
		st.ctx = r.Context()
		st.remote, st.remIP, st.localAddr, st.origDst = dc.remote, dc.remIP, dc.local, dc.local
		st.peer = dc.peer
		st.remoteAddr, st.localAddrPort = dc.remoteAddr, dc.localAddrPort
		st.env.DownstreamRemoteAddress = dc.remote
		st.env.DownstreamRemoteAddressWithoutPort = dc.remIP
		st.env.DownstreamLocalAddress = dc.local
	}
	defer h.streams.Put(st)
	req := request{
		r: route.Request{
			Method:    r.Method,
			Authority: r.Host,
			Path:      r.RequestURI,
			Scheme:    "http",
		},
		bodyLen: r.ContentLength,
		http2:   true,
	}
	for k, vs := range r.Header {
		name := header.Lower(k)
		for _, v := range vs {
			req.r.Headers.Add(name, v)
		}
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		req.body = r.Body
	}
	// The core strips Expect as Envoy does; the 100 itself is sent by
	// x/net/http2 when the body is first read (see h2Down.continue100).
	req.expect100 = req.body != nil && header.EqualFold(r.Header.Get("Expect"), "100-continue")
	ct, _ := req.r.Headers.Get("content-type")
	req.grpc = strings.HasPrefix(ct, "application/grpc")
	d := &h2Down{w: w}
	st.serve(&req, d)
	if !d.finished {
		// The response was cut short (or never started): reset the stream,
		// as returning would end it cleanly and the client would take a
		// truncated body, or an empty 200, for a complete response.
		panic(http.ErrAbortHandler)
	}
}

// h2Down writes a response on an HTTP/2 downstream stream.
type h2Down struct {
	w        http.ResponseWriter
	written  bool
	finished bool
}

// continue100 has nothing to do: x/net/http2 sends 100 Continue itself
// when the handler first reads a body whose request expects it, which the
// forwarding core does right after this call.
func (d *h2Down) continue100() error { return nil }

func (d *h2Down) writeHead(status int, h header.List, bodyLen int64) error {
	hdr := d.w.Header()
	for _, f := range h {
		switch f.Name {
		case "connection", "transfer-encoding", "keep-alive", "upgrade":
			continue
		case "content-length":
			// Kept on HEAD and 304 (noBody): it describes the entity.
			if bodyLen == lengthUnknown {
				continue
			}
		}
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		hdr[k] = append(hdr[k], f.Value)
	}
	if _, ok := hdr["Content-Type"]; !ok {
		// Keep net/http from sniffing a type the upstream did not send.
		hdr["Content-Type"] = nil
	}
	d.w.WriteHeader(status)
	d.written = true
	return nil
}

func (d *h2Down) write(p []byte) (int, error) { return d.w.Write(p) }

func (d *h2Down) flush() error {
	return http.NewResponseController(d.w).Flush()
}

func (d *h2Down) finish(trailers header.List) error {
	hdr := d.w.Header()
	for _, f := range trailers {
		hdr[http.TrailerPrefix+f.Name] = append(hdr[http.TrailerPrefix+f.Name], f.Value)
	}
	d.finished = true
	return nil
}

func (d *h2Down) tunnel(net.Conn, []byte) error {
	return errors.New("upgrade over HTTP/2 is not supported")
}

// forwardH2 sends the request over HTTP/2 (h2c) to the host.
// ts is as for forwardH1.
func (st *stream) forwardH2(req *request, rw responder, rt *route.Route, c *cluster.Cluster, host *cluster.Host, path, authority string, timeout time.Duration, ts *tryState) bool {
	info := &st.info
	cli := h2For(c, host)
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(st.ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(st.ctx)
	}
	defer cancel()
	u := &url.URL{Scheme: "http", Host: host.Addr}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Opaque, u.RawQuery = path[:i], path[i+1:]
	} else {
		u.Opaque = path
	}
	if strings.HasPrefix(u.Opaque, "//") {
		// url.URL would read "//x" as an authority; in this form the
		// transport strips the prefix and sends the path as it is.
		u.Opaque = "//" + authority + u.Opaque
	}
	hreq := &http.Request{
		Method:        req.r.Method,
		URL:           u,
		Host:          authority,
		Header:        make(http.Header, len(req.r.Headers)+1),
		ContentLength: req.bodyLen,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}
	hreq = hreq.WithContext(ctx)
	for _, f := range req.r.Headers {
		if f.Name == "host" || f.Name == "expect" {
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		hreq.Header[k] = append(hreq.Header[k], f.Value)
	}
	if _, ok := hreq.Header["User-Agent"]; !ok {
		// Present but empty: the transport adds no User-Agent of its own.
		hreq.Header["User-Agent"] = nil
	}
	var body *upstreamBody
	if req.body != nil {
		if req.expect100 {
			// Envoy answers 100 Continue itself and does not forward Expect.
			if err := rw.continue100(); err != nil {
				info.Flags |= streaminfo.DownstreamConnectionTermination
				return false
			}
		}
		body = &upstreamBody{r: req.body, closeDown: req.http2}
		hreq.Body = body
	} else {
		hreq.Body = http.NoBody
		hreq.ContentLength = 0
	}
	// An HTTP/1.1 connection can serve its next request only once the
	// transport, which reads the body on its own goroutine, has read all
	// of this one's: otherwise it would race with the next request's read.
	reusable := func(ok bool) bool {
		if body != nil {
			info.BytesReceived = body.n.Load()
			if !req.http2 && !body.eof.Load() {
				return false
			}
		}
		return ok
	}
	start := time.Now()
	resp, err := cli.RoundTrip(hreq)
	if err != nil {
		info.UpstreamFailed = err.Error()
		var oe *net.OpError
		var se http2.StreamError
		timedOut := isTimeout(err) || ctx.Err() == context.DeadlineExceeded
		switch {
		case timedOut && ts != nil && ts.perTryBound && ts.retryReset(route.ResetPerTryTimeout, info):
			return true
		case timedOut:
			return reusable(st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout))
		case errors.As(err, &oe) && oe.Op == "dial":
			if ts.retryReset(route.ResetConnectFailure, info) {
				return true
			}
			return reusable(st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", "upstream_reset_before_response_started{connection_failure}", streaminfo.UpstreamConnectionFailure))
		case errors.As(err, &se) && ctx.Err() == nil:
			// RST_STREAM from the host (a gRPC server past the deadline, say).
			kind := route.ResetOther
			if se.Code == http2.ErrCodeRefusedStream {
				kind = route.ResetRefusedStream
			}
			if ts.retryReset(kind, info) {
				return true
			}
			return reusable(st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: remote reset", "upstream_reset_before_response_started{remote_reset}", streaminfo.UpstreamRemoteReset))
		default:
			if ts.retryReset(route.ResetOther, info) {
				return true
			}
			return reusable(st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", "upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination))
		}
	}
	defer func() {
		// Cancel first: Close waits until the transport stops sending the
		// request body, and it may be blocked reading from the client.
		cancel()
		if ts != nil && ts.retry {
			// The abandoned try's transport may be blocked reading the
			// client's body, which the next try now owns: do not wait.
			go resp.Body.Close()
			return
		}
		resp.Body.Close()
	}()
	info.UpstreamTime = time.Since(start)
	st.resp.Reset()
	for k, vs := range resp.Header {
		name := header.Lower(k)
		for _, v := range vs {
			st.resp.Add(name, v)
		}
	}
	if ts != nil && ts.retryStatus(resp.StatusCode, &st.resp, info) {
		return true
	}
	st.respHeaders(&st.resp, rt, req, false)
	bodyLen := resp.ContentLength
	if req.r.Method == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304 {
		bodyLen = noBody
	} else if bodyLen >= 0 && !req.http2 && len(resp.Trailer) > 0 {
		// Declared trailers: HTTP/1.1 carries them only after a chunked body.
		bodyLen = lengthUnknown
		st.resp.Del("content-length")
		st.resp.Add("trailer", trailerNames(resp.Trailer))
	}
	info.ResponseCode = resp.StatusCode
	info.Details = "via_upstream"
	if err := rw.writeHead(resp.StatusCode, st.resp, bodyLen); err != nil {
		info.Flags |= streaminfo.DownstreamConnectionTermination
		return false
	}
	if bodyLen == lengthUnknown {
		// A stream (gRPC, server-sent events): the client gets the headers
		// now, not with the first message, which may be long in coming.
		if err := rw.flush(); err != nil {
			info.Flags |= streaminfo.DownstreamConnectionTermination
			return false
		}
	}
	sent, err := st.copyResponseBody(resp.Body, nil, rw)
	info.BytesSent = sent
	if err != nil {
		var de downstreamError
		switch {
		case errors.As(err, &de):
			info.Flags |= streaminfo.DownstreamConnectionTermination
		case isTimeout(err) || ctx.Err() != nil:
			info.Flags |= streaminfo.UpstreamRequestTimeout
		default:
			info.Flags |= streaminfo.UpstreamRemoteReset
		}
		return false
	}
	var trailers header.List
	for k, vs := range resp.Trailer {
		name := header.Lower(k)
		for _, v := range vs {
			trailers.Add(name, v)
		}
	}
	if req.grpc {
		// Trailers normally; headers for a trailers-only response.
		if info.GRPCStatus = resp.Trailer.Get("Grpc-Status"); info.GRPCStatus == "" {
			info.GRPCStatus = resp.Header.Get("Grpc-Status")
		}
	}
	return reusable(rw.finish(trailers) == nil)
}

// upstreamBody is the downstream request body as the HTTP/2 transport
// reads it, from a goroutine of its own.
type upstreamBody struct {
	r   io.Reader
	n   atomic.Int64
	eof atomic.Bool // the transport has read the whole body
	// closeDown passes Close on to r: an HTTP/2 stream's body, which
	// Close unblocks. An HTTP/1.1 body belongs to the connection.
	closeDown bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// Close is called by the transport once it no longer needs the body.
func (b *upstreamBody) Close() error {
	if c, ok := b.r.(io.Closer); ok && b.closeDown {
		return c.Close()
	}
	return nil
}

func trailerNames(t http.Header) string {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, header.Lower(k))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// grpcLocalReply shapes a local reply to a gRPC request as Envoy does: a
// trailers-only gRPC response (HTTP 200) whose grpc-status is mapped from
// the HTTP status (gRPC's http-grpc-status-mapping) and whose grpc-message
// is the body. It returns the status and body to send instead.
func grpcLocalReply(h *header.List, status int, body string) (int, string) {
	code := 2 // UNKNOWN
	switch status {
	case 400:
		code = 13 // INTERNAL
	case 401:
		code = 16 // UNAUTHENTICATED
	case 403:
		code = 7 // PERMISSION_DENIED
	case 404:
		code = 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		code = 14 // UNAVAILABLE
	}
	h.Add("content-type", "application/grpc")
	h.Add("grpc-status", smallOrFormat(int64(code)))
	if body != "" {
		h.Add("grpc-message", grpcPercentEncode(body))
	}
	return 200, ""
}

// grpcPercentEncode encodes a grpc-message: bytes outside printable ASCII,
// and '%', become %XX.
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(s)+16), s[:i]...)
		}
		b = append(b, '%', hex[c>>4], hex[c&0xf])
	}
	if b == nil {
		return s
	}
	return string(b)
}
