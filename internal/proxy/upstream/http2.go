package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

// H2 is an HTTP/2 cleartext (h2c) client of one upstream host. Streams
// are multiplexed over its connections by golang.org/x/net/http2.
type H2 struct {
	Addr string
	t    *http2.Transport
}

// NewH2 returns an HTTP/2 client for addr: h2c, or HTTP/2 over TLS with
// tc (prior knowledge either way, as Envoy's explicit HTTP/2 upstreams).
func NewH2(addr string, connectTimeout time.Duration, tc *tlsctx.Client) *H2 {
	return &H2{
		Addr: addr,
		t: &http2.Transport{
			AllowHTTP: true,
			// A proxy passes content codings through: without this the
			// transport would ask for gzip on requests that did not, and
			// decompress the answer.
			DisableCompression: true,
			DialTLSContext: func(ctx context.Context, _, a string, _ *tls.Config) (net.Conn, error) {
				return Dial(ctx, a, connectTimeout, tc, nil)
			},
			// Detect dead connections: ping after 30 s without frames.
			ReadIdleTimeout: 30 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}
}

// SetIdleTimeout closes connections without streams for that long (0:
// never). Call before the first request.
func (c *H2) SetIdleTimeout(d time.Duration) { c.t.IdleConnTimeout = d }

// RoundTrip sends one request.
func (c *H2) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.t.RoundTrip(req)
}

// Close closes idle connections.
func (c *H2) Close() { c.t.CloseIdleConnections() }
