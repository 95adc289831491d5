// Package upstream holds connections from the proxy to upstream hosts: an
// HTTP/1.1 connection pool per host, and HTTP/2 (h2c) clients.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amime-mesh/amime/internal/proxy/http1"
	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

// bufSize is the per-connection read and write buffer size: large enough
// for a typical head plus a small body in one syscall.
const bufSize = 16 << 10

// staleCheckAfter is how long a connection may sit idle before Get checks
// that the host has not closed it. Under load connections are reused within
// microseconds; a host's keep-alive timeout is seconds.
const staleCheckAfter = 200 * time.Millisecond

// Conn is one HTTP/1.1 connection to a host, used by one request at a time.
type Conn struct {
	nc        net.Conn
	R         *bufio.Reader
	W         *bufio.Writer
	Resp      http1.ResponseHead
	Body      http1.BodyReader
	pool      *Pool
	idleSince time.Time
	// Reused is true when the connection served a request before.
	Reused bool
	// hasDeadline: a read deadline from an earlier request is set.
	hasDeadline bool
	// requests counts the requests the connection carried.
	requests uint32
	// idleTimer closes the connection when it stays idle too long.
	idleTimer *time.Timer
}

// SetTimeout bounds the reads of the current request to start+timeout, or
// lifts the bound for a route without a timeout: a pooled connection must
// not carry an earlier route's deadline into the next request.
func (c *Conn) SetTimeout(start time.Time, timeout time.Duration) error {
	if timeout > 0 {
		c.hasDeadline = true
		return c.nc.SetReadDeadline(start.Add(timeout))
	}
	if c.hasDeadline {
		c.hasDeadline = false
		return c.nc.SetReadDeadline(time.Time{})
	}
	return nil
}

// NetConn returns the underlying connection (for deadlines and upgrades).
func (c *Conn) NetConn() net.Conn { return c.nc }

// Pool is the HTTP/1.1 connection pool of one upstream host.
type Pool struct {
	Addr           string
	ConnectTimeout time.Duration
	MaxIdle        int
	// TLS, when set, runs a TLS handshake on each new connection.
	TLS *tlsctx.Client
	// IdleTimeout closes connections idle that long (0: never); Envoy's
	// common_http_protocol_options.idle_timeout, 1 h by default.
	IdleTimeout time.Duration
	// MaxRequests per connection (0: unlimited): a connection that has
	// carried that many is closed instead of reused.
	MaxRequests uint32

	mu     sync.Mutex
	idle   []*Conn
	closed bool

	// Open counts open connections (idle and busy).
	Open atomic.Int64
	// Created counts connections made over the pool's life.
	Created atomic.Uint64
}

// NewPool returns a pool for addr ("ip:port").
func NewPool(addr string, connectTimeout time.Duration) *Pool {
	return &Pool{Addr: addr, ConnectTimeout: connectTimeout, MaxIdle: 1024}
}

// ErrConnect marks a failure to establish a connection (Envoy's UF).
var ErrConnect = errors.New("upstream connect error")

// Get returns an idle connection or dials a new one.
func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if c.idleTimer != nil {
			// Taken out of idle under the lock first: a timer firing now
			// finds it gone and leaves it alone.
			c.idleTimer.Stop()
		}
		if now.Sub(c.idleSince) < staleCheckAfter || alive(c.nc) {
			return c, nil
		}
		p.discard(c)
	}
	return p.dial(ctx)
}

func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	nc, err := Dial(ctx, p.Addr, p.ConnectTimeout, p.TLS, nil)
	if err != nil {
		return nil, err
	}
	p.Open.Add(1)
	p.Created.Add(1)
	return &Conn{nc: nc, R: bufio.NewReaderSize(nc, bufSize), W: bufio.NewWriterSize(nc, bufSize), pool: p}, nil
}

// Dial connects to addr within timeout and, with tc, runs the TLS
// handshake (offering alpn instead of the configured protocols when not
// nil). Failures wrap ErrConnect (Envoy's UF); a TLS failure says so.
func Dial(ctx context.Context, addr string, timeout time.Duration, tc *tlsctx.Client, alpn []string) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConnect, addr, err)
	}
	if t, ok := nc.(*net.TCPConn); ok {
		_ = t.SetNoDelay(true)
	}
	if tc == nil {
		return nc, nil
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tlsConn, err := tc.Handshake(hctx, nc, alpn)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("%w: %s: TLS error: %w", ErrConnect, addr, err)
	}
	return tlsConn, nil
}

// Put returns a connection whose last response was read to its end and
// allows reuse.
func (p *Pool) Put(c *Conn) {
	if c.R.Buffered() > 0 {
		// The host sent bytes past the response: the connection is out of sync.
		p.discard(c)
		return
	}
	c.requests++
	if p.MaxRequests > 0 && c.requests >= p.MaxRequests {
		p.discard(c)
		return
	}
	c.idleSince = time.Now()
	c.Reused = true
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.MaxIdle {
		p.mu.Unlock()
		p.discard(c)
		return
	}
	p.idle = append(p.idle, c)
	if p.IdleTimeout > 0 {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(p.IdleTimeout, func() { p.expire(c) })
		} else {
			c.idleTimer.Reset(p.IdleTimeout)
		}
	}
	p.mu.Unlock()
}

// expire closes c if it is still idle (its idle timeout fired).
func (p *Pool) expire(c *Conn) {
	p.mu.Lock()
	i := slices.Index(p.idle, c)
	if i < 0 {
		p.mu.Unlock()
		return
	}
	p.idle = slices.Delete(p.idle, i, i+1)
	p.mu.Unlock()
	p.discard(c)
}

// Discard closes a connection that must not be reused.
func (p *Pool) Discard(c *Conn) { p.discard(c) }

func (p *Pool) discard(c *Conn) {
	_ = c.nc.Close()
	p.Open.Add(-1)
}

// Close closes idle connections; busy ones are closed when returned.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		p.discard(c)
	}
}

// Idle returns the number of idle connections.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// alive peeks at an idle connection without blocking: a closed (EOF) or
// chatty connection is not reusable.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	// Control, not Read: Read would refuse at once once the connection's
	// last read deadline has passed, and report a live connection dead.
	_ = rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = n < 0 && (err == unix.EAGAIN || err == unix.EWOULDBLOCK)
	})
	return ok
}
