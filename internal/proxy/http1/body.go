package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// BodyKind is how a message body is delimited (RFC 9112 §6.3).
type BodyKind int

const (
	BodyNone       BodyKind = iota // no body
	BodyLength                     // Content-Length bytes
	BodyChunked                    // chunked transfer coding
	BodyUntilClose                 // until the connection closes (responses only)
	// BodyTunnel: no body; the connection has become a two-way byte stream
	// (101 Switching Protocols, or 2xx to CONNECT). Reading it as a body
	// yields the stream until close.
	BodyTunnel
)

func (k BodyKind) String() string {
	switch k {
	case BodyNone:
		return "none"
	case BodyLength:
		return "length"
	case BodyChunked:
		return "chunked"
	case BodyUntilClose:
		return "until-close"
	case BodyTunnel:
		return "tunnel"
	}
	return "invalid"
}

// RequestBodyKind returns how h's body is delimited and, for BodyLength, its
// length. A request without Content-Length or chunked coding has no body
// (RFC 9112 §6.3); CONNECT never has one. Upgrade requests are framed like
// any other: a tunnel starts only once the upstream agrees, see
// ResponseBodyKind.
func RequestBodyKind(h *RequestHead) (BodyKind, int64) {
	switch {
	case h.Chunked:
		return BodyChunked, -1
	case h.ContentLength > 0:
		return BodyLength, h.ContentLength
	}
	return BodyNone, 0
}

// ResponseBodyKind returns how the body of h, a response to a request with
// requestMethod, is delimited and, for BodyLength, its length
// (RFC 9112 §6.3). A 101 yields BodyTunnel: the caller switches both
// connections to a byte tunnel, as for a 2xx to CONNECT. BodyUntilClose
// means the upstream connection cannot be reused.
func ResponseBodyKind(h *ResponseHead, requestMethod string) (BodyKind, int64) {
	s := h.Status
	switch {
	case s == 101:
		return BodyTunnel, -1
	case s < 200:
		return BodyNone, 0
	case requestMethod == "CONNECT" && s < 300:
		return BodyTunnel, -1
	case requestMethod == "HEAD" || s == 204 || s == 304:
		return BodyNone, 0
	case h.Chunked:
		return BodyChunked, -1
	case h.ContentLength == 0:
		return BodyNone, 0
	case h.ContentLength > 0:
		return BodyLength, h.ContentLength
	}
	return BodyUntilClose, -1
}

// Chunked decoding states.
const (
	stSize    uint8 = iota // expecting a chunk-size line
	stData                 // inside chunk data, n bytes left
	stCRLF                 // expecting the CRLF after chunk data
	stTrailer              // expecting the trailer section
	stDone
)

// BodyReader reads one message body from a bufio.Reader. It never reads past
// the body's end, so a pipelined next message stays in the reader. It is
// reused with Reset without allocating; a chunked body with a non-empty
// trailer section costs one string allocation.
//
// Read returns io.EOF at the end of the body (possibly together with the
// last bytes), io.ErrUnexpectedEOF if the connection ends inside it, an
// *Error (400, or 431 for trailers over Limits) for malformed chunked
// framing, and the reader's errors unchanged. Errors are sticky.
type BodyReader struct {
	// Trailers holds a chunked body's trailer fields (lower-case names) once
	// Read has returned io.EOF. They are not checked against fields that are
	// not allowed in trailers; that is the caller's policy.
	Trailers header.List
	// Limits bounds the trailer section (zero: defaults).
	Limits Limits

	br    *bufio.Reader
	kind  BodyKind
	n     int64 // bytes left: of the body (BodyLength) or of the chunk
	state uint8
	err   error
	tb    headBuf // chunk-size lines longer than br's buffer, trailers
}

var errNoReader = errors.New("http1: BodyReader used before Reset")

// Reset makes b read a body of kind from br; length is the Content-Length
// for BodyLength and ignored otherwise.
func (b *BodyReader) Reset(br *bufio.Reader, kind BodyKind, length int64) {
	b.Trailers.Reset()
	b.tb.reset()
	b.br, b.kind, b.n, b.state, b.err = br, kind, 0, stSize, nil
	switch kind {
	case BodyNone:
		b.err = io.EOF
	case BodyLength:
		b.n = length
		if length <= 0 {
			b.err = io.EOF
		}
	}
	if b.err == nil && br == nil {
		b.err = errNoReader
	}
}

// Done reports whether the whole body has been read.
func (b *BodyReader) Done() bool { return b.err == io.EOF }

// Remaining returns the bytes left of a BodyLength body, 0 once any body is
// done, and -1 when unknown (chunked, until close).
func (b *BodyReader) Remaining() int64 {
	switch {
	case b.err == io.EOF:
		return 0
	case b.kind == BodyLength:
		return b.n
	}
	return -1
}

// Read reads body bytes into p.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.kind {
	case BodyLength:
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		m, err := b.br.Read(p)
		b.n -= int64(m)
		if b.n == 0 {
			b.err = io.EOF
			return m, io.EOF
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
		}
		return m, err
	case BodyChunked:
		return b.readChunked(p)
	default: // until close, tunnel
		m, err := b.br.Read(p)
		if err != nil {
			b.err = err
		}
		return m, err
	}
}

// readChunked decodes as much as it can into p, blocking only while p is
// still empty, so a streamed chunk is passed on as soon as it has arrived.
func (b *BodyReader) readChunked(p []byte) (int, error) {
	m := 0
	for {
		switch b.state {
		case stSize:
			if m > 0 && !b.lineBuffered() {
				return m, nil
			}
			size, err := b.readChunkSize()
			if err != nil {
				return b.fail(m, err)
			}
			if size == 0 {
				b.state = stTrailer
			} else {
				b.n, b.state = size, stData
			}
		case stData:
			if m == len(p) || (m > 0 && b.br.Buffered() == 0) {
				return m, nil
			}
			q := p[m:]
			if int64(len(q)) > b.n {
				q = q[:b.n]
			}
			k, err := b.br.Read(q)
			m += k
			b.n -= int64(k)
			if b.n == 0 {
				b.state = stCRLF
			}
			if err != nil {
				return b.fail(m, err)
			}
		case stCRLF:
			if m > 0 && b.br.Buffered() < 2 {
				return m, nil
			}
			c, err := b.br.Peek(2)
			if len(c) < 2 {
				return b.fail(m, err)
			}
			if c[0] != '\r' || c[1] != '\n' {
				return b.fail(m, errChunkCRLF)
			}
			b.br.Discard(2)
			b.state = stSize
		case stTrailer:
			// With data in hand, finish only if the (usually empty) trailer
			// section has arrived; else report the data first.
			if m > 0 && !b.trailersBuffered() {
				return m, nil
			}
			if err := b.readTrailers(); err != nil {
				return b.fail(m, err)
			}
			b.state, b.err = stDone, io.EOF
			return m, io.EOF
		default:
			return m, b.err
		}
	}
}

func (b *BodyReader) fail(m int, err error) (int, error) {
	if err == io.EOF || err == nil {
		err = io.ErrUnexpectedEOF
	}
	b.err = err
	return m, err
}

// buffered returns br's buffered bytes without blocking.
func (b *BodyReader) buffered() []byte {
	p, _ := b.br.Peek(b.br.Buffered())
	return p
}

func (b *BodyReader) lineBuffered() bool {
	return bytes.IndexByte(b.buffered(), '\n') >= 0
}

func (b *BodyReader) trailersBuffered() bool {
	p := b.buffered()
	return bytes.HasPrefix(p, crlf) || bytes.Contains(p, crlfcrlf)
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// readChunkSize reads a chunk-size line (RFC 9112 §7.1):
// 1*HEXDIG [ BWS ";" extensions ] CRLF. Extensions are checked for
// characters (no CTL other than HTAB, notably no lone CR) and ignored.
func (b *BodyReader) readChunkSize() (int64, error) {
	line, err := b.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Longer than br's buffer: finish it in the scratch buffer.
		b.tb.buf = append(b.tb.buf[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = b.br.ReadSlice('\n')
			if len(b.tb.buf)+len(line) > maxChunkLineBytes {
				return 0, errChunkLineTooLong
			}
			b.tb.buf = append(b.tb.buf, line...)
		}
		line = b.tb.buf
	}
	if err != nil {
		return 0, err
	}
	if len(line) > maxChunkLineBytes {
		return 0, errChunkLineTooLong
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, errBareLF
	}
	return parseChunkSize(line[:len(line)-2])
}

func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if n > math.MaxInt64>>4 {
			return 0, errChunkOverflow
		}
		n = n<<4 | int64(d)
	}
	if i == 0 {
		return 0, errChunkSize
	}
	ext := line[i:]
	j := 0
	for j < len(ext) && (ext[j] == ' ' || ext[j] == '\t') {
		j++
	}
	if j == len(ext) {
		if j > 0 {
			// BWS is only allowed before ";".
			return 0, errChunkSize
		}
		return n, nil
	}
	if ext[j] != ';' {
		return 0, errChunkSize
	}
	for _, c := range ext[j:] {
		if charClass[c]&cValue == 0 {
			return 0, errChunkExt
		}
	}
	return n, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// readTrailers reads the trailer section (RFC 9112 §7.1.2) with the header
// rules and limits.
func (b *BodyReader) readTrailers() error {
	b.tb.reset()
	lim := b.Limits.withDefaults(DefaultMaxHeaderBytes)
	if err := b.tb.gather(b.br, lim.MaxHeaderBytes, errTrailersTooLarge); err != nil {
		return err
	}
	if err := b.tb.parseFields(0, lim.MaxHeaders, errTooManyTrailers); err != nil {
		return err
	}
	if len(b.tb.spans) > 0 {
		_, b.Trailers = b.tb.materialize(b.Trailers)
	}
	return nil
}
