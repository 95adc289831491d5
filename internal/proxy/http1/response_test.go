package http1

import (
	"bufio"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

func TestReadResponseHeadOK(t *testing.T) {
	type want struct {
		status    int
		reason    string
		minor     int
		headers   header.List
		cl        int64
		chunked   bool
		keepAlive bool
	}
	tests := []struct {
		name string
		raw  string
		want want
	}{
		{"ok", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
			want{200, "OK", 1, hl("content-type", "text/plain", "content-length", "5"), 5, false, true}},
		{"reason with spaces", "HTTP/1.1 404 Not Found Here\r\n\r\n", want{404, "Not Found Here", 1, nil, -1, false, true}},
		{"empty reason with SP", "HTTP/1.1 200 \r\n\r\n", want{200, "", 1, nil, -1, false, true}},
		{"empty reason without SP", "HTTP/1.1 200\r\n\r\n", want{200, "", 1, nil, -1, false, true}},
		{"obs-text reason", "HTTP/1.1 200 \xe2\x9c\x93\r\n\r\n", want{200, "\xe2\x9c\x93", 1, nil, -1, false, true}},
		{"status 999", "HTTP/1.1 999 X\r\n\r\n", want{999, "X", 1, nil, -1, false, true}},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			want{200, "OK", 1, hl("transfer-encoding", "chunked"), -1, true, true}},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", want{200, "OK", 1, hl("connection", "close"), -1, false, false}},
		{"http/1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", want{200, "OK", 0, hl("content-length", "0"), 0, false, false}},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", want{200, "OK", 0, hl("connection", "keep-alive"), -1, false, true}},
		{"100 continue", "HTTP/1.1 100 Continue\r\n\r\n", want{100, "Continue", 1, nil, -1, false, true}},
		{"101", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			want{101, "Switching Protocols", 1, hl("connection", "Upgrade", "upgrade", "websocket"), -1, false, true}},
		{"204 zero content-length dropped", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n\r\n",
			want{204, "No Content", 1, hl("x", "y"), -1, false, true}},
		{"304 keeps content-length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
			want{304, "Not Modified", 1, hl("content-length", "10"), 10, false, true}},
		{"duplicate content-length normalised", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
			want{200, "OK", 1, hl("content-length", "3"), 3, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				var h ResponseHead
				br := bufio.NewReaderSize(strings.NewReader(tt.raw), size)
				if err := ReadResponseHead(br, &h, Limits{}); err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
				w := tt.want
				if h.Status != w.status || h.Reason != w.reason || h.Minor != w.minor ||
					!slices.Equal(h.Headers, w.headers) || h.ContentLength != w.cl ||
					h.Chunked != w.chunked || h.KeepAlive != w.keepAlive {
					t.Fatalf("size %d: got %d %q 1.%d %q cl %d chunked %v ka %v, want %+v", size,
						h.Status, h.Reason, h.Minor, h.Headers, h.ContentLength, h.Chunked, h.KeepAlive, w)
				}
			}
		})
	}
}

func TestReadResponseHeadErrors(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
		detail string
	}{
		{"not http", "<html>\r\n\r\n", 400, detailCodecError},
		{"leading empty line", "\r\nHTTP/1.1 200 OK\r\n\r\n", 400, detailCodecError},
		{"two digit status", "HTTP/1.1 99 X\r\n\r\n", 400, detailCodecError},
		{"status below 100", "HTTP/1.1 099 X\r\n\r\n", 400, detailCodecError},
		{"four digit status", "HTTP/1.1 1000 X\r\n\r\n", 400, detailCodecError},
		{"letters in status", "HTTP/1.1 2x0 X\r\n\r\n", 400, detailCodecError},
		{"tab after version", "HTTP/1.1\t200 OK\r\n\r\n", 400, detailCodecError},
		{"double space", "HTTP/1.1  200 OK\r\n\r\n", 400, detailCodecError},
		{"CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 400, detailCodecError},
		{"http/1.2", "HTTP/1.2 200 OK\r\n\r\n", 505, detailVersionNotSupp},
		{"http/2", "HTTP/2.0 200 OK\r\n\r\n", 505, detailVersionNotSupp},
		{"bad version", "HTTP/1.x 200 OK\r\n\r\n", 400, detailCodecError},
		{"bare LF", "HTTP/1.1 200 OK\nX: y\r\n\r\n", 400, detailCodecError},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", 400, detailCodecError},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n", 400, detailInvalidChars},
		{"te gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 501, detailInvalidTE},
		{"te and cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, detailChunkedCL},
		{"te in http/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 400, detailInvalidTE},
		{"cl differs", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, detailCodecError},
		{"cl invalid", "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n", 400, detailCodecError},
		{"204 with te", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", 400, detailTENotAllowed},
		{"100 with te", "HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n", 400, detailTENotAllowed},
		{"204 with cl", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 400, detailCLNotAllowed},
		{"101 with cl", "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 5\r\n\r\n", 400, detailCLNotAllowed},
		{"too many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: 1\r\n", 101) + "\r\n", 431, detailTooManyHeaders},
		{"too large", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", DefaultMaxResponseHeaderBytes) + "\r\n\r\n", 431, detailHeadersTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h ResponseHead
			br := bufio.NewReaderSize(strings.NewReader(tt.raw), 16)
			checkErr(t, ReadResponseHead(br, &h, Limits{}), tt.status, tt.detail)
		})
	}
}

func TestReadResponseHeadEOF(t *testing.T) {
	var h ResponseHead
	if err := ReadResponseHead(bufio.NewReader(strings.NewReader("")), &h, Limits{}); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	if err := ReadResponseHead(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n")), &h, Limits{}); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
}

// The interim responses come back one by one from the same reader.
func TestReadResponseHead100Continue(t *testing.T) {
	raw := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
	br := bufio.NewReaderSize(strings.NewReader(raw), 16)
	var h ResponseHead
	var got []int
	for {
		if err := ReadResponseHead(br, &h, Limits{}); err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Status)
		if k, _ := ResponseBodyKind(&h, "PUT"); k != BodyNone || h.Status >= 200 {
			break
		}
	}
	if !slices.Equal(got, []int{100, 103, 200}) {
		t.Fatalf("statuses %v", got)
	}
	var b BodyReader
	b.Reset(br, BodyLength, h.ContentLength)
	body, err := io.ReadAll(&b)
	if err != nil || string(body) != "hi" {
		t.Fatalf("body %q %v", body, err)
	}
}

func TestResponseBodyKind(t *testing.T) {
	tests := []struct {
		status  int
		cl      int64
		chunked bool
		method  string
		kind    BodyKind
		n       int64
	}{
		{200, 10, false, "GET", BodyLength, 10},
		{200, 0, false, "GET", BodyNone, 0},
		{200, -1, true, "GET", BodyChunked, -1},
		{200, -1, false, "GET", BodyUntilClose, -1},
		{200, 10, false, "HEAD", BodyNone, 0},
		{200, -1, true, "HEAD", BodyNone, 0},
		{204, -1, false, "GET", BodyNone, 0},
		{304, 10, false, "GET", BodyNone, 0},
		{100, -1, false, "GET", BodyNone, 0},
		{103, -1, false, "GET", BodyNone, 0},
		{101, -1, false, "GET", BodyTunnel, -1},
		{200, -1, false, "CONNECT", BodyTunnel, -1},
		{299, 5, false, "CONNECT", BodyTunnel, -1},
		{407, 5, false, "CONNECT", BodyLength, 5},
		{500, -1, false, "POST", BodyUntilClose, -1},
	}
	for _, tt := range tests {
		h := ResponseHead{Status: tt.status, ContentLength: tt.cl, Chunked: tt.chunked}
		if k, n := ResponseBodyKind(&h, tt.method); k != tt.kind || n != tt.n {
			t.Errorf("%d %s cl %d chunked %v: %v %d, want %v %d", tt.status, tt.method, tt.cl, tt.chunked, k, n, tt.kind, tt.n)
		}
	}
}

func TestRequestBodyKind(t *testing.T) {
	tests := []struct {
		raw  string
		kind BodyKind
		n    int64
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", BodyNone, 0},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", BodyNone, 0},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n", BodyLength, 7},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", BodyChunked, -1},
		{"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", BodyNone, 0},
		{"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", BodyNone, 0},
	}
	for _, tt := range tests {
		h, err := readReq(tt.raw, 4096, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if k, n := RequestBodyKind(h); k != tt.kind || n != tt.n {
			t.Errorf("%q: %v %d, want %v %d", tt.raw, k, n, tt.kind, tt.n)
		}
	}
}
