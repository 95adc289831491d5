// Package http1 is the proxy's HTTP/1.1 codec: it reads request and response
// heads, frames message bodies and writes heads and chunked bodies.
//
// It is built for the data-plane hot path: heads are parsed straight out of
// the connection's bufio.Reader, every string of a head (method, target,
// header names and values) is a slice of one string holding the whole head,
// and all other storage (header list, scratch buffers) is owned by the head
// or body reader and reused, so a steady-state request costs one allocation.
//
// The parser is strict, to close request-smuggling gaps between this proxy
// and whatever is behind it. It follows RFC 9112/9110 and, where those leave
// room, Envoy's HTTP/1 codec. Choices made where the two leave room:
//
//   - Lines must end in CRLF. A bare LF anywhere in a head, a chunk-size line
//     or a trailer section is rejected (400), as llhttp does in strict mode;
//     a bare CR is an invalid character. Accepting bare LF is a classic
//     framing-disagreement source and no client we care about needs it.
//   - Up to 4 empty lines (CRLF) before a request line are skipped
//     (RFC 9112 §2.2); more are a 400. None are skipped before a status line.
//   - The request method is any token (Envoy's Balsa parser with
//     allow_custom_methods); it is case-sensitive and forwarded as is.
//   - Versions other than HTTP/1.0 and HTTP/1.1 of the form HTTP/D.D are 505;
//     anything else in the version slot is 400. Envoy would treat e.g.
//     HTTP/1.2 as 1.0; we refuse it.
//   - "PRI * HTTP/2.0" at the start of a connection is reported as
//     ErrHTTP2Preface with nothing consumed from the reader.
//   - The request-target must not contain CTL, SP or DEL; bytes >= 0x80 are
//     allowed (as llhttp does). Its form must suit the method as in Envoy:
//     authority-form (host:port) for CONNECT, "*" only for OPTIONS, otherwise
//     origin-form ("/...") or absolute-form ("scheme://authority...").
//   - Field names must be tokens (so no whitespace before the colon), obs-fold
//     is rejected, and values may hold HTAB, SP, VCHAR and obs-text only:
//     NUL, CR, LF, other CTLs and DEL are rejected (Envoy rejects only NUL, CR
//     and LF; the RFC grammar excludes all of them).
//   - Transfer-Encoding must be exactly "chunked" (case-insensitive, one field
//     line), else 501, as Envoy. Transfer-Encoding together with
//     Content-Length is 400, Transfer-Encoding in an HTTP/1.0 message is 400
//     (RFC 9112 §6.1), and on CONNECT it is 501 (Envoy).
//   - Content-Length must be digits; repeated lines or a comma list are
//     accepted only when all values are equal, and are then normalised to a
//     single line holding the first value, so what the proxy forwards is
//     unambiguous. CONNECT with a non-zero Content-Length is 400; a zero one
//     is dropped (Envoy). A 1xx or 204 response with Transfer-Encoding, or
//     with a non-zero Content-Length, is an error; a zero one is dropped.
//   - An HTTP/1.1 request in origin-form or "*" form must carry exactly one
//     Host (RFC 9112 §3.2); more than one Host is always rejected. Envoy does
//     the missing-Host check in its connection manager; it is here so no
//     caller can forget it.
//   - Expect: 100-continue and Upgrade are ignored in HTTP/1.0 requests
//     (RFC 9110 §10.1.1, §7.8), and, as Envoy, "Upgrade: h2c" is not treated
//     as an upgrade.
//   - The header size limit counts the raw bytes of the head (request or
//     status line, field lines and their CRLFs), which for practical purposes
//     matches Envoy's count of URL + names + values.
//
// Upgrades and CONNECT: unlike Envoy, which treats every byte after an
// upgrade request's head as opaque payload, RequestBodyKind frames such a
// request by its Content-Length/Transfer-Encoding like any other. The caller
// switches the connection to a byte tunnel only once the upstream has agreed
// (101, or 2xx to CONNECT; see ResponseBodyKind). Bytes the client sent early
// stay in the bufio.Reader for the tunnel, and if the upstream refuses, they
// are parsed as the next request by this proxy instead of reaching the
// upstream unparsed.
package http1

import (
	"errors"
	"math"
)

// Default limits, as Envoy's defaults.
const (
	// DefaultMaxHeaderBytes is Envoy's max_request_headers_kb default (60 KiB).
	DefaultMaxHeaderBytes = 60 << 10
	// DefaultMaxResponseHeaderBytes is Envoy's fixed response head limit (80 KiB),
	// used by ReadResponseHead when Limits.MaxHeaderBytes is zero.
	DefaultMaxResponseHeaderBytes = 80 << 10
	// DefaultMaxHeaders is Envoy's max_headers_count default.
	DefaultMaxHeaders = 100
)

// maxLeadingEmptyLines bounds the empty lines skipped before a request line:
// RFC 9112 §2.2 asks to skip "at least one"; a few cover clients that append
// CRLF after a body, and a bound stops a peer from keeping us busy with them.
const maxLeadingEmptyLines = 4

// maxChunkLineBytes bounds a chunk-size line including its extensions.
const maxChunkLineBytes = 4096

// maxRetainedScratch is the scratch capacity kept across messages; a larger
// buffer (from an unusually large head) is dropped so idle connections don't
// pin it.
const maxRetainedScratch = 32 << 10

// Limits bounds what a head (or trailer section) may hold. Zero fields take
// the defaults.
type Limits struct {
	// MaxHeaderBytes bounds the head's raw size; above it the error is 431.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header field lines; above it, 431.
	MaxHeaders int
}

func (l Limits) withDefaults(defBytes int) Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = defBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// Error is a protocol error found in a message. Status is the HTTP status a
// server answers it with (400, 431, 501, 505); for errors in a response read
// from an upstream the status describes the fault and a proxy answers 502.
// The connection must be closed after any Error, as the framing of whatever
// follows is unknown.
type Error struct {
	Status int    // HTTP status to answer with
	Detail string // Envoy-style response code detail, e.g. "http1.codec_error"
	msg    string
}

func (e *Error) Error() string { return "http1: " + e.msg }

func newErr(status int, detail, msg string) *Error {
	return &Error{Status: status, Detail: detail, msg: msg}
}

// ErrHTTP2Preface is returned by ReadRequestHead when a request starts with
// the HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").
// Nothing of the preface has been consumed from the bufio.Reader, so a caller
// that supports h2c with prior knowledge hands the reader (and connection) to
// its HTTP/2 server, which reads and checks the whole preface; others close
// the connection. It is not an *Error: no HTTP/1 response should be sent.
var ErrHTTP2Preface = errors.New("http1: HTTP/2 connection preface")

// Response code details, as Envoy names them.
const (
	detailCodecError      = "http1.codec_error"
	detailInvalidChars    = "http1.invalid_characters"
	detailHeadersTooLarge = "http1.headers_too_large"
	detailTooManyHeaders  = "http1.too_many_headers"
	detailInvalidURL      = "http1.invalid_url"
	detailInvalidTE       = "http1.invalid_transfer_encoding"
	detailChunkedCL       = "http1.content_length_and_chunked_not_allowed"
	detailBodyDisallowed  = "http1.body_disallowed"
	detailTENotAllowed    = "http1.transfer_encoding_not_allowed"
	detailCLNotAllowed    = "http1.content_length_not_allowed"
	detailMissingHost     = "missing_host_header"
	detailVersionNotSupp  = "http1.version_not_supported"
)

// The errors are preallocated so rejecting garbage costs no allocation.
var (
	errEmptyLines       = newErr(400, detailCodecError, "too many empty lines before request line")
	errBareLF           = newErr(400, detailCodecError, "line not terminated by CRLF")
	errRequestLine      = newErr(400, detailCodecError, "invalid request line")
	errMethod           = newErr(400, detailCodecError, "invalid method")
	errTarget           = newErr(400, detailCodecError, "invalid request-target")
	errVersion          = newErr(400, detailCodecError, "invalid HTTP version")
	errVersionNotSupp   = newErr(505, detailVersionNotSupp, "HTTP version not supported")
	errStatusLine       = newErr(400, detailCodecError, "invalid status line")
	errInvalidURL       = newErr(400, detailInvalidURL, "request-target form not valid for method")
	errObsFold          = newErr(400, detailCodecError, "obsolete line folding")
	errFieldName        = newErr(400, detailCodecError, "invalid header name")
	errSpaceBeforeColon = newErr(400, detailCodecError, "whitespace before colon in header")
	errFieldValue       = newErr(400, detailInvalidChars, "header value contains invalid characters")
	errHeadersTooLarge  = newErr(431, detailHeadersTooLarge, "headers size exceeds limit")
	errTooManyHeaders   = newErr(431, detailTooManyHeaders, "header count exceeds limit")
	errTrailersTooLarge = newErr(431, detailHeadersTooLarge, "trailers size exceeds limit")
	errTooManyTrailers  = newErr(431, detailTooManyHeaders, "trailer count exceeds limit")
	errContentLength    = newErr(400, detailCodecError, "invalid content-length")
	errCLConflict       = newErr(400, detailCodecError, "conflicting content-length values")
	errTEHTTP10         = newErr(400, detailInvalidTE, "transfer-encoding in HTTP/1.0 message")
	errCLAndTE          = newErr(400, detailChunkedCL, "both content-length and transfer-encoding are set")
	errUnsupportedTE    = newErr(501, detailInvalidTE, "unsupported transfer encoding")
	errConnectBody      = newErr(400, detailBodyDisallowed, "content-length on CONNECT")
	errMissingHost      = newErr(400, detailMissingHost, "missing host header")
	errMultipleHost     = newErr(400, detailCodecError, "multiple host headers")
	errTENotAllowed     = newErr(400, detailTENotAllowed, "transfer-encoding in 1xx or 204 response")
	errCLNotAllowed     = newErr(400, detailCLNotAllowed, "content-length in 1xx or 204 response")
	errChunkSize        = newErr(400, detailCodecError, "invalid chunk size")
	errChunkOverflow    = newErr(400, detailCodecError, "chunk size overflow")
	errChunkExt         = newErr(400, detailCodecError, "invalid chunk extension")
	errChunkLineTooLong = newErr(400, detailCodecError, "chunk size line too long")
	errChunkCRLF        = newErr(400, detailCodecError, "chunk data not followed by CRLF")
)

// Character classes (RFC 9110 §5.6.2, §5.5, RFC 9112 §3.2).
const (
	cToken  = 1 << iota // tchar
	cValue              // field-value byte: HTAB, SP, VCHAR, obs-text
	cTarget             // request-target byte: VCHAR, obs-text
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c == '\t':
			t[c] |= cValue
		case c < 0x20 || c == 0x7f:
		case c == ' ':
			t[c] |= cValue
		default:
			t[c] |= cValue | cTarget
		}
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] |= cToken
	}
	for c := '0'; c <= '9'; c++ {
		t[c] |= cToken
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= cToken
		t[c-'a'+'A'] |= cToken
	}
	return t
}()

// nameByte maps a tchar to its lower-case form and anything else to 0, so
// field names are checked and lower-cased in one lookup per byte.
var nameByte = func() (t [256]byte) {
	for c := 0; c < 256; c++ {
		if charClass[c]&cToken != 0 {
			t[c] = byte(c)
			if 'A' <= c && c <= 'Z' {
				t[c] = byte(c + 'a' - 'A')
			}
		}
	}
	return t
}()

// maxInt64Div10 guards decimal accumulation against overflow.
const maxInt64Div10 = math.MaxInt64 / 10
