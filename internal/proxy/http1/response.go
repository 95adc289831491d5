package http1

import (
	"bufio"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// ResponseHead is a parsed status line and header section. Its strings all
// slice one string holding the head, and its storage is reused by the next
// ReadResponseHead.
type ResponseHead struct {
	Status  int    // 100-999
	Reason  string // may be empty
	Minor   int    // 0 or 1
	Headers header.List

	// Framing from the headers; the body's presence also depends on the
	// request, see ResponseBodyKind. A zero Content-Length on a 1xx or 204
	// has been removed.
	ContentLength int64 // -1 when absent
	Chunked       bool
	// KeepAlive is what the version and Connection header allow. A body
	// delimited by close (BodyUntilClose) ends the connection regardless.
	KeepAlive bool

	hb headBuf
}

// Reset empties h, keeping its storage.
func (h *ResponseHead) Reset() {
	h.Status, h.Reason, h.Minor = 0, "", 0
	h.Headers.Reset()
	h.ContentLength, h.Chunked, h.KeepAlive = -1, false, false
	h.hb.reset()
}

// ReadResponseHead reads one response head from br into h, reusing h's
// storage. Interim (1xx) responses, including 100 Continue and 101, are
// returned like any other: the caller forwards them and, except after a 101,
// reads the next head.
//
// It returns io.EOF when the connection ended before any byte (an upstream
// closing an idle keep-alive connection: safe to retry), io.ErrUnexpectedEOF
// inside a head, an *Error for a malformed response (its Status describes
// the fault; a proxy answers 502 downstream) and br's read errors unchanged.
// Zero Limits.MaxHeaderBytes means DefaultMaxResponseHeaderBytes.
func ReadResponseHead(br *bufio.Reader, h *ResponseHead, lim Limits) error {
	h.Reset()
	lim = lim.withDefaults(DefaultMaxResponseHeaderBytes)
	b, err := br.Peek(1)
	if len(b) == 0 {
		return err
	}
	if b[0] != 'H' {
		return errStatusLine
	}
	hb := &h.hb
	if err := hb.gather(br, lim.MaxHeaderBytes, errHeadersTooLarge); err != nil {
		return err
	}
	lineEnd := hb.firstLine()
	minor, status, err := parseStatusLine(hb.buf[:lineEnd])
	if err != nil {
		return err
	}
	if err := hb.parseFields(1, lim.MaxHeaders, errTooManyHeaders); err != nil {
		return err
	}
	var s string
	s, h.Headers = hb.materialize(h.Headers)
	h.Minor, h.Status = minor, status
	if lineEnd > reasonStart {
		h.Reason = s[reasonStart:lineEnd]
	}
	return h.frame()
}

// reasonStart is where the reason phrase starts in "HTTP/1.1 200 OK".
const reasonStart = 13

// parseStatusLine parses HTTP-version SP 3DIGIT SP [reason] (RFC 9112 §4),
// CRLF excluded. The SP after the code may be missing when the reason is
// empty, as many servers send it so.
func parseStatusLine(line []byte) (minor, status int, err error) {
	if len(line) < 12 {
		return 0, 0, errStatusLine
	}
	if minor, err = parseVersion(line[:8]); err != nil {
		return 0, 0, err
	}
	d := line[9:12]
	if line[8] != ' ' || d[0] < '1' || d[0] > '9' || !isDigit(d[1]) || !isDigit(d[2]) {
		return 0, 0, errStatusLine
	}
	status = int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return 0, 0, errStatusLine
		}
		for _, c := range line[13:] {
			if charClass[c]&cValue == 0 {
				return 0, 0, errStatusLine
			}
		}
	}
	return minor, status, nil
}

// frame derives framing and applies the message-level rules in Envoy's
// order: the codec-wide Transfer-Encoding rules, then those for 1xx/204.
func (h *ResponseHead) frame() error {
	var fr framing
	if err := scanHeaders(h.Headers, &fr); err != nil {
		return err
	}
	chunked, err := checkTransferEncoding(&fr, h.Minor)
	if err != nil {
		return err
	}
	if h.Status < 200 || h.Status == 204 {
		// RFC 9110 §8.6, RFC 9112 §6.1: these carry no content.
		if fr.teLines > 0 {
			return errTENotAllowed
		}
		if fr.clIndex >= 0 {
			if fr.contentLength != 0 {
				return errCLNotAllowed
			}
			h.Headers.Del("content-length")
			fr.clIndex, fr.contentLength, fr.clNormalize = -1, -1, false
		}
	}
	if fr.clNormalize {
		normalizeContentLength(&h.Headers, &fr)
	}
	h.ContentLength, h.Chunked = fr.contentLength, chunked
	if h.Minor == 1 {
		h.KeepAlive = !fr.connClose
	} else {
		h.KeepAlive = fr.connKeepAlive && !fr.connClose
	}
	return nil
}
