package http1

import (
	"bufio"
	"io"
	"strconv"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// AppendRequestHead appends a request head (request line, header lines,
// empty line) to dst. minor 0 writes HTTP/1.0, anything else HTTP/1.1.
// Names are written as stored (lower-case, as Envoy does by default).
// Nothing is validated: method, target and fields must come from this
// parser or be trusted not to hold CR, LF or other control characters.
func AppendRequestHead(dst []byte, method, target string, minor int, headers header.List) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, target...)
	if minor == 0 {
		dst = append(dst, " HTTP/1.0\r\n"...)
	} else {
		dst = append(dst, " HTTP/1.1\r\n"...)
	}
	return appendFields(dst, headers)
}

// AppendResponseHead appends an HTTP/1.1 response head to dst. An empty
// reason is replaced by the status's standard reason phrase (which may be
// empty for an unknown status). The same trust rules as for
// AppendRequestHead apply.
func AppendResponseHead(dst []byte, status int, reason string, headers header.List) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	if reason == "" {
		reason = StatusText(status)
	}
	dst = append(dst, reason...)
	dst = append(dst, "\r\n"...)
	return appendFields(dst, headers)
}

func appendFields(dst []byte, headers header.List) []byte {
	for _, f := range headers {
		dst = append(dst, f.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// StatusText returns the standard reason phrase of code, or "".
func StatusText(code int) string {
	switch code {
	case 100:
		return "Continue"
	case 101:
		return "Switching Protocols"
	case 102:
		return "Processing"
	case 103:
		return "Early Hints"
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	case 203:
		return "Non-Authoritative Information"
	case 204:
		return "No Content"
	case 205:
		return "Reset Content"
	case 206:
		return "Partial Content"
	case 207:
		return "Multi-Status"
	case 208:
		return "Already Reported"
	case 226:
		return "IM Used"
	case 300:
		return "Multiple Choices"
	case 301:
		return "Moved Permanently"
	case 302:
		return "Found"
	case 303:
		return "See Other"
	case 304:
		return "Not Modified"
	case 305:
		return "Use Proxy"
	case 307:
		return "Temporary Redirect"
	case 308:
		return "Permanent Redirect"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 402:
		return "Payment Required"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 406:
		return "Not Acceptable"
	case 407:
		return "Proxy Authentication Required"
	case 408:
		return "Request Timeout"
	case 409:
		return "Conflict"
	case 410:
		return "Gone"
	case 411:
		return "Length Required"
	case 412:
		return "Precondition Failed"
	case 413:
		return "Payload Too Large"
	case 414:
		return "URI Too Long"
	case 415:
		return "Unsupported Media Type"
	case 416:
		return "Range Not Satisfiable"
	case 417:
		return "Expectation Failed"
	case 421:
		return "Misdirected Request"
	case 422:
		return "Unprocessable Entity"
	case 423:
		return "Locked"
	case 424:
		return "Failed Dependency"
	case 425:
		return "Too Early"
	case 426:
		return "Upgrade Required"
	case 428:
		return "Precondition Required"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 451:
		return "Unavailable For Legal Reasons"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	case 506:
		return "Variant Also Negotiates"
	case 507:
		return "Insufficient Storage"
	case 508:
		return "Loop Detected"
	case 510:
		return "Not Extended"
	case 511:
		return "Network Authentication Required"
	}
	return ""
}

// ChunkedWriter writes a body in the chunked transfer coding: each Write is
// one chunk, Close writes the last chunk and trailer section. It makes three
// small writes per chunk, so w should be buffered (a *bufio.Writer).
// Reset makes it reusable without allocating.
type ChunkedWriter struct {
	w       io.Writer
	scratch []byte
}

// NewChunkedWriter returns a ChunkedWriter writing to w.
func NewChunkedWriter(w io.Writer) *ChunkedWriter {
	return &ChunkedWriter{w: w}
}

// Reset makes c write a new body to w.
func (c *ChunkedWriter) Reset(w io.Writer) { c.w = w }

// Write writes p as one chunk. An empty p writes nothing (a zero-size chunk
// would end the body).
func (c *ChunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.scratch = strconv.AppendUint(c.scratch[:0], uint64(len(p)), 16)
	c.scratch = append(c.scratch, "\r\n"...)
	if _, err := c.w.Write(c.scratch); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	if _, err := c.w.Write(crlf); err != nil {
		return n, err
	}
	return n, nil
}

// Close ends the body: last chunk, trailers (names as stored), empty line.
// It does not flush or close the underlying writer.
func (c *ChunkedWriter) Close(trailers header.List) error {
	c.scratch = append(c.scratch[:0], "0\r\n"...)
	c.scratch = appendFields(c.scratch, trailers)
	_, err := c.w.Write(c.scratch)
	return err
}

// Flush flushes the underlying writer if it can be flushed.
func (c *ChunkedWriter) Flush() error {
	if f, ok := c.w.(flusher); ok {
		return f.Flush()
	}
	return nil
}

type flusher interface{ Flush() error }

// CopyBody copies from src to dst through buf until src returns io.EOF, and
// returns the bytes written; a clean end returns a nil error. It does not
// allocate. When dst can be flushed (a *bufio.Writer, a ChunkedWriter over
// one), it is flushed whenever src has nothing more at hand, i.e. before
// CopyBody would block reading, so streamed bodies are not held back; it is
// not flushed at the end, where the caller usually writes more (a last
// chunk, the next message) and flushes. buf must not be empty.
func CopyBody(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	if len(buf) == 0 {
		return 0, io.ErrShortBuffer
	}
	fl, _ := dst.(flusher)
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			written += int64(w)
			if werr != nil {
				return written, werr
			}
			if w != n {
				return written, io.ErrShortWrite
			}
			if fl != nil && rerr == nil && !readable(src) {
				if err := fl.Flush(); err != nil {
					return written, err
				}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
	}
}

// readable reports whether r can return data without blocking, as far as
// can be told.
func readable(r io.Reader) bool {
	switch r := r.(type) {
	case *BodyReader:
		return r.readable()
	case *bufio.Reader:
		return r.Buffered() > 0
	}
	return false
}

func (b *BodyReader) readable() bool {
	switch {
	case b.err != nil:
		return true // the next Read returns at once
	case b.kind == BodyChunked:
		// Outside chunk data the next Read may wait for a size line; a
		// needless flush is cheaper than a stalled stream.
		return b.state == stData && b.br.Buffered() > 0
	}
	return b.br.Buffered() > 0
}
