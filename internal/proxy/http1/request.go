package http1

import (
	"bufio"
	"bytes"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// RequestHead is a parsed request line and header section, with the framing
// and connection facts derived from them. Its strings all slice one string
// holding the head, and its storage is reused by the next ReadRequestHead.
type RequestHead struct {
	Method string // a token, case-sensitive
	// Target is the request-target exactly as sent: origin-form "/p?q",
	// absolute-form "http://h/p", authority-form "h:443" (CONNECT) or "*"
	// (OPTIONS). For absolute-form the router must take the authority from
	// the target, not from Host (RFC 9112 §3.2.2).
	Target  string
	Minor   int         // 0 or 1: HTTP/1.0 or HTTP/1.1
	Headers header.List // lower-case names, OWS-trimmed values, wire order, duplicates kept

	// Framing, derived from the headers (RFC 9112 §6). A repeated or listed
	// Content-Length has been reduced to one line; a zero Content-Length on
	// CONNECT has been removed.
	ContentLength int64 // -1 when absent
	Chunked       bool  // Transfer-Encoding: chunked
	// KeepAlive: HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
	// "Connection: keep-alive".
	KeepAlive bool
	Expect100 bool // HTTP/1.1 "Expect: 100-continue"
	// Upgrade: an HTTP/1.1 request with an Upgrade field and the "upgrade"
	// connection option (WebSocket etc.), other than h2c.
	Upgrade bool

	hb headBuf
}

// Reset empties h, keeping its storage.
func (h *RequestHead) Reset() {
	h.Method, h.Target, h.Minor = "", "", 0
	h.Headers.Reset()
	h.ContentLength = -1
	h.Chunked, h.KeepAlive, h.Expect100, h.Upgrade = false, false, false, false
	h.hb.reset()
}

// h2PrefaceLine is the first line of the HTTP/2 connection preface.
const h2PrefaceLine = "PRI * HTTP/2.0\r\n"

// ReadRequestHead reads one request head from br into h, reusing h's
// storage. The body, if any, is left in br (see RequestBodyKind).
//
// It returns io.EOF when the connection ended cleanly before any byte of a
// request (the end of a keep-alive connection), io.ErrUnexpectedEOF when it
// ended inside a head, ErrHTTP2Preface for an HTTP/2 prior-knowledge client,
// an *Error for a malformed or refused request (answer e.Status, then close),
// and br's own read errors unchanged. After any error but ErrHTTP2Preface
// the connection is not usable for further requests.
func ReadRequestHead(br *bufio.Reader, h *RequestHead, lim Limits) error {
	h.Reset()
	lim = lim.withDefaults(DefaultMaxHeaderBytes)
	c, err := skipEmptyLines(br)
	if err != nil {
		return err
	}
	// Reject a non-HTTP peer (e.g. a TLS ClientHello) at its first byte
	// rather than after buffering up to the head limit.
	if charClass[c]&cToken == 0 {
		return errMethod
	}
	// Every valid request is at least 16 bytes long, so this Peek does not
	// wait for bytes a valid client would not send.
	if c == 'P' {
		if p, _ := br.Peek(len(h2PrefaceLine)); string(p) == h2PrefaceLine {
			return ErrHTTP2Preface
		}
	}
	hb := &h.hb
	if err := hb.gather(br, lim.MaxHeaderBytes, errHeadersTooLarge); err != nil {
		return err
	}
	lineEnd := hb.firstLine()
	rl, err := parseRequestLine(hb.buf[:lineEnd])
	if err != nil {
		return err
	}
	if err := hb.parseFields(1, lim.MaxHeaders, errTooManyHeaders); err != nil {
		return err
	}
	var s string
	s, h.Headers = hb.materialize(h.Headers)
	h.Method, h.Target, h.Minor = s[:rl.me], s[rl.ts:rl.te], rl.minor
	return h.frame(rl.form)
}

// skipEmptyLines skips the empty lines RFC 9112 §2.2 lets a server ignore
// and returns the first byte of the request line, unread.
func skipEmptyLines(br *bufio.Reader) (byte, error) {
	for i := 0; ; i++ {
		b, err := br.Peek(1)
		if len(b) == 0 {
			return 0, err
		}
		if b[0] != '\r' && b[0] != '\n' {
			return b[0], nil
		}
		if i == maxLeadingEmptyLines {
			return 0, errEmptyLines
		}
		b, err = br.Peek(2)
		if len(b) < 2 {
			// A lone CR before EOF is still no request.
			return 0, err
		}
		if b[0] != '\r' || b[1] != '\n' {
			return 0, errBareLF
		}
		br.Discard(2)
	}
}

type targetForm uint8

const (
	formOrigin targetForm = iota
	formAbsolute
	formAuthority
	formAsterisk
)

// requestLine holds offsets into the head: the method is [0:me].
type requestLine struct {
	me, ts, te int
	minor      int
	form       targetForm
}

// parseRequestLine parses method SP request-target SP HTTP-version
// (RFC 9112 §3), CRLF excluded.
func parseRequestLine(line []byte) (requestLine, error) {
	var rl requestLine
	i := 0
	for i < len(line) && charClass[line[i]]&cToken != 0 {
		i++
	}
	if i == 0 {
		return rl, errMethod
	}
	if i == len(line) || line[i] != ' ' {
		return rl, errRequestLine
	}
	rl.me = i
	i++
	rl.ts = i
	for i < len(line) && charClass[line[i]]&cTarget != 0 {
		i++
	}
	if i == len(line) {
		// No version: HTTP/0.9, or nothing at all.
		return rl, errVersion
	}
	if i == rl.ts || line[i] != ' ' {
		return rl, errTarget
	}
	rl.te = i
	minor, err := parseVersion(line[i+1:])
	if err != nil {
		return rl, err
	}
	rl.minor = minor
	form, ok := formOf(line[:rl.me], line[rl.ts:rl.te])
	if !ok {
		return rl, errInvalidURL
	}
	rl.form = form
	return rl, nil
}

// formOf checks that target's form suits method, as Envoy does.
func formOf(method, target []byte) (targetForm, bool) {
	switch {
	case string(method) == "CONNECT":
		return formAuthority, isAuthorityForm(target)
	case target[0] == '/':
		return formOrigin, true
	case len(target) == 1 && target[0] == '*':
		return formAsterisk, string(method) == "OPTIONS"
	}
	return formAbsolute, isAbsoluteForm(target)
}

// isAbsoluteForm reports whether t is scheme "://" authority ... with a
// non-empty authority.
func isAbsoluteForm(t []byte) bool {
	if !isAlpha(t[0]) {
		return false
	}
	i := 1
	for i < len(t) && (isAlpha(t[i]) || isDigit(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.') {
		i++
	}
	if len(t)-i < 4 || string(t[i:i+3]) != "://" {
		return false
	}
	switch t[i+3] {
	case '/', '?', '#', '@':
		return false
	}
	return true
}

// isAuthorityForm reports whether t is host ":" port (RFC 9112 §3.2.3),
// host being a reg-name, IPv4 or bracketed IP literal.
func isAuthorityForm(t []byte) bool {
	c := bytes.LastIndexByte(t, ':')
	if c <= 0 || c == len(t)-1 || len(t)-c-1 > 5 {
		return false
	}
	for _, d := range t[c+1:] {
		if !isDigit(d) {
			return false
		}
	}
	host := t[:c]
	if host[0] == '[' {
		if len(host) < 3 || host[len(host)-1] != ']' {
			return false
		}
		host = host[1 : len(host)-1]
		for _, d := range host {
			if !(isDigit(d) || isAlpha(d) || d == ':' || d == '.' || d == '%') {
				return false
			}
		}
		return true
	}
	for _, d := range host {
		switch d {
		case '/', '?', '#', '@', '[', ']', ':':
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// frame derives framing and connection facts from the headers and applies
// the message-level rules, in Envoy's order.
func (h *RequestHead) frame(form targetForm) error {
	var fr framing
	if err := scanHeaders(h.Headers, &fr); err != nil {
		return err
	}
	connect := h.Method == "CONNECT"
	if connect && fr.clIndex >= 0 {
		// RFC 9110 §9.3.6: CONNECT content has no defined semantics.
		if fr.contentLength != 0 {
			return errConnectBody
		}
		h.Headers.Del("content-length")
		fr.clIndex, fr.contentLength, fr.clNormalize = -1, -1, false
	}
	chunked, err := checkTransferEncoding(&fr, h.Minor)
	if err != nil {
		return err
	}
	if connect && chunked {
		return errUnsupportedTE
	}
	if fr.clNormalize {
		normalizeContentLength(&h.Headers, &fr)
	}
	if fr.hostLines > 1 {
		return errMultipleHost
	}
	if fr.hostLines == 0 && h.Minor == 1 && (form == formOrigin || form == formAsterisk) {
		return errMissingHost
	}
	h.ContentLength, h.Chunked = fr.contentLength, chunked
	if h.Minor == 1 {
		h.KeepAlive = !fr.connClose
		h.Expect100 = fr.expect100
		h.Upgrade = fr.upgrade && fr.connUpgrade && !fr.upgradeH2C
	} else {
		h.KeepAlive = fr.connKeepAlive && !fr.connClose
	}
	return nil
}
