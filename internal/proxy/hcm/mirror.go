package hcm

// Request mirroring (Envoy's RouteAction.request_mirror_policies, the
// router's "shadow" requests).
//
// A mirrored request is a fire-and-forget copy sent to the mirror
// cluster, with ":authority"/Host suffixed "-shadow" (port kept). The
// copy's response is read and discarded; it never reaches the client and
// the client's response never waits for it.
//
// Bounds, so that a slow or dead mirror cannot hurt the proxy:
//   - bodies are copied as the primary request streams them, up to
//     mirrorMaxBody; a larger body is not mirrored (Envoy buffers the
//     whole body for shadowing up to the buffer limit);
//   - at most mirrorMaxInFlight mirror requests are in flight per proxy;
//     beyond that a mirror is dropped and counted;
//   - each mirror is bounded by the route timeout (mirrorDefaultTimeout
//     when the route has none).
//
// Mirror goroutines belong to the proxy's ConnTracker: Drain cancels the
// ones still running (closing their connections) and waits for them.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/http1"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/upstream"
)

const (
	mirrorMaxBody        = 64 << 10
	mirrorMaxInFlight    = 128
	mirrorDefaultTimeout = 15 * time.Second
)

// MirrorStats counts mirror requests since the proxy started.
type MirrorStats struct {
	Sent    uint64 // dispatched to a mirror host
	Dropped uint64 // not sent: in-flight limit reached, body too large, draining
	Failed  uint64 // no cluster/host, connect or protocol error, timeout
}

// mirrorSet owns the mirror goroutines of one proxy.
type mirrorSet struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}

	mu      sync.Mutex // orders wg.Add against stop
	stopped bool
	wg      sync.WaitGroup

	sent, dropped, failed atomic.Uint64
}

func (ms *mirrorSet) init() {
	ms.once.Do(func() {
		ms.ctx, ms.cancel = context.WithCancel(context.Background())
		ms.sem = make(chan struct{}, mirrorMaxInFlight)
	})
}

// stop cancels running mirrors and waits for their goroutines.
func (ms *mirrorSet) stop() {
	ms.init()
	ms.mu.Lock()
	ms.stopped = true
	ms.mu.Unlock()
	ms.cancel()
	ms.wg.Wait()
}

func (ms *mirrorSet) stats() MirrorStats {
	return MirrorStats{Sent: ms.sent.Load(), Dropped: ms.dropped.Load(), Failed: ms.failed.Load()}
}

// MirrorStats returns the request mirroring counters of the proxy.
func (t *ConnTracker) MirrorStats() MirrorStats { return t.mirrors.stats() }

// mirrorReq is one copy of a request, ready to send.
type mirrorReq struct {
	c         *cluster.Cluster
	h2        bool // HTTP/2 to the mirror host (cluster's protocol, or the downstream's)
	method    string
	path      string
	authority string
	hdrs      header.List
	body      []byte // nil without a body
	timeout   time.Duration
	limits    http1.Limits
}

// dispatch starts the mirror without ever blocking the caller.
func (ms *mirrorSet) dispatch(mr *mirrorReq) {
	ms.init()
	select {
	case ms.sem <- struct{}{}:
	default:
		ms.dropped.Add(1)
		return
	}
	ms.mu.Lock()
	if ms.stopped {
		ms.mu.Unlock()
		<-ms.sem
		ms.dropped.Add(1)
		return
	}
	ms.wg.Add(1)
	ms.mu.Unlock()
	go func() {
		defer ms.wg.Done()
		defer func() { <-ms.sem }()
		if err := mr.send(ms.ctx); err != nil {
			ms.failed.Add(1)
			return
		}
		ms.sent.Add(1)
	}()
}

// startMirrors sets up the mirrors of a routed request: sent at once
// without a body, or when the body has been read to its end (as the
// primary request streams it) otherwise. Called once the request headers
// are final (after the route's mutations and path rewrite).
func (st *stream) startMirrors(req *request, rt *route.Route, mps []route.Mirror, path string) {
	ms := &st.h.env.Conns.mirrors
	var pending []*mirrorReq
	for i := range mps {
		m := &mps[i]
		if !m.Sampled(st.rng.Uint64()) {
			continue
		}
		c := st.h.env.Clusters.Get(m.Cluster)
		if c == nil {
			ms.failed.Add(1)
			continue
		}
		if req.upgrade || (req.body != nil && req.bodyLen > mirrorMaxBody) {
			ms.dropped.Add(1)
			continue
		}
		authority := req.r.Authority
		if a, ok := rt.RewriteHost(&req.r); ok {
			authority = a
		}
		timeout := rt.Timeouts().Request
		if timeout <= 0 {
			timeout = mirrorDefaultTimeout
		}
		pending = append(pending, &mirrorReq{
			c: c, h2: c.Protocol == cluster.HTTP2 || (c.Protocol == cluster.Downstream && req.http2), method: req.r.Method, path: path, authority: shadowHost(authority),
			hdrs: append(header.List(nil), req.r.Headers...), timeout: timeout, limits: st.h.cfg.Limits,
		})
	}
	if len(pending) == 0 {
		return
	}
	if req.body == nil {
		for _, mr := range pending {
			ms.dispatch(mr)
		}
		return
	}
	req.body = &mirrorTee{src: req.body, ms: ms, pending: pending}
}

// mirrorTee copies the request body as the primary reads it and
// dispatches the mirrors when it ends; a body past mirrorMaxBody, or one
// that fails, is not mirrored.
type mirrorTee struct {
	src     io.Reader
	ms      *mirrorSet
	pending []*mirrorReq
	buf     []byte
}

func (t *mirrorTee) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if t.pending == nil {
		return n, err
	}
	if len(t.buf)+n > mirrorMaxBody {
		t.ms.dropped.Add(uint64(len(t.pending)))
		t.pending, t.buf = nil, nil
		return n, err
	}
	t.buf = append(t.buf, p[:n]...)
	switch {
	case err == io.EOF:
		body := t.buf
		if body == nil {
			body = []byte{}
		}
		for _, mr := range t.pending {
			mr.body = body // shared, read-only from here on
			t.ms.dispatch(mr)
		}
		t.pending, t.buf = nil, nil
	case err != nil:
		t.pending, t.buf = nil, nil // incomplete: not mirrored
	}
	return n, err
}

// shadowHost appends "-shadow" to the host part, keeping a port, as
// Envoy's shadowAppendedHost: "foo:8080" -> "foo-shadow:8080".
func shadowHost(h string) string {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.LastIndexByte(h, ']') > i {
		return h + "-shadow"
	}
	return h[:i] + "-shadow" + h[i:]
}

// send performs the mirror request and discards its response.
func (mr *mirrorReq) send(ctx context.Context) error {
	host := mr.c.Pick(rand.Uint64())
	if host == nil {
		return errNoHost
	}
	host.Active.Add(1)
	defer host.Active.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, mr.timeout)
	defer cancel()
	if mr.h2 {
		return mr.sendH2(ctx, h2For(mr.c, host), host.Addr)
	}
	pool := poolFor(mr.c, host)
	hdrs := &mr.hdrs
	hdrs.Set("host", mr.authority)
	hdrs.Del("transfer-encoding")
	hdrs.Del("expect")
	if mr.body != nil {
		hdrs.Set("content-length", strconv.Itoa(len(mr.body)))
	}
	start := time.Now()
	conn, err := pool.Get(ctx)
	if err != nil {
		return err
	}
	// Cancellation (timeout or drain) closes the connection under any
	// blocked read or write.
	stopClose := context.AfterFunc(ctx, func() { _ = conn.NetConn().Close() })
	reusable, err := mr.exchangeH1(conn, start)
	if stopClose() && reusable && err == nil {
		pool.Put(conn)
	} else {
		pool.Discard(conn)
	}
	return err
}

func (mr *mirrorReq) exchangeH1(conn *upstream.Conn, start time.Time) (reusable bool, err error) {
	if err := conn.SetTimeout(start, mr.timeout); err != nil {
		return false, err
	}
	head := http1.AppendRequestHead(nil, mr.method, mr.path, 1, mr.hdrs)
	if _, err := conn.W.Write(head); err != nil {
		return false, err
	}
	if _, err := conn.W.Write(mr.body); err != nil {
		return false, err
	}
	if err := conn.W.Flush(); err != nil {
		return false, err
	}
	for {
		if err := http1.ReadResponseHead(conn.R, &conn.Resp, mr.limits); err != nil {
			return false, err
		}
		if conn.Resp.Status >= 200 {
			break
		}
	}
	kind, n := http1.ResponseBodyKind(&conn.Resp, mr.method)
	conn.Body.Reset(conn.R, kind, n)
	if _, err := io.Copy(io.Discard, &conn.Body); err != nil {
		return false, err
	}
	return conn.Resp.KeepAlive && kind != http1.BodyUntilClose, nil
}

// sendH2 sends the mirror over the host's HTTP/2 client; the URL names
// the host's address, which the transport dials, as forwardH2 does.
func (mr *mirrorReq) sendH2(ctx context.Context, c *upstream.H2, addr string) error {
	u := &url.URL{Scheme: "http", Host: addr}
	if i := strings.IndexByte(mr.path, '?'); i >= 0 {
		u.Opaque, u.RawQuery = mr.path[:i], mr.path[i+1:]
	} else {
		u.Opaque = mr.path
	}
	if strings.HasPrefix(u.Opaque, "//") {
		u.Opaque = "//" + addr + u.Opaque
	}
	r := &http.Request{
		Method: mr.method, URL: u, Host: mr.authority,
		Header: make(http.Header, len(mr.hdrs)+1),
		Proto:  "HTTP/2.0", ProtoMajor: 2,
		ContentLength: int64(len(mr.body)),
		Body:          http.NoBody,
	}
	if mr.body != nil {
		r.Body = io.NopCloser(bytes.NewReader(mr.body))
	}
	for _, f := range mr.hdrs {
		switch f.Name {
		case "host", "content-length", "transfer-encoding", "expect", "connection", "te":
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(f.Name)
		r.Header[k] = append(r.Header[k], f.Value)
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = nil // no User-Agent of the transport's own
	}
	resp, err := c.RoundTrip(r.WithContext(ctx))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

var errNoHost = errors.New("mirror: no healthy upstream")
