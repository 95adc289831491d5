package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

func FuzzReadRequestHead(f *testing.F) {
	for _, s := range []string{
		benchRequest,
		"GET / HTTP/1.0\r\n\r\n",
		"\r\nPOST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a/b HTTP/1.1\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		var h RequestHead
		br := bufio.NewReaderSize(bytes.NewReader(data), 16+int(size))
		err := ReadRequestHead(br, &h, Limits{MaxHeaderBytes: 4096, MaxHeaders: 32})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) && err != io.EOF && err != io.ErrUnexpectedEOF && err != ErrHTTP2Preface {
				t.Fatalf("unexpected error type %T %v", err, err)
			}
			return
		}
		wire := AppendRequestHead(nil, h.Method, h.Target, h.Minor, h.Headers)
		var h2 RequestHead
		if err := ReadRequestHead(bufio.NewReader(bytes.NewReader(wire)), &h2, Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1000}); err != nil {
			t.Fatalf("reparse of %q: %v", wire, err)
		}
		if h.Method != h2.Method || h.Target != h2.Target || h.Minor != h2.Minor ||
			!slices.Equal(h.Headers, h2.Headers) || h.ContentLength != h2.ContentLength ||
			h.Chunked != h2.Chunked || h.KeepAlive != h2.KeepAlive ||
			h.Expect100 != h2.Expect100 || h.Upgrade != h2.Upgrade {
			t.Fatalf("round trip differs:\n%+v\n%+v", h, h2)
		}
		// The body framing is well defined and never reads past the input.
		var b BodyReader
		k, n := RequestBodyKind(&h)
		b.Reset(br, k, n)
		io.Copy(io.Discard, &b)
	})
}

func FuzzChunkedBody(f *testing.F) {
	f.Add([]byte("5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n"))
	f.Add([]byte("0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b BodyReader
		b.Limits = Limits{MaxHeaderBytes: 4096, MaxHeaders: 32}
		b.Reset(bufio.NewReaderSize(bytes.NewReader(data), 16), BodyChunked, -1)
		body, err := io.ReadAll(&b)
		if err != nil {
			return
		}
		var wire bytes.Buffer
		cw := NewChunkedWriter(&wire)
		cw.Write(body)
		cw.Close(b.Trailers)
		var b2 BodyReader
		b2.Reset(bufio.NewReader(&wire), BodyChunked, -1)
		body2, err := io.ReadAll(&b2)
		if err != nil || !bytes.Equal(body, body2) || !slices.Equal(b.Trailers, b2.Trailers) {
			t.Fatalf("round trip: %v %q %q", err, body2, b2.Trailers)
		}
	})
}
