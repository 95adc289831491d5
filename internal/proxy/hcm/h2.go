package hcm

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
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
	shutdown sync.Once
}

func (h *Handler) h2() *h2State {
	h.h2s.once.Do(func() {
		h.h2s.hs = &http.Server{}
		h.h2s.srv = &http2.Server{IdleTimeout: h.cfg.IdleTimeout}
		_ = http2.ConfigureServer(h.h2s.hs, h.h2s.srv)
	})
	return &h.h2s
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
	conn := nc
	if br != nil && br.Buffered() > 0 {
		conn = &prefixConn{Conn: nc, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), nc)}
	}
	_ = nc.SetReadDeadline(time.Time{})
	h.env.Conns.mu.Lock()
	tc.goAway = func() {
		s.shutdown.Do(func() {
			sctx, cancel := context.WithCancel(context.Background())
			cancel()
			// Shutdown with a done context only triggers GOAWAY on every connection.
			_ = s.hs.Shutdown(sctx)
		})
	}
	h.env.Conns.mu.Unlock()
	s.srv.ServeConn(conn, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.hs,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.serveH2Request(w, r, nc)
		}),
	})
}

func (h *Handler) serveH2Request(w http.ResponseWriter, r *http.Request, nc net.Conn) {
	st, _ := h.streams.Get().(*stream)
	if st == nil {
		st = newStream(h, r.Context(), nc)
	} else {
		st.ctx = r.Context()
		st.remote = nc.RemoteAddr().String()
		st.remIP, _, _ = net.SplitHostPort(st.remote)
		st.env.DownstreamRemoteAddress = st.remote
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
	ct, _ := req.r.Headers.Get("content-type")
	req.grpc = strings.HasPrefix(ct, "application/grpc")
	d := &h2Down{w: w}
	st.serve(&req, d)
}

// h2Down writes a response on an HTTP/2 downstream stream.
type h2Down struct {
	w       http.ResponseWriter
	written bool
}

func (d *h2Down) continue100() error { return nil }

func (d *h2Down) writeHead(status int, h header.List, bodyLen int64) error {
	hdr := d.w.Header()
	for _, f := range h {
		switch f.Name {
		case "connection", "transfer-encoding", "keep-alive", "upgrade":
			continue
		case "content-length":
			if bodyLen < 0 {
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
	return nil
}

func (d *h2Down) tunnel(net.Conn, []byte) error {
	return errors.New("upgrade over HTTP/2 is not supported")
}

// forwardH2 sends the request over HTTP/2 (h2c) to the host.
func (st *stream) forwardH2(req *request, rw responder, rt *route.Route, c *cluster.Cluster, host *cluster.Host, path, authority string, timeout time.Duration) bool {
	info := &st.info
	cli := h2For(c, host)
	ctx := st.ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	u := &url.URL{Scheme: "http", Host: host.Addr}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u.Opaque, u.RawQuery = path[:i], path[i+1:]
	} else {
		u.Opaque = path
	}
	hreq := &http.Request{
		Method:        req.r.Method,
		URL:           u,
		Host:          authority,
		Header:        make(http.Header, len(req.r.Headers)),
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
	if req.body != nil {
		hreq.Body = io.NopCloser(req.body)
	} else {
		hreq.Body = http.NoBody
		hreq.ContentLength = 0
	}
	start := time.Now()
	resp, err := cli.RoundTrip(hreq)
	if err != nil {
		info.UpstreamFailed = err.Error()
		var oe *net.OpError
		switch {
		case isTimeout(err) || ctx.Err() == context.DeadlineExceeded:
			return st.local(rw, req, 504, "upstream request timeout", "upstream_response_timeout", streaminfo.UpstreamRequestTimeout)
		case errors.As(err, &oe) && oe.Op == "dial":
			return st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", "upstream_reset_before_response_started{connection_failure}", streaminfo.UpstreamConnectionFailure)
		default:
			return st.local(rw, req, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", "upstream_reset_before_response_started{connection_termination}", streaminfo.UpstreamConnectionTermination)
		}
	}
	defer resp.Body.Close()
	info.UpstreamTime = time.Since(start)
	st.resp.Reset()
	for k, vs := range resp.Header {
		name := header.Lower(k)
		for _, v := range vs {
			st.resp.Add(name, v)
		}
	}
	st.respHeaders(&st.resp, rt, req, false)
	bodyLen := resp.ContentLength
	if req.r.Method == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304 {
		bodyLen = noBody
	} else if bodyLen >= 0 {
		st.resp.Set("content-length", smallOrFormat(bodyLen))
	}
	info.ResponseCode = resp.StatusCode
	info.Details = "via_upstream"
	if err := rw.writeHead(resp.StatusCode, st.resp, bodyLen); err != nil {
		info.Flags |= streaminfo.DownstreamConnectionTermination
		return false
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
	return rw.finish(trailers) == nil
}
