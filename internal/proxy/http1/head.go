package http1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

// headBuf holds one head or trailer section. The section is copied out of
// the bufio.Reader in one piece when br holds it whole (the common case),
// else accumulated as it arrives, so it may be larger than br's buffer.
// Header names are lower-cased in place and field boundaries remembered, so
// that one string conversion at the end yields every name and value by
// slicing.
type headBuf struct {
	buf   []byte
	lf    []int // offsets of the LF ending each line of buf
	spans []span
}

// span locates one field line's name and value in headBuf.buf.
type span struct{ ns, ne, vs, ve int }

func (hb *headBuf) reset() {
	if cap(hb.buf) > maxRetainedScratch {
		hb.buf = nil
	}
	hb.buf = hb.buf[:0]
	hb.lf = hb.lf[:0]
	hb.spans = hb.spans[:0]
}

// gather moves one section, through the empty line that ends it, from br
// into hb.buf; hb.buf may not exceed limit bytes. Every line is checked to end
// in CRLF as soon as it is complete, so a bare LF is answered at once rather
// than after waiting for a CRLFCRLF that may never come.
func (hb *headBuf) gather(br *bufio.Reader, limit int, tooLarge *Error) error {
	hb.buf, hb.lf = hb.buf[:0], hb.lf[:0]
	ls, from := 0, 0 // current line start; where to resume the search for LF
	for {
		p, _ := br.Peek(br.Buffered())
		end, err := hb.scanSection(p, &ls, &from)
		if err != nil {
			return err
		}
		if end > 0 {
			if end > limit {
				return tooLarge
			}
			hb.buf = append(hb.buf, p[:end]...)
			br.Discard(end)
			return nil
		}
		if len(p) > limit {
			return tooLarge
		}
		if len(p) >= br.Size() {
			break // longer than br's buffer
		}
		if _, err := br.Peek(len(p) + 1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	// Slow path: accumulate in hb.buf. Offsets stay valid as hb.buf starts
	// with what was buffered.
	p, _ := br.Peek(br.Buffered())
	hb.buf = append(hb.buf, p...)
	br.Discard(len(p))
	for {
		frag, rerr := br.ReadSlice('\n')
		if len(hb.buf)+len(frag) > limit {
			return tooLarge
		}
		hb.buf = append(hb.buf, frag...)
		end, err := hb.scanSection(hb.buf, &ls, &from)
		if err != nil {
			return err
		}
		if end > 0 {
			return nil // end == len(hb.buf): ReadSlice stops at each LF
		}
		switch rerr {
		case nil, bufio.ErrBufferFull:
		case io.EOF:
			return io.ErrUnexpectedEOF
		default:
			return rerr
		}
	}
}

// scanSection looks in p for the empty line ending a section, checking that
// each line ends in CRLF and recording the line ends in hb.lf. *ls is the
// start of the current line and *from the offset up to which p holds no LF
// after it; both carry over between calls as p grows, so slowly arriving
// bytes are scanned once. It returns the section's length, or 0 when it is
// not complete yet.
func (hb *headBuf) scanSection(p []byte, ls, from *int) (int, error) {
	for {
		j := bytes.IndexByte(p[*from:], '\n')
		if j < 0 {
			*from = len(p)
			return 0, nil
		}
		j += *from
		if j == *ls || p[j-1] != '\r' {
			return 0, errBareLF
		}
		hb.lf = append(hb.lf, j)
		if j == *ls+1 {
			return j + 1, nil
		}
		*ls, *from = j+1, j+1
	}
}

// parseFields parses the field lines of hb.buf after the first skip lines,
// through the empty line that gather has made sure ends the section.
func (hb *headBuf) parseFields(skip, maxFields int, tooMany *Error) error {
	lf := hb.lf[:len(hb.lf)-1] // the last line is the empty one
	if len(lf)-skip > maxFields {
		return tooMany
	}
	pos := 0
	if skip > 0 {
		pos = lf[skip-1] + 1
	}
	for _, j := range lf[skip:] {
		sp, err := parseField(hb.buf, pos, j-1)
		if err != nil {
			return err
		}
		hb.spans = append(hb.spans, sp)
		pos = j + 1
	}
	return nil
}

// firstLine returns the end of the first line of hb.buf, CRLF excluded.
func (hb *headBuf) firstLine() int { return hb.lf[0] - 1 }

// parseField validates the field line b[start:end] (CRLF excluded),
// lower-cases its name in place and returns where name and value are.
func parseField(b []byte, start, end int) (span, error) {
	i := start
	for ; i < end; i++ {
		c := nameByte[b[i]]
		if c == 0 {
			break
		}
		b[i] = c
	}
	if i == start {
		if c := b[i]; c == ' ' || c == '\t' {
			// A line starting with whitespace continues the previous one
			// (obs-fold, RFC 9112 §5.2), or hides a name (§2.2): both rejected.
			return span{}, errObsFold
		}
		return span{}, errFieldName
	}
	if i == end || b[i] != ':' {
		if i < end && (b[i] == ' ' || b[i] == '\t') {
			return span{}, errSpaceBeforeColon
		}
		return span{}, errFieldName
	}
	sp := span{ns: start, ne: i}
	i++
	for i < end && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	sp.vs = i
	if !validValue(b[i:end]) {
		return span{}, errFieldValue
	}
	for end > sp.vs && (b[end-1] == ' ' || b[end-1] == '\t') {
		end--
	}
	sp.ve = end
	return sp, nil
}

// validValue reports whether v holds only HTAB, SP, VCHAR and obs-text.
// Eight bytes at a time, it looks for bytes below 0x20 or equal to 0x7f
// (bytes >= 0x80 never match), and checks the few words with a hit (often
// just an HTAB) byte by byte.
func validValue(v []byte) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		d := x ^ (lo * 0x7f)
		if ((x-lo*0x20)&^x|(d-lo)&^d)&hi != 0 {
			for _, c := range v[:8] {
				if charClass[c]&cValue == 0 {
					return false
				}
			}
		}
		v = v[8:]
	}
	for _, c := range v {
		if charClass[c]&cValue == 0 {
			return false
		}
	}
	return true
}

// materialize converts the section to its one string and appends the fields
// to dst.
func (hb *headBuf) materialize(dst header.List) (string, header.List) {
	s := string(hb.buf)
	for _, sp := range hb.spans {
		dst = append(dst, header.Field{Name: s[sp.ns:sp.ne], Value: s[sp.vs:sp.ve]})
	}
	return s, dst
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1" and returns the minor version.
// A well-formed other version is 505, anything else 400.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		!isDigit(v[5]) || !isDigit(v[7]) {
		return 0, errVersion
	}
	if v[5] != '1' || v[7] > '1' {
		return 0, errVersionNotSupp
	}
	return int(v[7] - '0'), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// framing is what the headers say about message framing and the connection.
type framing struct {
	contentLength int64 // -1 when absent
	clIndex       int   // index of the first content-length line
	clNormalize   bool  // several lines or a list: rewrite to one value
	clValue       string
	teLines       int
	teValue       string
	hostLines     int
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	upgrade       bool // an Upgrade field line is present
	upgradeH2C    bool
	expect100     bool
}

// scanHeaders derives framing from hs in one pass. Only Content-Length
// syntax is checked here; the message-level rules are the caller's.
func scanHeaders(hs header.List, fr *framing) error {
	*fr = framing{contentLength: -1, clIndex: -1}
	for i := range hs {
		f := &hs[i]
		switch f.Name {
		case "content-length":
			n, first, list, ok := parseContentLength(f.Value)
			if !ok {
				return errContentLength
			}
			if fr.clIndex < 0 {
				fr.clIndex, fr.contentLength, fr.clValue = i, n, first
				fr.clNormalize = list
			} else {
				if n != fr.contentLength {
					return errCLConflict
				}
				fr.clNormalize = true
			}
		case "transfer-encoding":
			fr.teLines++
			fr.teValue = f.Value
		case "host":
			fr.hostLines++
		case "connection":
			scanConnection(f.Value, fr)
		case "upgrade":
			fr.upgrade = true
			fr.upgradeH2C = header.EqualFold(f.Value, "h2c")
		case "expect":
			if header.EqualFold(f.Value, "100-continue") {
				fr.expect100 = true
			}
		}
	}
	return nil
}

// parseContentLength parses 1*DIGIT or a comma list of equal such values
// (RFC 9110 §8.6). It returns the value, its first element's text and
// whether it was a list.
func parseContentLength(v string) (n int64, first string, list, ok bool) {
	n = -1
	for {
		v = trimOWS(v)
		i := 0
		var x int64
		for ; i < len(v) && isDigit(v[i]); i++ {
			if x > maxInt64Div10 {
				return 0, "", false, false
			}
			x = x*10 + int64(v[i]-'0')
			if x < 0 {
				return 0, "", false, false
			}
		}
		if i == 0 {
			return 0, "", false, false
		}
		if n < 0 {
			n, first = x, v[:i]
		} else if x != n {
			return 0, "", false, false
		}
		rest := trimOWS(v[i:])
		if rest == "" {
			return n, first, list, true
		}
		if rest[0] != ',' {
			return 0, "", false, false
		}
		v, list = rest[1:], true
	}
}

// scanConnection records the connection options (RFC 9110 §7.6.1) we act on.
func scanConnection(v string, fr *framing) {
	for v != "" {
		tok := v
		if i := strings.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			v = ""
		}
		tok = trimOWS(tok)
		switch len(tok) {
		case 5:
			if header.EqualFold(tok, "close") {
				fr.connClose = true
			}
		case 7:
			if header.EqualFold(tok, "upgrade") {
				fr.connUpgrade = true
			}
		case 10:
			if header.EqualFold(tok, "keep-alive") {
				fr.connKeepAlive = true
			}
		}
	}
}

// normalizeContentLength leaves one content-length line holding the first
// value, so duplicates or lists are never forwarded for a next hop to read
// differently. It only runs for such (rare) messages.
func normalizeContentLength(hs *header.List, fr *framing) {
	l := *hs
	l[fr.clIndex].Value = fr.clValue
	out := l[:fr.clIndex+1]
	for _, f := range l[fr.clIndex+1:] {
		if f.Name != "content-length" {
			out = append(out, f)
		}
	}
	clear(l[len(out):])
	*hs = out
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// checkTransferEncoding applies the rules shared by requests and responses,
// in Envoy's order: HTTP/1.0 (RFC 9112 §6.1), then with Content-Length,
// then only "chunked" is understood.
func checkTransferEncoding(fr *framing, minor int) (chunked bool, err error) {
	if fr.teLines == 0 {
		return false, nil
	}
	if minor == 0 {
		return false, errTEHTTP10
	}
	if fr.clIndex >= 0 {
		return false, errCLAndTE
	}
	// Envoy folds repeated lines into one comma-joined value, which is then
	// no longer exactly "chunked".
	if fr.teLines > 1 || !header.EqualFold(fr.teValue, "chunked") {
		return false, errUnsupportedTE
	}
	return true, nil
}
