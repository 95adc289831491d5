package http1

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// benchRequest is a typical curl/fortio request as it leaves a sidecar.
const benchRequest = "GET /echo?size=1024 HTTP/1.1\r\n" +
	"Host: echo.default.svc.cluster.local:8080\r\n" +
	"User-Agent: fortio.org/fortio-1.63.0\r\n" +
	"Accept: */*\r\n" +
	"X-Request-Id: 8f1c2b1e-3a7d-4f7e-9a57-6c1f0d2b9e4a\r\n" +
	"X-B3-Traceid: 80f198ee56343ba864fe8b2a57d3eff7\r\n" +
	"X-B3-Spanid: e457b5a2e4d86bd1\r\n" +
	"X-B3-Sampled: 1\r\n" +
	"X-Forwarded-Proto: http\r\n" +
	"\r\n"

const benchResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: 1024\r\n" +
	"Date: Tue, 02 Jun 2026 10:00:00 GMT\r\n" +
	"Server: envoy\r\n" +
	"X-Envoy-Upstream-Service-Time: 1\r\n" +
	"\r\n"

// repeatReader yields data over and over, as a keep-alive connection would.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func BenchmarkReadRequestHead(b *testing.B) {
	br := bufio.NewReaderSize(&repeatReader{data: []byte(benchRequest)}, 16<<10)
	var h RequestHead
	b.ReportAllocs()
	b.SetBytes(int64(len(benchRequest)))
	for b.Loop() {
		if err := ReadRequestHead(br, &h, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadResponseHead(b *testing.B) {
	// Heads only: the body is skipped by a BodyReader as the proxy would.
	msg := benchResponse + string(bytes.Repeat([]byte("x"), 1024))
	br := bufio.NewReaderSize(&repeatReader{data: []byte(msg)}, 16<<10)
	var h ResponseHead
	var body BodyReader
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if err := ReadResponseHead(br, &h, Limits{}); err != nil {
			b.Fatal(err)
		}
		k, n := ResponseBodyKind(&h, "GET")
		body.Reset(br, k, n)
		if _, err := CopyBody(io.Discard, &body, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedRoundTrip(b *testing.B) {
	var wire bytes.Buffer
	bw := bufio.NewWriterSize(&wire, 16<<10)
	cw := NewChunkedWriter(bw)
	data := bytes.Repeat([]byte("d"), 1024)
	buf := make([]byte, 16<<10)
	br := bufio.NewReaderSize(&wire, 16<<10)
	var body BodyReader
	trailers := hl("grpc-status", "0")
	b.ReportAllocs()
	b.SetBytes(8 * 1024)
	for b.Loop() {
		wire.Reset()
		bw.Reset(&wire)
		cw.Reset(bw)
		for range 8 {
			cw.Write(data)
		}
		cw.Close(trailers)
		bw.Flush()
		br.Reset(&wire)
		body.Reset(br, BodyChunked, -1)
		if n, err := CopyBody(io.Discard, &body, buf); err != nil || n != 8*1024 {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkAppendRequestHead(b *testing.B) {
	var h RequestHead
	if err := ReadRequestHead(bufio.NewReader(bytes.NewReader([]byte(benchRequest))), &h, Limits{}); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendRequestHead(dst[:0], h.Method, h.Target, h.Minor, h.Headers)
	}
}
