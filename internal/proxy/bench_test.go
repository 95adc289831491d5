package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// BenchmarkHTTP1Proxy measures one request through the proxy over real
// loopback sockets (keep-alive both sides, 1 KiB POST echoed back), with
// the proxy's allocations per request. Client and backend are minimal raw
// HTTP/1.1 loops so the figures are the proxy's.
func BenchmarkHTTP1Proxy(b *testing.B) { benchHTTP1Proxy(b) }

// benchHTTP1Proxy runs the benchmark with the proxy options mod sets.
func benchHTTP1Proxy(b *testing.B, mod ...func(*Options)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echoBackend(c)
		}
	}()
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	tmpl, cfg := httpBootstrap(`
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: a}}]
`, false, staticCluster("a", h, p, ""))
	r := startProxy(b, tmpl, cfg, mod...)
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url(b, "http"), "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("x", 1024)
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(c)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.WriteString(c, req); err != nil {
			b.Fatal(err)
		}
		n := readResponse(b, br, buf)
		if n != len(body) {
			b.Fatalf("body %d bytes", n)
		}
	}
}

// readResponse reads one response with a content-length body.
func readResponse(b *testing.B, br *bufio.Reader, buf []byte) int {
	cl := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && strings.EqualFold(string(line[:15]), "content-length:") {
			fmt.Sscan(strings.TrimSpace(string(line[15:])), &cl)
		}
	}
	if cl < 0 {
		b.Fatal("no content-length")
	}
	if _, err := io.ReadFull(br, buf[:cl]); err != nil {
		b.Fatal(err)
	}
	return cl
}

// echoBackend answers every request with its body.
func echoBackend(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	buf := make([]byte, 64<<10)
	for {
		cl := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 16 && strings.EqualFold(string(line[:15]), "content-length:") {
				fmt.Sscan(strings.TrimSpace(string(line[15:])), &cl)
			}
		}
		if _, err := io.ReadFull(br, buf[:cl]); err != nil {
			return
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", cl)
		bw.Write(buf[:cl])
		if bw.Flush() != nil {
			return
		}
	}
}
