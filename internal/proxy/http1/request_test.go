package http1

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

type reqWant struct {
	method, target string
	minor          int
	headers        header.List
	cl             int64
	chunked        bool
	keepAlive      bool
	expect100      bool
	upgrade        bool
}

func checkReq(t *testing.T, h *RequestHead, w reqWant) {
	t.Helper()
	if h.Method != w.method || h.Target != w.target || h.Minor != w.minor {
		t.Errorf("line = %q %q 1.%d, want %q %q 1.%d", h.Method, h.Target, h.Minor, w.method, w.target, w.minor)
	}
	if !slices.Equal(h.Headers, w.headers) {
		t.Errorf("headers = %q, want %q", h.Headers, w.headers)
	}
	if h.ContentLength != w.cl || h.Chunked != w.chunked || h.KeepAlive != w.keepAlive ||
		h.Expect100 != w.expect100 || h.Upgrade != w.upgrade {
		t.Errorf("framing = cl %d chunked %v ka %v expect %v upgrade %v, want cl %d chunked %v ka %v expect %v upgrade %v",
			h.ContentLength, h.Chunked, h.KeepAlive, h.Expect100, h.Upgrade,
			w.cl, w.chunked, w.keepAlive, w.expect100, w.upgrade)
	}
}

func hl(kv ...string) header.List {
	var l header.List
	for i := 0; i < len(kv); i += 2 {
		l = append(l, header.Field{Name: kv[i], Value: kv[i+1]})
	}
	return l
}

func TestReadRequestHeadOK(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want reqWant
	}{
		{"simple", "GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
			reqWant{"GET", "/p?q=1", 1, hl("host", "a.example", "user-agent", "curl/8", "accept", "*/*"), -1, false, true, false, false}},
		{"names lower-cased, values trimmed, duplicates kept in order",
			"GET / HTTP/1.1\r\nHOST: a\r\nX-A:  1 \t\r\nx-a:\t2\r\nX-Empty:\r\nX-Sp:   \r\nX-Inner: a  b\tc\r\n\r\n",
			reqWant{"GET", "/", 1, hl("host", "a", "x-a", "1", "x-a", "2", "x-empty", "", "x-sp", "", "x-inner", "a  b\tc"), -1, false, true, false, false}},
		{"obs-text in value and target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
			reqWant{"GET", "/\xc3\xa9", 1, hl("host", "a", "x", "caf\xc3\xa9"), -1, false, true, false, false}},
		{"leading empty lines skipped", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
			reqWant{"GET", "/", 1, hl("host", "a"), -1, false, true, false, false}},
		{"custom method token", "PURGE-x /a HTTP/1.1\r\nHost: a\r\n\r\n",
			reqWant{"PURGE-x", "/a", 1, hl("host", "a"), -1, false, true, false, false}},
		{"content-length", "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "content-length", "42"), 42, false, true, false, false}},
		{"content-length leading zeros", "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "content-length", "007"), 7, false, true, false, false}},
		{"content-length max int64", "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "content-length", "9223372036854775807"), 9223372036854775807, false, true, false, false}},
		{"identical content-length lines normalised", "POST /u HTTP/1.1\r\nContent-Length: 5\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("content-length", "5", "host", "a"), 5, false, true, false, false}},
		{"content-length list of same value normalised", "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5 , 5,5\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "content-length", "5"), 5, false, true, false, false}},
		{"chunked", "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "transfer-encoding", "chunked"), -1, true, true, false, false}},
		{"chunked case-insensitive", "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
			reqWant{"POST", "/u", 1, hl("host", "a", "transfer-encoding", "Chunked"), -1, true, true, false, false}},
		{"connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
			reqWant{"GET", "/", 1, hl("host", "a", "connection", "keep-alive, Close"), -1, false, false, false, false}},
		{"http/1.0 default close, no host needed", "GET / HTTP/1.0\r\n\r\n",
			reqWant{"GET", "/", 0, nil, -1, false, false, false, false}},
		{"http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			reqWant{"GET", "/", 0, hl("connection", "Keep-Alive"), -1, false, true, false, false}},
		{"http/1.0 keep-alive and close", "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
			reqWant{"GET", "/", 0, hl("connection", "keep-alive", "connection", "close"), -1, false, false, false, false}},
		{"expect 100-continue", "PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
			reqWant{"PUT", "/u", 1, hl("host", "a", "content-length", "3", "expect", "100-Continue"), 3, false, true, true, false}},
		{"expect ignored in http/1.0", "PUT /u HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
			reqWant{"PUT", "/u", 0, hl("content-length", "3", "expect", "100-continue"), 3, false, false, false, false}},
		{"other expectation", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n",
			reqWant{"PUT", "/u", 1, hl("host", "a", "expect", "foo"), -1, false, true, false, false}},
		{"websocket upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			reqWant{"GET", "/ws", 1, hl("host", "a", "connection", "keep-alive, Upgrade", "upgrade", "websocket"), -1, false, true, false, true}},
		{"upgrade header without connection option", "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
			reqWant{"GET", "/ws", 1, hl("host", "a", "upgrade", "websocket"), -1, false, true, false, false}},
		{"h2c upgrade ignored as Envoy", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
			reqWant{"GET", "/", 1, hl("host", "a", "connection", "Upgrade, HTTP2-Settings", "upgrade", "h2c", "http2-settings", "AAMAAABkAAQAAP__"), -1, false, true, false, false}},
		{"upgrade ignored in http/1.0", "GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
			reqWant{"GET", "/ws", 0, hl("connection", "upgrade", "upgrade", "websocket"), -1, false, false, false, false}},
		{"connect authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			reqWant{"CONNECT", "example.com:443", 1, hl("host", "example.com:443"), -1, false, true, false, false}},
		{"connect without host", "CONNECT [::1]:8443 HTTP/1.1\r\n\r\n",
			reqWant{"CONNECT", "[::1]:8443", 1, nil, -1, false, true, false, false}},
		{"connect zero content-length dropped", "CONNECT a:1 HTTP/1.1\r\nContent-Length: 0\r\nHost: a:1\r\n\r\n",
			reqWant{"CONNECT", "a:1", 1, hl("host", "a:1"), -1, false, true, false, false}},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
			reqWant{"OPTIONS", "*", 1, hl("host", "a"), -1, false, true, false, false}},
		{"absolute-form without host", "GET http://a.example:8080/p?q HTTP/1.1\r\n\r\n",
			reqWant{"GET", "http://a.example:8080/p?q", 1, nil, -1, false, true, false, false}},
		{"underscore and dots in names", "GET / HTTP/1.1\r\nHost: a\r\nX_Y.Z~!: v\r\n\r\n",
			reqWant{"GET", "/", 1, hl("host", "a", "x_y.z~!", "v"), -1, false, true, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} { // 16: every line crosses the buffer
				var h RequestHead
				br := bufio.NewReaderSize(strings.NewReader(tt.raw), size)
				if err := ReadRequestHead(br, &h, Limits{}); err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				checkReq(t, &h, tt.want)
				if n := br.Buffered(); n != 0 {
					t.Errorf("size %d: %d bytes left buffered", size, n)
				}
			}
		})
	}
}

func readReq(raw string, size int, lim Limits) (*RequestHead, error) {
	var h RequestHead
	br := bufio.NewReaderSize(strings.NewReader(raw), size)
	return &h, ReadRequestHead(br, &h, lim)
}

func checkErr(t *testing.T, err error, status int, detail string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *Error %d %s", err, status, detail)
	}
	if e.Status != status || (detail != "" && e.Detail != detail) {
		t.Fatalf("err = %d %s (%v), want %d %s", e.Status, e.Detail, e, status, detail)
	}
}

func TestReadRequestHeadErrors(t *testing.T) {
	long := strings.Repeat("a", DefaultMaxHeaderBytes)
	many := strings.Repeat("X-A: 1\r\n", DefaultMaxHeaders)
	tests := []struct {
		name   string
		raw    string
		status int
		detail string
	}{
		// Request line.
		{"too many empty lines", strings.Repeat("\r\n", 5) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"bare LF empty line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, detailCodecError},
		{"method not token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"double space after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"double space before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"CTL in target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"DEL in target", "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"http/0.9", "GET /\r\n\r\n", 400, detailCodecError},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"short version", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"long version", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"http/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, detailVersionNotSupp},
		{"http/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, detailVersionNotSupp},
		{"http/0.9 versioned", "GET / HTTP/0.9\r\n\r\n", 505, detailVersionNotSupp},
		{"request line bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, detailCodecError},
		{"request line bare CR", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400, detailCodecError},
		// Target form.
		{"PRI * HTTP/1.1 is not a preface", "PRI * HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"asterisk not OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"absolute-form empty authority", "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"connect origin-form", "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"connect without port", "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"connect absolute", "CONNECT http://a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		{"connect userinfo", "CONNECT u@a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400, detailInvalidURL},
		// Field lines.
		{"bare LF header", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, detailCodecError},
		{"bare LF end of head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, detailCodecError},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, detailInvalidChars},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, detailInvalidChars},
		{"CTL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n", 400, detailInvalidChars},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400, detailInvalidChars},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, detailCodecError},
		{"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400, detailCodecError},
		{"space in name", "GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400, detailCodecError},
		{"empty name", "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400, detailCodecError},
		{"non-token in name", "GET / HTTP/1.1\r\nX(y): a\r\nHost: a\r\n\r\n", 400, detailCodecError},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, detailCodecError},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400, detailCodecError},
		{"whitespace before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, detailCodecError},
		// Framing.
		{"te gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, detailInvalidTE},
		{"te chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501, detailInvalidTE},
		{"te identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501, detailInvalidTE},
		{"te empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501, detailInvalidTE},
		{"te chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, detailInvalidTE},
		{"te in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, detailInvalidTE},
		{"te and content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, detailChunkedCL},
		{"unknown te and content-length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", 400, detailChunkedCL},
		{"te on connect", "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, detailInvalidTE},
		{"content-length on connect", "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 5\r\n\r\n", 400, detailBodyDisallowed},
		{"content-length letters", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1a\r\n\r\n", 400, detailCodecError},
		{"content-length negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, detailCodecError},
		{"content-length plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400, detailCodecError},
		{"content-length hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400, detailCodecError},
		{"content-length empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400, detailCodecError},
		{"content-length overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400, detailCodecError},
		{"content-length huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, detailCodecError},
		{"content-length inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400, detailCodecError},
		{"content-length lines differ", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, detailCodecError},
		{"content-length list differs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400, detailCodecError},
		{"content-length list trailing comma", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", 400, detailCodecError},
		// Host.
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, detailMissingHost},
		{"missing host asterisk", "OPTIONS * HTTP/1.1\r\n\r\n", 400, detailMissingHost},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, detailCodecError},
		{"two hosts http/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, detailCodecError},
		// Limits.
		{"request line too long", "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", 431, detailHeadersTooLarge},
		{"header value too long", "GET / HTTP/1.1\r\nHost: a\r\nX: " + long + "\r\n\r\n", 431, detailHeadersTooLarge},
		{"too many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", 431, detailTooManyHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				_, err := readReq(tt.raw, size, Limits{})
				checkErr(t, err, tt.status, tt.detail)
			}
		})
	}
}

func TestReadRequestHeadLimits(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n" // 44 bytes, 3 headers
	if _, err := readReq(head, 16, Limits{MaxHeaderBytes: len(head), MaxHeaders: 3}); err != nil {
		t.Fatalf("at limits: %v", err)
	}
	_, err := readReq(head, 16, Limits{MaxHeaderBytes: len(head) - 1})
	checkErr(t, err, 431, detailHeadersTooLarge)
	_, err = readReq(head, 16, Limits{MaxHeaders: 2})
	checkErr(t, err, 431, detailTooManyHeaders)
	// Exactly DefaultMaxHeaders passes.
	many := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: 1\r\n", DefaultMaxHeaders-1) + "\r\n"
	if _, err := readReq(many, 4096, Limits{}); err != nil {
		t.Fatalf("100 headers: %v", err)
	}
}

func TestReadRequestHeadEOF(t *testing.T) {
	tests := []struct {
		raw  string
		want error
	}{
		{"", io.EOF},
		{"\r\n", io.EOF},
		{"\r\n\r", io.EOF},
		{"G", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\n", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: a\r\n", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		if _, err := readReq(tt.raw, 16, Limits{}); err != tt.want {
			t.Errorf("%q: err = %v, want %v", tt.raw, err, tt.want)
		}
	}
}

func TestReadRequestHeadHTTP2Preface(t *testing.T) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for _, size := range []int{16, 4096} {
		br := bufio.NewReaderSize(strings.NewReader(preface+"\x00\x00\x00\x04"), size)
		var h RequestHead
		if err := ReadRequestHead(br, &h, Limits{}); err != ErrHTTP2Preface {
			t.Fatalf("size %d: err = %v, want ErrHTTP2Preface", size, err)
		}
		// Nothing consumed: an HTTP/2 server can read the preface from br.
		rest, _ := io.ReadAll(br)
		if string(rest) != preface+"\x00\x00\x00\x04" {
			t.Fatalf("size %d: left %q", size, rest)
		}
	}
	// A short request starting with P is not held up by the preface check.
	if _, err := readReq("PUT / HTTP/1.0\r\n\r\n", 16, Limits{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadRequestHeadLargerThanBuffer(t *testing.T) {
	big := strings.Repeat("v", 10000)
	raw := "GET /" + strings.Repeat("p", 5000) + " HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\nX-After: 1\r\n\r\nNEXT"
	br := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	var h RequestHead
	if err := ReadRequestHead(br, &h, Limits{}); err != nil {
		t.Fatal(err)
	}
	if len(h.Target) != 5001 || h.Headers.Value("x-big") != big || h.Headers.Value("x-after") != "1" {
		t.Fatalf("bad head: target %d, %d headers", len(h.Target), len(h.Headers))
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "NEXT" {
		t.Fatalf("left %q", rest)
	}
}

func TestReadRequestHeadReuse(t *testing.T) {
	raw := "GET /a HTTP/1.1\r\nHost: a\r\nX-1: 1\r\nX-2: 2\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: b\r\n\r\n" +
		"\r\nPOST /c HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	var h RequestHead
	wants := []reqWant{
		{"GET", "/a", 1, hl("host", "a", "x-1", "1", "x-2", "2"), -1, false, true, false, false},
		{"GET", "/b", 1, hl("host", "b"), -1, false, true, false, false},
		{"POST", "/c", 0, hl("content-length", "0"), 0, false, false, false, false},
	}
	for _, w := range wants {
		if err := ReadRequestHead(br, &h, Limits{}); err != nil {
			t.Fatal(err)
		}
		checkReq(t, &h, w)
	}
	if err := ReadRequestHead(br, &h, Limits{}); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

func TestReadRequestHeadAllocs(t *testing.T) {
	r := &repeatReader{data: []byte(benchRequest)}
	br := bufio.NewReaderSize(r, 16<<10)
	var h RequestHead
	allocs := testing.AllocsPerRun(1000, func() {
		if err := ReadRequestHead(br, &h, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("allocs/op = %v, want <= 1", allocs)
	}
}
