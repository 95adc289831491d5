package http1

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// Two pipelined requests in one buffer: the body reader must stop exactly
// at the end of each body.
func TestPipelinedRequests(t *testing.T) {
	raw := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n0\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, size := range []int{16, 4096} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(raw)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			br := bufio.NewReaderSize(r, size)
			var h RequestHead
			var b BodyReader
			var got []string
			for {
				err := ReadRequestHead(br, &h, Limits{})
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				k, n := RequestBodyKind(&h)
				b.Reset(br, k, n)
				body, err := io.ReadAll(&b)
				if err != nil {
					t.Fatal(err)
				}
				if !b.Done() || b.Remaining() != 0 {
					t.Fatalf("not done after EOF")
				}
				got = append(got, h.Target+"="+string(body))
			}
			if want := []string{"/a=hello", "/b=foo", "/c="}; !slices.Equal(got, want) {
				t.Fatalf("size %d oneByte %v: got %q, want %q", size, oneByte, got, want)
			}
		}
	}
}

func TestChunkedBodyExtensionsTrailers(t *testing.T) {
	body := "5;name=value;quoted=\"a b\"\r\nhello\r\n" +
		"6 ; ext\r\n world\r\n" +
		"A\r\n0123456789\r\n" +
		"0;last\r\n" +
		"Grpc-Status: 0\r\nX-Checksum:  abc \r\n\r\n" +
		"NEXT"
	for _, size := range []int{16, 4096} {
		br := bufio.NewReaderSize(strings.NewReader(body), size)
		var b BodyReader
		b.Reset(br, BodyChunked, -1)
		if b.Remaining() != -1 {
			t.Fatalf("remaining = %d", b.Remaining())
		}
		got, err := io.ReadAll(&b)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "hello world0123456789" {
			t.Fatalf("body %q", got)
		}
		if want := hl("grpc-status", "0", "x-checksum", "abc"); !slices.Equal(b.Trailers, want) {
			t.Fatalf("trailers %q", b.Trailers)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "NEXT" {
			t.Fatalf("left %q", rest)
		}
	}
}

func TestChunkedBodyErrors(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
		detail string
	}{
		{"no size", "\r\nabc\r\n0\r\n\r\n", 400, detailCodecError},
		{"not hex", "g\r\n", 400, detailCodecError},
		{"negative", "-1\r\n", 400, detailCodecError},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"overflow", "8000000000000000\r\n", 400, detailCodecError},
		{"overflow long", "fffffffffffffffffff\r\n", 400, detailCodecError},
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"space inside size", "1 0\r\n", 400, detailCodecError},
		{"bare LF size line", "5\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"lone CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"NUL in extension", "5;a\x00\r\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"data too long", "5\r\nhello!\r\n0\r\n\r\n", 400, detailCodecError},
		{"data short", "5\r\nhell\r\n0\r\n\r\n", 400, detailCodecError},
		{"LF only after data", "5\r\nhello\n0\r\n\r\n", 400, detailCodecError},
		{"extension too long", "5;" + strings.Repeat("x", maxChunkLineBytes) + "\r\nhello\r\n0\r\n\r\n", 400, detailCodecError},
		{"bad trailer name", "0\r\nBad Name: x\r\n\r\n", 400, detailCodecError},
		{"obs-fold trailer", "0\r\nA: x\r\n y\r\n\r\n", 400, detailCodecError},
		{"CTL in trailer", "0\r\nA: x\x01\r\n\r\n", 400, detailInvalidChars},
		{"bare LF trailers end", "0\r\nA: x\r\n\n", 400, detailCodecError},
		{"too many trailers", "0\r\n" + strings.Repeat("A: x\r\n", 101) + "\r\n", 431, detailTooManyHeaders},
		{"trailers too large", "0\r\nA: " + strings.Repeat("x", DefaultMaxHeaderBytes) + "\r\n\r\n", 431, detailHeadersTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				var b BodyReader
				b.Reset(bufio.NewReaderSize(strings.NewReader(tt.raw), size), BodyChunked, -1)
				_, err := io.ReadAll(&b)
				checkErr(t, err, tt.status, tt.detail)
				// Sticky.
				if _, err2 := b.Read(make([]byte, 8)); err2 != err {
					t.Fatalf("not sticky: %v", err2)
				}
			}
		})
	}
}

func TestBodyTruncated(t *testing.T) {
	tests := []struct {
		raw  string
		kind BodyKind
		n    int64
	}{
		{"hel", BodyLength, 5},
		{"", BodyLength, 5},
		{"5\r\nhel", BodyChunked, -1},
		{"5\r\nhello", BodyChunked, -1},
		{"5\r\nhello\r", BodyChunked, -1},
		{"5\r\nhello\r\n", BodyChunked, -1},
		{"5\r\nhello\r\n0\r\n", BodyChunked, -1},
		{"5\r\nhello\r\n0\r\nA: b\r\n", BodyChunked, -1},
		{"5", BodyChunked, -1},
	}
	for _, tt := range tests {
		var b BodyReader
		b.Reset(bufio.NewReaderSize(strings.NewReader(tt.raw), 16), tt.kind, tt.n)
		if _, err := io.ReadAll(&b); err != io.ErrUnexpectedEOF {
			t.Errorf("%q: err = %v, want io.ErrUnexpectedEOF", tt.raw, err)
		}
	}
}

func TestBodyUntilClose(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(strings.Repeat("x", 100)), 16)
	var b BodyReader
	b.Reset(br, BodyUntilClose, -1)
	got, err := io.ReadAll(&b)
	if err != nil || len(got) != 100 || !b.Done() {
		t.Fatalf("%d %v", len(got), err)
	}
	b.Reset(br, BodyNone, 0)
	if n, err := b.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("none: %d %v", n, err)
	}
	b.Reset(br, BodyLength, 0)
	if n, err := b.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("zero length: %d %v", n, err)
	}
}

// A streamed chunk is returned as soon as it has arrived, without waiting
// for the next chunk-size line.
func TestChunkedStreaming(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("5\r\nhello\r\n"))
		time.Sleep(50 * time.Millisecond)
		pw.Write([]byte("5\r\nworld\r\n0\r\n\r\n"))
		pw.Close()
	}()
	var b BodyReader
	b.Reset(bufio.NewReader(pr), BodyChunked, -1)
	buf := make([]byte, 64)
	start := time.Now()
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("first read %q %v", buf[:n], err)
	}
	if d := time.Since(start); d > 40*time.Millisecond {
		t.Fatalf("first read waited %v for the next chunk", d)
	}
	n, err = b.Read(buf)
	if string(buf[:n]) != "world" || (err != nil && err != io.EOF) {
		t.Fatalf("second read %q %v", buf[:n], err)
	}
	if err == nil {
		if n, err = b.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("end %d %v", n, err)
		}
	}
}

// Several small chunks that have all arrived are returned by one Read, with
// the end of the body.
func TestChunkedCoalesces(t *testing.T) {
	var b BodyReader
	b.Reset(bufio.NewReader(strings.NewReader("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")), BodyChunked, -1)
	buf := make([]byte, 64)
	n, err := b.Read(buf)
	if string(buf[:n]) != "abc" || err != io.EOF {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

func TestChunkedWriterRoundTrip(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	cw := NewChunkedWriter(bw)
	for _, s := range []string{"hello", "", " ", strings.Repeat("z", 300)} {
		if _, err := cw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cw.Close(hl("grpc-status", "0", "grpc-message", "ok")); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	want := "5\r\nhello\r\n1\r\n \r\n12c\r\n" + strings.Repeat("z", 300) + "\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"
	if out.String() != want {
		t.Fatalf("wire %q", out.String())
	}
	var b BodyReader
	b.Reset(bufio.NewReaderSize(&out, 16), BodyChunked, -1)
	got, err := io.ReadAll(&b)
	if err != nil || string(got) != "hello "+strings.Repeat("z", 300) {
		t.Fatalf("%q %v", got, err)
	}
	if !slices.Equal(b.Trailers, hl("grpc-status", "0", "grpc-message", "ok")) {
		t.Fatalf("trailers %q", b.Trailers)
	}
	// No trailers.
	out.Reset()
	cw.Reset(&out)
	cw.Close(nil)
	if out.String() != "0\r\n\r\n" {
		t.Fatalf("empty body %q", out.String())
	}
}

// flushCounter records writes and flushes.
type flushCounter struct {
	bytes.Buffer
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return nil }

func TestCopyBody(t *testing.T) {
	raw := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n" + "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	br := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(raw)), 16)
	var h RequestHead
	if err := ReadRequestHead(br, &h, Limits{}); err != nil {
		t.Fatal(err)
	}
	var b BodyReader
	k, n := RequestBodyKind(&h)
	b.Reset(br, k, n)
	var dst flushCounter
	cw := NewChunkedWriter(&dst)
	n, err := CopyBody(cw, &b, make([]byte, 2))
	if err != nil || n != 7 {
		t.Fatalf("copy %d %v", n, err)
	}
	cw.Close(b.Trailers)
	var check BodyReader
	check.Reset(bufio.NewReader(&dst.Buffer), BodyChunked, -1)
	got, err := io.ReadAll(&check)
	if err != nil || string(got) != "abcdefg" || check.Trailers.Value("x-t") != "1" {
		t.Fatalf("%q %v %q", got, err, check.Trailers)
	}
	if dst.flushes == 0 {
		t.Fatalf("never flushed")
	}
	if err := ReadRequestHead(br, &h, Limits{}); err != nil || h.Method != "GET" {
		t.Fatalf("next request: %v", err)
	}
	if _, err := CopyBody(io.Discard, &b, nil); err != io.ErrShortBuffer {
		t.Fatalf("empty buf: %v", err)
	}
}

func TestChunkedRoundTripAllocs(t *testing.T) {
	var wire bytes.Buffer
	bw := bufio.NewWriter(&wire)
	cw := NewChunkedWriter(bw)
	data := make([]byte, 1000)
	buf := make([]byte, 512)
	var b BodyReader
	br := bufio.NewReader(&wire)
	run := func() {
		wire.Reset()
		bw.Reset(&wire)
		cw.Reset(bw)
		for range 4 {
			cw.Write(data)
		}
		cw.Close(nil)
		bw.Flush()
		br.Reset(&wire)
		b.Reset(br, BodyChunked, -1)
		if n, err := CopyBody(io.Discard, &b, buf); err != nil || n != 4000 {
			t.Fatalf("%d %v", n, err)
		}
	}
	run()
	if allocs := testing.AllocsPerRun(100, run); allocs != 0 {
		t.Fatalf("allocs/op = %v, want 0", allocs)
	}
}
