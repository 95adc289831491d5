package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// h2ClusterOptions makes a staticCluster speak HTTP/2 (h2c) upstream.
const h2ClusterOptions = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}`

// catchAllVhost routes everything to cluster "up", with a direct response
// on /direct to exercise local replies; responses tell the client address
// the proxy saw.
const catchAllVhost = `
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/direct"}
                direct_response: {status: 418, body: {inline_string: "teapot"}}
              - match: {prefix: "/"}
                route: {cluster: up}
                response_headers_to_add: [{header: {key: x-downstream, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]
`

// upstreamProxy starts a proxy whose HTTP listener sends everything to
// host:port, over HTTP/2 when h2 is set.
func upstreamProxy(t *testing.T, host, port string, h2, ws bool, mod ...func(*Options)) *running {
	t.Helper()
	extra := ""
	if h2 {
		extra = h2ClusterOptions
	}
	tmpl, cfg := httpBootstrap(catchAllVhost, ws, staticCluster("up", host, port, extra))
	return startProxy(t, tmpl, cfg, mod...)
}

// h2cTransport is an HTTP/2 client with prior knowledge over plain TCP.
func h2cTransport(t *testing.T) *http2.Transport {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// h2cUpstream serves h on 127.0.0.1 over h2c (prior knowledge and
// Upgrade, via h2c.NewHandler). Everything it started is stopped when the
// test ends.
func h2cUpstream(t *testing.T, h http.Handler) (host, port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: ln}
	// Handlers run on goroutines of x/net/http2 that the server does not
	// wait for: count them to know when they are all gone.
	var active atomic.Int64
	counted := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			active.Add(1)
			defer active.Add(-1)
			h.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Handler: counted(h2c.NewHandler(counted(h), &http2.Server{}))}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(tl)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		tl.closeAll() // h2c connections are hijacked: srv.Close does not see them
		<-served
		waitFor(t, 5*time.Second, "h2c upstream handlers to return", func() bool { return active.Load() == 0 })
	})
	host, port, _ = net.SplitHostPort(ln.Addr().String())
	return host, port
}

type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// payload returns n deterministic pseudo-random bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	copy(seed[:], strconv.Itoa(n))
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// protoHandler is the upstream of the protocol tests:
//
//	/hash?size=N  answers N bytes with their hash in x-resp-sha256, and
//	              the hash and length of the request body it read.
//	/trailers     answers a body followed by the trailer X-Trl.
//	anything else echoes the request as JSON (see echo), with ?status=.
func protoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		w.Header().Set("x-upstream-proto", r.Proto)
		w.Header().Set("x-req-te", strings.Join(r.TransferEncoding, ","))
		switch r.URL.Path {
		case "/hash":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
				return
			}
			size, _ := strconv.Atoi(r.URL.Query().Get("size"))
			data := payload(size)
			w.Header().Set("x-req-sha256", hex.EncodeToString(h.Sum(nil)))
			w.Header().Set("x-req-len", strconv.FormatInt(n, 10))
			w.Header().Set("x-resp-sha256", sha(data))
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = w.Write(data)
		case "/abort":
			// Part of a body, then the stream dies (reset on HTTP/2, closed
			// without the last chunk on HTTP/1.1).
			_, _ = io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case "/gzip":
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("x-req-accept-encoding", strings.Join(r.Header.Values("Accept-Encoding"), ","))
			_, _ = w.Write(gzipHello)
		case "/early":
			// Answers without reading the request body.
			_, _ = io.WriteString(w, "early")
		case "/trailers":
			w.Header().Set("Trailer", "X-Trl")
			_, _ = io.WriteString(w, "body before trailers")
			w.Header().Set("X-Trl", "trailer-value")
		default:
			backendEcho(name, w, r)
		}
	})
}

// gzipHello is "hello" gzip-compressed: the proxy must pass it through
// as it is.
var gzipHello = []byte{0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xca, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x04, 0x00, 0x00, 0xff, 0xff, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00}

// backendEcho answers like the harness backend.
func backendEcho(name string, w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	if code := r.URL.Query().Get("status"); code != "" {
		c, _ := strconv.Atoi(code)
		w.WriteHeader(c)
	}
	_ = json.NewEncoder(w).Encode(echo{Name: name, Method: r.Method, Path: r.RequestURI, Host: r.Host, Proto: r.Proto, Headers: r.Header, Body: string(b)})
}

// hideLength keeps the client from knowing the body length, so that it
// streams it (chunked on HTTP/1.1, no content-length on HTTP/2).
type hideLength struct{ r io.Reader }

func (h hideLength) Read(p []byte) (int, error) { return h.r.Read(p) }

func TestHTTP2Downstream(t *testing.T) {
	for _, up := range []struct {
		name  string
		h2    bool
		proto string // what the upstream sees
	}{
		{"http1 upstream", false, "HTTP/1.1"},
		{"h2c upstream", true, "HTTP/2.0"},
	} {
		t.Run(up.name, func(t *testing.T) {
			var host, port string
			if up.h2 {
				host, port = h2cUpstream(t, protoHandler("up"))
			} else {
				srv := httptest.NewServer(protoHandler("up"))
				t.Cleanup(srv.Close)
				host, port = hostPort(t, srv.URL)
			}
			r := upstreamProxy(t, host, port, up.h2, false)
			base := r.url(t, "http")
			client := &http.Client{Transport: h2cTransport(t)}
			do := func(t *testing.T, req *http.Request) *http.Response {
				t.Helper()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", req.Method, req.URL, err)
				}
				if resp.ProtoMajor != 2 {
					t.Fatalf("downstream response over %s, want HTTP/2", resp.Proto)
				}
				return resp
			}

			t.Run("headers and body", func(t *testing.T) {
				req, _ := http.NewRequest("POST", base+"/echo?x=1", strings.NewReader("payload"))
				req.Host = "svc.example.com"
				req.Header.Set("x-test", "v1")
				req.Header.Add("x-multi", "a")
				req.Header.Add("x-multi", "b")
				resp := do(t, req)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				for k, want := range map[string]string{"x-upstream": "up", "x-upstream-proto": up.proto, "server": "envoy", "content-type": "application/json"} {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("response %s = %q, want %q", k, got, want)
					}
				}
				if resp.Header.Get("x-envoy-upstream-service-time") == "" {
					t.Error("x-envoy-upstream-service-time missing")
				}
				e := decodeEcho(t, resp)
				if e.Method != "POST" || e.Path != "/echo?x=1" || e.Host != "svc.example.com" || e.Body != "payload" || e.Proto != up.proto {
					t.Errorf("upstream saw %+v", e)
				}
				if got := e.Headers.Values("x-multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
					t.Errorf("x-multi = %q, want [a b] in order", got)
				}
				if e.Headers.Get("x-test") != "v1" || e.Headers.Get("x-forwarded-proto") != "http" || len(e.Headers.Get("x-request-id")) != 36 {
					t.Errorf("upstream headers %v", e.Headers)
				}
			})

			t.Run("status codes", func(t *testing.T) {
				for _, code := range []int{200, 201, 204, 302, 404, 500, 503} {
					req, _ := http.NewRequest("GET", base+"/echo?status="+strconv.Itoa(code), nil)
					resp := do(t, req)
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatalf("status %d: reading body: %v", code, err)
					}
					if resp.StatusCode != code {
						t.Errorf("got status %d, want %d", resp.StatusCode, code)
					}
					if hasBody := len(body) > 0; hasBody == (code == 204) {
						t.Errorf("status %d: body %q", code, body)
					}
				}
			})

			t.Run("HEAD", func(t *testing.T) {
				req, _ := http.NewRequest("HEAD", base+"/hash?size=1234", nil)
				resp := do(t, req)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(body) != 0 {
					t.Fatalf("HEAD: %d with %d body bytes", resp.StatusCode, len(body))
				}
				if resp.ContentLength != 1234 {
					t.Errorf("HEAD content-length %d, want the upstream's 1234", resp.ContentLength)
				}
			})

			t.Run("path kept verbatim", func(t *testing.T) {
				for _, path := range []string{"//double/slash?q=1", "/enc%2Fpath?x=%20y", "/a/../b"} {
					req, _ := http.NewRequest("GET", base+"/x", nil)
					// Opaque is sent as the :path as is; with the authority
					// in front when it starts with "//", as url.URL needs.
					req.URL.Opaque, req.URL.RawQuery, _ = strings.Cut(path, "?")
					if strings.HasPrefix(path, "//") {
						req.URL.Opaque = "//" + req.URL.Host + req.URL.Opaque
					}
					resp := do(t, req)
					if e := decodeEcho(t, resp); resp.StatusCode != 200 || e.Path != path {
						t.Errorf("%s: status %d, upstream saw %q", path, resp.StatusCode, e.Path)
					}
				}
			})

			t.Run("content encoding passed through", func(t *testing.T) {
				tr := h2cTransport(t)
				tr.DisableCompression = true // send no accept-encoding, decode nothing
				resp, err := (&http.Client{Transport: tr}).Get(base + "/gzip")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(body, gzipHello) || resp.Header.Get("content-encoding") != "gzip" {
					t.Errorf("got content-encoding %q body %x, want the upstream's gzip bytes", resp.Header.Get("content-encoding"), body)
				}
				if got := resp.Header.Get("x-req-accept-encoding"); got != "" {
					t.Errorf("upstream saw accept-encoding %q the client did not send", got)
				}
			})

			t.Run("upstream reset mid-body", func(t *testing.T) {
				req, _ := http.NewRequest("GET", base+"/abort", nil)
				resp := do(t, req)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Errorf("a truncated response (%q) looked complete: the stream must be reset", body)
				}
			})

			t.Run("client address per connection", func(t *testing.T) {
				// Recycled per-request state must not carry another
				// connection's address.
				clients := map[string]*http.Client{}
				for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
					tr := h2cTransport(t)
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
					tr.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
						return d.DialContext(ctx, network, addr)
					}
					clients[ip] = &http.Client{Transport: tr}
				}
				for i := range 20 {
					ip := []string{"127.0.0.1", "127.0.0.2"}[i%2]
					resp, err := clients[ip].Get(base + "/addr")
					if err != nil {
						t.Fatal(err)
					}
					resp.Body.Close()
					if got := resp.Header.Get("x-downstream"); got != ip {
						t.Fatalf("request %d from %s: proxy saw %q", i, ip, got)
					}
				}
			})

			t.Run("local reply", func(t *testing.T) {
				req, _ := http.NewRequest("GET", base+"/direct", nil)
				resp := do(t, req)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 418 || string(body) != "teapot" {
					t.Fatalf("got %d %q, want 418 teapot", resp.StatusCode, body)
				}
			})

			const big = 5 << 20
			for _, tc := range []struct {
				name  string
				known bool // request content-length known
			}{{"5MiB both ways", true}, {"5MiB both ways, request length unknown", false}} {
				t.Run(tc.name, func(t *testing.T) {
					sent := payload(big + 1)
					var body io.Reader = bytes.NewReader(sent)
					if !tc.known {
						body = hideLength{body}
					}
					req, _ := http.NewRequest("PUT", base+"/hash?size="+strconv.Itoa(big), body)
					resp := do(t, req)
					defer resp.Body.Close()
					h := sha256.New()
					n, err := io.Copy(h, resp.Body)
					if err != nil {
						t.Fatalf("reading response: %v", err)
					}
					if resp.StatusCode != 200 || n != big || hex.EncodeToString(h.Sum(nil)) != resp.Header.Get("x-resp-sha256") {
						t.Errorf("response: status %d, %d bytes, hash mismatch=%v", resp.StatusCode, n, hex.EncodeToString(h.Sum(nil)) != resp.Header.Get("x-resp-sha256"))
					}
					if resp.Header.Get("x-req-len") != strconv.Itoa(len(sent)) || resp.Header.Get("x-req-sha256") != sha(sent) {
						t.Errorf("upstream read %s bytes, hash match=%v", resp.Header.Get("x-req-len"), resp.Header.Get("x-req-sha256") == sha(sent))
					}
					if !tc.known && !up.h2 && resp.Header.Get("x-req-te") != "chunked" {
						t.Errorf("HTTP/1.1 upstream got transfer-encoding %q, want chunked", resp.Header.Get("x-req-te"))
					}
				})
			}

			t.Run("concurrent streams", func(t *testing.T) {
				// Streams of one connection are served concurrently and must
				// not see each other's state.
				var wg sync.WaitGroup
				errs := make(chan error, 32)
				for i := range 32 {
					wg.Go(func() {
						want := fmt.Sprintf("body-%d-%s", i, strings.Repeat("x", i*1000))
						req, _ := http.NewRequest("POST", base+"/echo/"+strconv.Itoa(i), strings.NewReader(want))
						resp, err := client.Do(req)
						if err != nil {
							errs <- err
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if !bytes.Contains(b, []byte(`"Path":"/echo/`+strconv.Itoa(i)+`"`)) || !bytes.Contains(b, []byte(want)) {
							errs <- fmt.Errorf("stream %d got %.200s", i, b)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		})
	}
}

// testService implements grpc.testing.TestService for the gRPC tests.
type testService struct {
	testpb.UnimplementedTestServiceServer
	// ended receives how each call that waits for its end ended.
	ended chan callEnd
}

type callEnd struct {
	hadDeadline bool // the server saw the client's deadline (grpc-timeout)
	err         error
}

// UnaryCall echoes the payload; metadata x-echo comes back as header
// x-echo-header and trailer x-echo-trailer; a ResponseStatus becomes the
// call's error, with an EchoStatus detail; metadata x-wait makes it wait
// for the call to end.
func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo"); len(v) > 0 {
		if err := grpc.SetHeader(ctx, metadata.Pairs("x-echo-header", v[0])); err != nil {
			return nil, err
		}
		if err := grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", v[0])); err != nil {
			return nil, err
		}
	}
	if len(md.Get("x-wait")) > 0 {
		_, ok := ctx.Deadline()
		<-ctx.Done()
		s.report(callEnd{hadDeadline: ok, err: ctx.Err()})
		return nil, ctx.Err()
	}
	if rs := req.GetResponseStatus(); rs != nil {
		return nil, statusWithDetail(rs)
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// report never blocks: a handler stuck on it would hang the server's Stop.
func (s *testService) report(e callEnd) {
	select {
	case s.ended <- e:
	default:
	}
}

func statusWithDetail(rs *testpb.EchoStatus) error {
	st, err := status.New(codes.Code(rs.GetCode()), rs.GetMessage()).WithDetails(&testpb.EchoStatus{Code: rs.GetCode(), Message: "detail: " + rs.GetMessage()})
	if err != nil {
		return status.Errorf(codes.Internal, "adding details: %v", err)
	}
	return st.Err()
}

// StreamingOutputCall sends one message per ResponseParameters, then the
// ResponseStatus if any (an error after messages: in real trailers).
func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for i, p := range req.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{byte('a' + i)}, int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	if rs := req.GetResponseStatus(); rs != nil {
		return statusWithDetail(rs)
	}
	return nil
}

// StreamingInputCall sums the sizes of the payloads it receives.
func (s *testService) StreamingInputCall(stream testpb.TestService_StreamingInputCallServer) error {
	var sum int32
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: sum})
		}
		if err != nil {
			return err
		}
		sum += int32(len(req.GetPayload().GetBody()))
	}
}

// FullDuplexCall answers each message at once with its payload, then
// fails if it was "fail", and reports how the call ended when it ends with an
// error.
func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			s.report(callEnd{err: stream.Context().Err()})
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
		if string(req.GetPayload().GetBody()) == "fail" {
			return status.Error(codes.FailedPrecondition, "failing on request")
		}
	}
}

// grpcUpstream starts a grpc-go server with svc on 127.0.0.1.
func grpcUpstream(t *testing.T, svc *testService) (host, port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	testpb.RegisterTestServiceServer(srv, svc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	host, port, _ = net.SplitHostPort(ln.Addr().String())
	return host, port
}

func TestGRPCThroughProxy(t *testing.T) {
	svc := &testService{ended: make(chan callEnd, 4)}
	host, port := grpcUpstream(t, svc)
	r := upstreamProxy(t, host, port, true, false)
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(r.url(t, "http"), "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := testpb.NewTestServiceClient(cc)
	callCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	endOf := func(t *testing.T) callEnd {
		t.Helper()
		select {
		case e := <-svc.ended:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream call did not end")
			return callEnd{}
		}
	}

	t.Run("unary with metadata", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-echo", "md-value")
		var hdr, trl metadata.MD
		body := payload(100 << 10)
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), body) {
			t.Error("payload not echoed intact")
		}
		if got := hdr.Get("x-echo-header"); len(got) != 1 || got[0] != "md-value" {
			t.Errorf("header metadata x-echo-header = %q (all: %v)", got, hdr)
		}
		if got := trl.Get("x-echo-trailer"); len(got) != 1 || got[0] != "md-value" {
			t.Errorf("trailer metadata x-echo-trailer = %q (all: %v)", got, trl)
		}
		if got := hdr.Get("server"); len(got) != 1 || got[0] != "envoy" {
			t.Errorf("server header = %q, want the proxy's", got)
		}
	})

	t.Run("error status with details", func(t *testing.T) {
		for _, code := range []codes.Code{codes.NotFound, codes.PermissionDenied, codes.ResourceExhausted} {
			ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-echo", "on-error")
			var trl metadata.MD
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(code), Message: "msg with spaces, ünïcode & 100%"}}, grpc.Trailer(&trl))
			checkStatus(t, err, code, "msg with spaces, ünïcode & 100%")
			if got := trl.Get("x-echo-trailer"); len(got) != 1 || got[0] != "on-error" {
				t.Errorf("trailer metadata on error = %v", trl)
			}
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		sizes := []int32{1, 1000, 70000, 0, 5}
		req := &testpb.StreamingOutputCallRequest{}
		for _, s := range sizes {
			req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: s})
		}
		stream, err := client.StreamingOutputCall(callCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range sizes {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if b := m.GetPayload().GetBody(); len(b) != int(s) || (s > 0 && b[0] != byte('a'+i)) {
				t.Fatalf("message %d: %d bytes, want %d", i, len(b), s)
			}
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after the last message: %v, want io.EOF", err)
		}
	})

	t.Run("server streaming then error", func(t *testing.T) {
		// The status follows messages, so it travels in real trailers.
		stream, err := client.StreamingOutputCall(callCtx(t), &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 20}},
			ResponseStatus:     &testpb.EchoStatus{Code: int32(codes.Aborted), Message: "stopped after two"},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		_, err = stream.Recv()
		checkStatus(t, err, codes.Aborted, "stopped after two")
	})

	t.Run("client streaming", func(t *testing.T) {
		stream, err := client.StreamingInputCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for i := range 20 {
			n := i * 1500
			want += n
			if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.GetAggregatedPayloadSize()) != want {
			t.Errorf("aggregated %d, want %d", resp.GetAggregatedPayloadSize(), want)
		}
	})

	t.Run("bidi interleaved", func(t *testing.T) {
		// Each answer must arrive before the next message is sent: a proxy
		// that buffered either direction would stall here.
		stream, err := client.FullDuplexCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			msg := []byte(fmt.Sprintf("ping %d %s", i, strings.Repeat("z", i*300)))
			if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: msg}}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv %d: %v", i, err)
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), msg) {
				t.Fatalf("recv %d: got %.40q", i, resp.GetPayload().GetBody())
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want io.EOF", err)
		}
	})

	t.Run("bidi ended by the server first", func(t *testing.T) {
		// The client has not half-closed: the status must still reach it
		// at once, not when some timeout ends the stream.
		stream, err := client.FullDuplexCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("fail")}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("echo before the failure: %v", err)
		}
		_, err = stream.Recv()
		if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || st.Message() != "failing on request" {
			t.Fatalf("got %v, want FailedPrecondition", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("status took %v", d)
		}
	})

	t.Run("deadline exceeded", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-wait", "1"), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		// Two outcomes are right, as through Envoy: the client's timer
		// fires first, or the server's (grpc-go resets the stream at the
		// forwarded deadline) and the proxy answers that reset in gRPC.
		st, _ := status.FromError(err)
		if st.Code() != codes.DeadlineExceeded && (st.Code() != codes.Unavailable || st.Message() != "upstream connect error or disconnect/reset before headers. reset reason: remote reset") {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("deadline of 300ms took %v", d)
		}
		e := endOf(t)
		if !e.hadDeadline {
			t.Error("upstream saw no deadline: grpc-timeout was not forwarded")
		}
		if e.err == nil {
			t.Error("upstream call did not end")
		}
	})

	t.Run("cancel reaches upstream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if e := endOf(t); !errors.Is(e.err, context.Canceled) {
			t.Errorf("upstream call ended with %v, want context.Canceled", e.err)
		}
	})
}

func TestGRPCLocalReplies(t *testing.T) {
	// Replies the proxy makes itself reach gRPC clients as gRPC statuses
	// (Envoy's trailers-only local replies), not as HTTP errors.
	vhosts := `
            - name: grpc
              domains: ["*"]
              routes:
              - match: {prefix: "/teapot."}
                direct_response: {status: 418, body: {inline_string: "short and stout, 100% ünïcode"}}
              - match: {prefix: "/denied."}
                direct_response: {status: 403}
              - match: {prefix: "/dead."}
                route: {cluster: dead}
`
	tmpl, cfg := httpBootstrap(vhosts, false, staticCluster("dead", "127.0.0.1", strconv.Itoa(freePort(t)), h2ClusterOptions))
	r := startProxy(t, tmpl, cfg)
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(r.url(t, "http"), "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	for _, tc := range []struct {
		method string
		code   codes.Code
		msg    string
	}{
		{"/teapot.S/M", codes.Unknown, "short and stout, 100% ünïcode"},
		{"/denied.S/M", codes.PermissionDenied, ""},
		{"/dead.S/M", codes.Unavailable, "upstream connect error or disconnect/reset before headers. reset reason: connection failure"},
		{"/unrouted.S/M", codes.Unimplemented, ""},
	} {
		t.Run(tc.method, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Trailers-only: grpc-go shows its headers as trailer metadata.
			var trl metadata.MD
			err := cc.Invoke(ctx, tc.method, &testpb.SimpleRequest{}, &testpb.SimpleResponse{}, grpc.Trailer(&trl))
			st, _ := status.FromError(err)
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Errorf("got %v, want code %v message %q", err, tc.code, tc.msg)
			}
			if got := trl.Get("server"); len(got) != 1 || got[0] != "envoy" {
				t.Errorf("server = %q, want the proxy's in a trailers-only response (%v)", got, trl)
			}
		})
	}
}

// checkStatus asserts err is a gRPC status with code, message and the
// EchoStatus detail the test service attaches.
func checkStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || st.Message() != msg {
		t.Fatalf("got %v, want code %v message %q", err, code, msg)
	}
	details := st.Details()
	if len(details) != 1 {
		t.Fatalf("details %v, want one EchoStatus (grpc-status-details-bin lost?)", details)
	}
	if d, ok := details[0].(*testpb.EchoStatus); !ok || d.GetMessage() != "detail: "+msg || d.GetCode() != int32(code) {
		t.Errorf("detail %v", details[0])
	}
}

func TestHTTP1ToHTTP2Upstream(t *testing.T) {
	host, port := h2cUpstream(t, protoHandler("h2"))
	r := upstreamProxy(t, host, port, true, false)
	base := r.url(t, "http")
	addr := strings.TrimPrefix(base, "http://")
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	read := func(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading response: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
		return resp, string(b)
	}

	t.Run("chunked request bodies on one connection", func(t *testing.T) {
		c, br := dial(t)
		for i, chunks := range []string{"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", "3\r\nabc\r\n0\r\nx-req-trailer: t\r\n\r\n", "0\r\n\r\n"} {
			fmt.Fprintf(c, "POST /c%d HTTP/1.1\r\nHost: h2.example.com\r\nTransfer-Encoding: chunked\r\n\r\n%s", i, chunks)
			resp, body := read(t, br, "POST")
			want := map[int]string{0: "hello world", 1: "abc", 2: ""}[i]
			if resp.StatusCode != 200 || !strings.Contains(body, `"Body":"`+want+`"`) || !strings.Contains(body, `"Proto":"HTTP/2.0"`) || !strings.Contains(body, fmt.Sprintf(`"Path":"/c%d"`, i)) {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			if resp.Close {
				t.Fatalf("request %d: connection not kept alive", i)
			}
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "POST /e HTTP/1.1\r\nHost: h2.example.com\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		if l, _ := br.ReadString('\n'); l != "\r\n" {
			t.Fatalf("100 head not terminated: %q", l)
		}
		fmt.Fprint(c, "abc")
		resp, body := read(t, br, "POST")
		if resp.StatusCode != 200 || !strings.Contains(body, `"Body":"abc"`) || strings.Contains(strings.ToLower(body), `"expect"`) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "HEAD /hash?size=777 HTTP/1.1\r\nHost: h2.example.com\r\n\r\nGET /after HTTP/1.1\r\nHost: h2.example.com\r\n\r\n")
		resp, body := read(t, br, "HEAD")
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != 777 {
			t.Fatalf("HEAD: %d, content-length %d, body %q", resp.StatusCode, resp.ContentLength, body)
		}
		if _, body = read(t, br, "GET"); !strings.Contains(body, `"Path":"/after"`) {
			t.Fatalf("after HEAD: %q", body)
		}
	})

	t.Run("trailers need chunked framing", func(t *testing.T) {
		resp, err := http.Get(base + "/trailers")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "body before trailers" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := resp.Trailer.Get("X-Trl"); got != "trailer-value" {
			t.Errorf("trailer X-Trl = %q (transfer-encoding %v)", got, resp.TransferEncoding)
		}
	})

	t.Run("large streamed bodies", func(t *testing.T) {
		sent := payload(3<<20 + 7)
		const size = 4 << 20
		req, _ := http.NewRequest("PUT", base+"/hash?size="+strconv.Itoa(size), hideLength{bytes.NewReader(sent)})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != resp.Header.Get("x-resp-sha256") {
			t.Errorf("response: %d bytes, %v, hash match=%v", n, err, hex.EncodeToString(h.Sum(nil)) == resp.Header.Get("x-resp-sha256"))
		}
		if resp.Header.Get("x-req-sha256") != sha(sent) || resp.Header.Get("x-upstream-proto") != "HTTP/2.0" {
			t.Errorf("upstream read %s bytes over %s, hash match=%v", resp.Header.Get("x-req-len"), resp.Header.Get("x-upstream-proto"), resp.Header.Get("x-req-sha256") == sha(sent))
		}
	})

	t.Run("request headers are the client's", func(t *testing.T) {
		c, br := dial(t)
		fmt.Fprint(c, "GET /ua HTTP/1.1\r\nHost: h2.example.com\r\nAccept-Encoding: identity\r\n\r\n")
		_, body := read(t, br, "GET")
		if strings.Contains(body, `"User-Agent"`) || !strings.Contains(body, `"Accept-Encoding":["identity"]`) {
			t.Errorf("upstream headers should be the client's: %s", body)
		}
		fmt.Fprint(c, "GET /gzip HTTP/1.1\r\nHost: h2.example.com\r\n\r\n")
		resp, body := read(t, br, "GET")
		if body != string(gzipHello) || resp.Header.Get("content-encoding") != "gzip" || resp.Header.Get("x-req-accept-encoding") != "" {
			t.Errorf("gzip response: content-encoding %q, upstream saw accept-encoding %q, body %x", resp.Header.Get("content-encoding"), resp.Header.Get("x-req-accept-encoding"), body)
		}
	})

	t.Run("early response to an unfinished body", func(t *testing.T) {
		// The transport may still be reading the body when the response is
		// done: the connection cannot carry another request, and the proxy
		// must close it rather than read on.
		c, br := dial(t)
		fmt.Fprint(c, "POST /early HTTP/1.1\r\nHost: h2.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		resp, body := read(t, br, "POST")
		if resp.StatusCode != 200 || body != "early" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection still open after the response (read %q, %v)", b, err)
		}
	})

	t.Run("upstream reset mid-body", func(t *testing.T) {
		resp, err := http.Get(base + "/abort")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("a truncated response (%q) looked complete", body)
		}
	})
}

func TestWebSocket(t *testing.T) {
	type result struct {
		msgs int
		err  error
	}
	ended := make(chan result, 4)
	var hits atomic.Int64
	wsSrv := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		hits.Add(1)
		n := 0
		err := websocket.Message.Send(c, "hello from upstream")
		for err == nil {
			var msg string
			if err = websocket.Message.Receive(c, &msg); err == nil {
				n++
				err = websocket.Message.Send(c, "echo: "+msg)
			}
		}
		ended <- result{n, err}
	}))
	t.Cleanup(wsSrv.Close)
	host, port := hostPort(t, wsSrv.URL)

	t.Run("upgrade allowed", func(t *testing.T) {
		r := upstreamProxy(t, host, port, false, true)
		cfg, err := websocket.NewConfig("ws"+strings.TrimPrefix(r.url(t, "http"), "http")+"/ws", "http://origin.example.com/")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.DialConfig(cfg)
		if err != nil {
			t.Fatalf("dial through the proxy: %v", err)
		}
		defer ws.Close()
		_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
		var msg string
		if err := websocket.Message.Receive(ws, &msg); err != nil || msg != "hello from upstream" {
			t.Fatalf("first message %q, %v", msg, err)
		}
		const n = 10
		for i := range n {
			out := fmt.Sprintf("msg %d %s", i, strings.Repeat("w", i*20000))
			if err := websocket.Message.Send(ws, out); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			if err := websocket.Message.Receive(ws, &msg); err != nil || msg != "echo: "+out {
				t.Fatalf("receive %d: %.40q, %v", i, msg, err)
			}
		}
		if err := ws.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-ended:
			if res.msgs != n || res.err != io.EOF {
				t.Errorf("upstream got %d messages and ended with %v, want %d and io.EOF (a clean close)", res.msgs, res.err, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream did not see the close")
		}
	})

	t.Run("refused without upgrade_configs", func(t *testing.T) {
		before := hits.Load()
		r := upstreamProxy(t, host, port, false, false)
		c, err := net.Dial("tcp", strings.TrimPrefix(r.url(t, "http"), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://origin.example.com\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("status %d, want 403", resp.StatusCode)
		}
		if hits.Load() != before {
			t.Error("the upgrade reached the upstream")
		}
	})
}

// h2Frame is a copy of what the raw client needs of a received frame.
type h2Frame struct {
	typ       http2.FrameType
	stream    uint32
	endStream bool
	ack       bool
	data      []byte
	headers   []hpack.HeaderField
	code      http2.ErrCode
	lastID    uint32
}

// rawH2 is a minimal HTTP/2 client that shows frames as they arrive.
type rawH2 struct {
	fr     *http2.Framer
	frames chan h2Frame // closed when the connection ends
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &rawH2{fr: http2.NewFramer(nc, nc), frames: make(chan h2Frame, 64)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.frames)
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			h := h2Frame{typ: f.Header().Type, stream: f.Header().StreamID}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				h.endStream, h.headers = f.StreamEnded(), f.Fields
			case *http2.DataFrame:
				h.endStream, h.data = f.StreamEnded(), bytes.Clone(f.Data())
			case *http2.GoAwayFrame:
				h.code, h.lastID = f.ErrCode, f.LastStreamID
			case *http2.RSTStreamFrame:
				h.code = f.ErrCode
			case *http2.SettingsFrame:
				h.ack = f.IsAck()
			}
			select {
			case c.frames <- h:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		nc.Close()
		<-done
	})
	return c
}

func (c *rawH2) get(t *testing.T, stream uint32, path string) {
	t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "drain.example.com"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatalf("writing HEADERS of stream %d: %v", stream, err)
	}
}

// next returns the next frame, acknowledging SETTINGS on the way; ok is
// false when the connection ended.
func (c *rawH2) next(t *testing.T, deadline <-chan time.Time) (h2Frame, bool) {
	t.Helper()
	for {
		select {
		case f, ok := <-c.frames:
			if ok && f.typ == http2.FrameSettings && !f.ack {
				if err := c.fr.WriteSettingsAck(); err != nil {
					t.Fatalf("writing SETTINGS ack: %v", err)
				}
				continue
			}
			return f, ok
		case <-deadline:
			t.Fatal("timed out waiting for a frame")
			return h2Frame{}, false
		}
	}
}

func TestHTTP2GoAwayOnDrain(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var after atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/wait" {
			after.Add(1)
			return
		}
		arrived <- struct{}{}
		select {
		case <-release:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(up.Close)
	host, port := hostPort(t, up.URL)
	// A drain period much longer than the test's waits: Drain must return
	// because the connection finished, not because time ran out.
	r := upstreamProxy(t, host, port, false, false, func(o *Options) { o.DrainDuration = 30 * time.Second })
	addr := strings.TrimPrefix(r.url(t, "http"), "http://")
	c := dialRawH2(t, addr)
	deadline := time.After(15 * time.Second)
	// An idle connection, served by the HTTP/2 server once a frame of its
	// arrives (next has acknowledged its SETTINGS by then).
	idle := dialRawH2(t, addr)
	if f, ok := idle.next(t, deadline); !ok || f.typ == http2.FrameGoAway {
		t.Fatalf("idle connection: first frame %v (open %v)", f.typ, ok)
	}

	c.get(t, 1, "/wait")
	select {
	case <-arrived:
	case <-deadline:
		t.Fatal("request did not reach the upstream")
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		r.p.Drain()
	}()

	var f h2Frame
	for ok := true; ok && f.typ != http2.FrameGoAway; {
		f, ok = c.next(t, deadline)
		if !ok {
			t.Fatal("connection closed before GOAWAY")
		}
	}
	if f.code != http2.ErrCodeNo || f.lastID != 1 {
		t.Fatalf("GOAWAY code %v last stream %d, want NO_ERROR and 1", f.code, f.lastID)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while a request was in flight")
	default:
	}

	// The idle connection is told to go away too, then closed.
	sawGoAway := false
	for {
		f, ok := idle.next(t, deadline)
		if !ok {
			break
		}
		if f.typ == http2.FrameGoAway {
			sawGoAway = f.code == http2.ErrCodeNo && f.lastID == 0
		}
	}
	if !sawGoAway {
		t.Error("idle connection closed without GOAWAY(NO_ERROR, last stream 0)")
	}

	// A stream opened after GOAWAY must not be served.
	c.get(t, 3, "/after")
	close(release)

	var status string
	var body []byte
	ended := false
	for {
		f, ok := c.next(t, deadline)
		if !ok {
			break
		}
		switch {
		case f.stream == 3 && !(f.typ == http2.FrameRSTStream && f.code == http2.ErrCodeRefusedStream):
			t.Errorf("stream 3, opened after GOAWAY, got a %v frame", f.typ)
		case f.stream == 1 && f.typ == http2.FrameHeaders:
			for _, h := range f.headers {
				if h.Name == ":status" {
					status = h.Value
				}
			}
			ended = ended || f.endStream
		case f.stream == 1 && f.typ == http2.FrameData:
			body = append(body, f.data...)
			ended = ended || f.endStream
		case f.stream == 1 && f.typ == http2.FrameRSTStream:
			t.Errorf("in-flight stream reset: %v", f.code)
		}
	}
	if status != "200" || string(body) != "done" || !ended {
		t.Errorf("in-flight request: status %q body %q ended %v, want 200 \"done\" ended", status, body, ended)
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the connection finished")
	}
	if n := after.Load(); n != 0 {
		t.Errorf("%d requests sent after GOAWAY reached the upstream", n)
	}
}
