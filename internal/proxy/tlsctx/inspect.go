package tlsctx

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// InspectorTypeURL is Envoy's tls_inspector listener filter.
const InspectorTypeURL = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

// Hello is what the tls_inspector learns from a connection's first bytes.
type Hello struct {
	// TLS reports a TLS ClientHello ("tls" transport protocol); false is
	// "raw_buffer".
	TLS  bool
	SNI  string
	ALPN []string
}

// maxHello bounds how much the inspector reads (Envoy: 64 KiB).
const maxHello = 64 << 10

var errSeen = errors.New("client hello read")

// Inspect reads the start of nc and reports whether it is a TLS
// ClientHello, with its server name and ALPN. seen are the bytes read,
// to be replayed before the socket's. A first byte other than a TLS
// handshake record settles "raw_buffer" at once.
func Inspect(nc net.Conn) (h Hello, seen []byte, err error) {
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		return h, nil, err
	}
	if first[0] != 0x16 {
		return h, first[:], nil
	}
	rec := &recorder{r: nc, buf: bytes.NewBuffer(make([]byte, 0, 512))}
	rec.buf.WriteByte(first[0])
	rec.pending = first[:]
	// crypto/tls parses the ClientHello for us; the callback stops the
	// handshake before anything is written.
	srv := tls.Server(rec, &tls.Config{GetConfigForClient: func(ch *tls.ClientHelloInfo) (*tls.Config, error) {
		h.TLS, h.SNI = true, ch.ServerName
		h.ALPN = append([]string(nil), ch.SupportedProtos...)
		return nil, errSeen
	}})
	herr := srv.Handshake()
	if h.TLS {
		return h, rec.buf.Bytes(), nil
	}
	var ne net.Error
	if errors.As(herr, &ne) && ne.Timeout() {
		return h, rec.buf.Bytes(), herr
	}
	if errors.Is(herr, io.EOF) || errors.Is(herr, io.ErrUnexpectedEOF) {
		return h, rec.buf.Bytes(), herr
	}
	// Not a parsable ClientHello: treat as raw bytes, as Envoy does.
	return Hello{}, rec.buf.Bytes(), nil
}

// recorder is a read-only conn that records what the TLS parser reads.
type recorder struct {
	r       net.Conn
	buf     *bytes.Buffer
	pending []byte
}

func (c *recorder) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.buf.Len() >= maxHello {
		return 0, errors.New("tls_inspector: client hello too large")
	}
	n, err := c.r.Read(p[:min(len(p), maxHello-c.buf.Len())])
	c.buf.Write(p[:n])
	return n, err
}

func (c *recorder) Write([]byte) (int, error)         { return 0, errors.New("tls_inspector: read only") }
func (c *recorder) Close() error                      { return nil }
func (c *recorder) LocalAddr() net.Addr               { return c.r.LocalAddr() }
func (c *recorder) RemoteAddr() net.Addr              { return c.r.RemoteAddr() }
func (c *recorder) SetDeadline(t time.Time) error     { return nil }
func (c *recorder) SetReadDeadline(t time.Time) error { return nil }
func (c *recorder) SetWriteDeadline(time.Time) error  { return nil }
