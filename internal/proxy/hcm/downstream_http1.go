package hcm

import (
	"bufio"
	"context"
	"errors"
	"github.com/amime-mesh/amime/internal/proxy/drain"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/http1"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// maxDrainBody is how much of an unread request body the proxy reads and
// discards to keep a connection usable after a local reply.
const maxDrainBody = 256 << 10

// ServeConn serves one downstream connection until it closes, the peer is
// idle for IdleTimeout, or ctx ends.
func (h *Handler) ServeConn(ctx context.Context, nc net.Conn) {
	tc := h.env.Conns.add(nc)
	defer h.env.Conns.remove(tc)
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	// The listener drains this connection when its filter chain changes:
	// an idle HTTP/1.1 connection closes at once, a busy one after its
	// response (Connection: close); HTTP/2 gets the drain timeout.
	stopDrain := drain.From(ctx).AfterFunc(func() {
		tc.drained.Store(true)
		h.env.Conns.mu.Lock()
		h2 := tc.goAway != nil
		h.env.Conns.mu.Unlock()
		switch {
		case h2:
			time.AfterFunc(h.cfg.DrainTimeout, func() { _ = nc.Close() })
		case tc.idle.Load():
			_ = nc.Close()
		}
	})
	defer stopDrain()

	if h.cfg.Codec == 2 { // HTTP2: prior knowledge only
		h.serveH2(ctx, nc, nil, tc)
		return
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	bw := bufio.NewWriterSize(nc, 16<<10)
	st := newStream(h, ctx, nc)
	st.peer = peerOf(nc) // HTTP/2 streams share their connection's (h2.go)
	d := &h1Down{bw: bw, nc: nc, br: br, conns: h.env.Conns, tc: tc}
	var req request
	var head http1.RequestHead
	var body http1.BodyReader
	for {
		tc.idle.Store(true)
		if h.env.Conns.Draining() || tc.drained.Load() {
			return
		}
		if h.cfg.IdleTimeout > 0 {
			_ = nc.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
		}
		err := http1.ReadRequestHead(br, &head, h.cfg.Limits)
		tc.idle.Store(false)
		if err != nil {
			if errors.Is(err, http1.ErrHTTP2Preface) && h.cfg.Codec == 0 {
				h.serveH2(ctx, nc, br, tc)
				return
			}
			h.badRequest(st, d, err)
			return
		}
		if h.cfg.StreamIdleTimeout > 0 {
			_ = nc.SetReadDeadline(time.Now().Add(h.cfg.StreamIdleTimeout))
		} else {
			_ = nc.SetReadDeadline(time.Time{})
		}
		if !fillRequest(&req, &head) {
			st.info.Reset()
			st.info.Protocol = "HTTP/1.1"
			st.info.Flags |= streaminfo.DownstreamProtocolError
			d.reset(&head, h.env.Conns.Draining())
			d.keepAlive = false
			st.local(d, &req, 400, "Bad Request", "missing_host_header", streaminfo.DownstreamProtocolError)
			_ = bw.Flush()
			return
		}
		kind, n := http1.RequestBodyKind(&head)
		if kind != http1.BodyNone {
			body.Reset(br, kind, n)
			req.body = &body
			req.bodyLen = -1
			if kind == http1.BodyLength {
				req.bodyLen = n
			}
		}
		d.reset(&head, h.env.Conns.Draining())
		ok := st.serve(&req, d)
		// Keep the list's storage, grown by the core, for the next request.
		head.Headers = req.r.Headers[:0]
		if ok && kind != http1.BodyNone && !body.Done() {
			// Local reply before the body was read: discard a bounded amount.
			if m, err := io.CopyN(io.Discard, &body, maxDrainBody+1); err != io.EOF || m > maxDrainBody {
				ok = false
			}
		}
		if err := bw.Flush(); err != nil || !ok || !d.keepAlive || d.hijacked {
			return
		}
	}
}

// fillRequest maps an HTTP/1.1 head onto the core's request. It reports
// false when the request lacks the Host an HTTP/1.1 request must carry.
func fillRequest(req *request, head *http1.RequestHead) bool {
	*req = request{
		r: route.Request{
			Method:  head.Method,
			Path:    head.Target,
			Scheme:  "http",
			Headers: head.Headers,
		},
		bodyLen:   0,
		expect100: head.Expect100,
		upgrade:   head.Upgrade,
	}
	req.grpc = false
	if t := head.Target; len(t) > 0 && t[0] != '/' && t != "*" {
		// absolute-form: http://host/path
		if scheme, rest, ok := cutScheme(t); ok {
			req.r.Scheme = scheme
			i := 0
			for i < len(rest) && rest[i] != '/' && rest[i] != '?' {
				i++
			}
			req.r.Authority = rest[:i]
			req.r.Path = rest[i:]
			if req.r.Path == "" {
				req.r.Path = "/"
			}
		}
	}
	if req.r.Authority == "" {
		host, ok := head.Headers.Get("host")
		if !ok {
			if head.Minor == 0 {
				// HTTP/1.0 may omit Host.
				return true
			}
			return false
		}
		req.r.Authority = host
	}
	return true
}

func cutScheme(t string) (scheme, rest string, ok bool) {
	switch {
	case len(t) > 7 && header.EqualFold(t[:7], "http://"):
		return "http", t[7:], true
	case len(t) > 8 && header.EqualFold(t[:8], "https://"):
		return "https", t[8:], true
	}
	return "", "", false
}

// badRequest answers a head the codec refused, then closes.
func (h *Handler) badRequest(st *stream, d *h1Down, err error) {
	var ce *http1.Error
	if !errors.As(err, &ce) {
		return // EOF, reset or timeout: nothing to answer
	}
	st.info.Reset()
	st.info.Start = time.Now()
	st.info.Protocol = "HTTP/1.1"
	st.info.Flags |= streaminfo.DownstreamProtocolError
	var req request
	d.reset(&http1.RequestHead{Minor: 1}, true)
	d.keepAlive = false
	st.resp.Reset()
	st.localWith(d, &req, nil, ce.Status, "Bad Request", ce.Detail, 0)
	_ = d.bw.Flush()
	st.complete()
	lingerClose(d.nc)
}

// lingerClose half-closes and discards what the client still sends for a
// short while, so the error response is not destroyed by a TCP reset for
// unread data (Envoy's delayed_close_timeout does the same, 1 s).
func lingerClose(nc net.Conn) {
	// An interface, not *net.TCPConn: listener filters wrap connections.
	hc, ok := nc.(halfCloser)
	if !ok {
		return
	}
	_ = hc.CloseWrite()
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.CopyN(io.Discard, nc, 1<<20)
}

type halfCloser interface{ CloseWrite() error }

// h1Down writes a response on an HTTP/1.1 downstream connection.
type h1Down struct {
	conns     *ConnTracker
	tc        *trackedConn
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	minor     int
	keepAlive bool
	chunked   bool
	hijacked  bool
	isHead    bool
	cw        http1.ChunkedWriter
	head      []byte
}

func (d *h1Down) reset(head *http1.RequestHead, draining bool) {
	d.minor = head.Minor
	d.keepAlive = head.KeepAlive && !draining
	d.chunked = false
	d.isHead = head.Method == "HEAD"
}

func (d *h1Down) continue100() error {
	if _, err := d.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
		return err
	}
	return d.bw.Flush()
}

func (d *h1Down) writeHead(status int, h header.List, bodyLen int64) error {
	switch {
	case bodyLen == lengthUnknown && d.minor >= 1:
		d.chunked = true
		h.Set("transfer-encoding", "chunked")
		h.Del("content-length")
	case bodyLen == lengthUnknown:
		// HTTP/1.0 client: the body ends when the connection closes.
		d.keepAlive = false
	case bodyLen >= 0 && !d.isHead:
		if !h.Has("content-length") {
			h.Add("content-length", strconv.FormatInt(bodyLen, 10))
		}
	}
	if status != 101 && (d.conns.Draining() || d.tc.drained.Load()) {
		// Envoy closes HTTP/1.1 connections while draining, saying so on
		// every response so keep-alive clients do not race the close.
		d.keepAlive = false
	}
	if status == 101 {
		// connection: upgrade is already in h.
	} else if !d.keepAlive {
		h.Set("connection", "close")
	} else if d.minor == 0 {
		h.Set("connection", "keep-alive")
	}
	d.head = http1.AppendResponseHead(d.head[:0], status, "", h)
	_, err := d.bw.Write(d.head)
	if d.chunked {
		d.cw.Reset(d.bw)
	}
	return err
}

func (d *h1Down) write(p []byte) (int, error) {
	if d.chunked {
		return d.cw.Write(p)
	}
	return d.bw.Write(p)
}

func (d *h1Down) flush() error { return d.bw.Flush() }

func (d *h1Down) finish(trailers header.List) error {
	if d.chunked {
		return d.cw.Close(trailers)
	}
	return nil
}

func (d *h1Down) tunnel(up net.Conn, upBuffered []byte) error {
	d.hijacked = true
	if len(upBuffered) > 0 {
		if _, err := d.bw.Write(upBuffered); err != nil {
			return err
		}
	}
	if err := d.bw.Flush(); err != nil {
		return err
	}
	return splice(d.nc, d.br, up)
}

// splice copies both ways until either side ends, then closes both.
func splice(down net.Conn, downBuf *bufio.Reader, up net.Conn) error {
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(up, downBuf) // bytes the client sent after the upgrade request, then the socket
		if hc, ok := up.(halfCloser); ok {
			_ = hc.CloseWrite()
		}
		errc <- err
	}()
	_, err := io.Copy(down, up)
	if hc, ok := down.(halfCloser); ok {
		_ = hc.CloseWrite()
	}
	// Whichever side finished, the tunnel is over once both have: bound the wait.
	_ = up.SetReadDeadline(time.Now().Add(5 * time.Second))
	_ = down.SetReadDeadline(time.Now().Add(5 * time.Second))
	err2 := <-errc
	_ = up.Close()
	if err == nil {
		err = err2
	}
	return err
}
