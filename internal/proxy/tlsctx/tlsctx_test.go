package tlsctx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/ca"
)

// secrets is a fixed Secrets.
type secrets struct {
	cert  *tls.Certificate
	roots *x509.CertPool
}

func (s secrets) Certificate(name string) (*tls.Certificate, error) {
	if name != "default" {
		return nil, errors.New("unknown secret " + name)
	}
	return s.cert, nil
}

func (s secrets) Roots(name string) (*x509.CertPool, error) {
	if name != "ROOTCA" {
		return nil, errors.New("unknown secret " + name)
	}
	return s.roots, nil
}

// mesh issues SVIDs from one CA.
type mesh struct {
	ca    *ca.CA
	roots *x509.CertPool
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	c, err := ca.LoadOrCreate(t.TempDir(), ca.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.Bundle())
	return &mesh{ca: c, roots: roots}
}

func (m *mesh) secrets(t *testing.T, id string) secrets {
	t.Helper()
	key, csr, err := ca.NewKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := m.ca.Sign(csr, spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return secrets{cert: &cert, roots: m.roots}
}

func sds(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}
}

// istioMutual is the common context Istio sends for ISTIO_MUTUAL.
func istioMutual(sans ...string) *tlsv3.CommonTlsContext {
	var m []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		m = append(m, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: m},
			ValidationContextSdsSecretConfig: sds("ROOTCA"),
		}},
		AlpnProtocols: []string{"istio", "h2"},
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// handshake runs one client/server handshake over loopback and returns
// the server's view of the connection, or the first error.
func handshake(t *testing.T, srv *Server, cli *Client) (*Conn, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			ch <- res{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := srv.Handshake(ctx, nc)
		if err == nil {
			// Let the client finish reading the server's flight.
			_, _ = c.Write([]byte("ok"))
		} else {
			nc.Close()
		}
		ch <- res{c, err}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, cerr := cli.Handshake(ctx, nc, nil)
	if cerr == nil {
		buf := make([]byte, 2)
		_, cerr = io.ReadFull(cc, buf)
	}
	r := <-ch
	// The side that refused says why; the other sees only an alert.
	if cerr != nil && !strings.Contains(cerr.Error(), "remote error") {
		return nil, cerr
	}
	if r.err != nil {
		return nil, r.err
	}
	if cerr != nil {
		return nil, cerr
	}
	return r.c, nil
}

func TestMutualTLS(t *testing.T) {
	m := newMesh(t)
	const client, server = "spiffe://cluster.local/ns/default/sa/sleep", "spiffe://cluster.local/ns/default/sa/httpbin"
	srvSecrets := m.secrets(t, server)
	srv, err := CompileDownstream(mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: istioMutual(), RequireClientCertificate: wrapperspb.Bool(true)}), srvSecrets)
	if err != nil {
		t.Fatal(err)
	}
	other := newMesh(t)
	tests := []struct {
		name    string
		secrets Secrets
		ctx     *tlsv3.UpstreamTlsContext
		wantErr string
	}{
		{"istio mutual", m.secrets(t, client), &tlsv3.UpstreamTlsContext{CommonTlsContext: istioMutual(server)}, ""},
		{"server SAN mismatch", m.secrets(t, client), &tlsv3.UpstreamTlsContext{CommonTlsContext: istioMutual("spiffe://cluster.local/ns/default/sa/other")}, "matches no configured subject alternative name"},
		{"client from another mesh", other.secrets(t, client), &tlsv3.UpstreamTlsContext{CommonTlsContext: istioMutual()}, "certificate"},
		{"no client certificate", nil, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}, "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := CompileUpstream(mustAny(t, tc.ctx), tc.secrets)
			if err != nil {
				t.Fatal(err)
			}
			c, err := handshake(t, srv, cli)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("handshake: %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.PeerPrincipal != client || c.LocalPrincipal != server {
				t.Errorf("peer %q local %q, want %q %q", c.PeerPrincipal, c.LocalPrincipal, client, server)
			}
			if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", v)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		ctx     proto.Message
		secrets Secrets
		want    string
	}{
		{"sds without identity", &tlsv3.UpstreamTlsContext{CommonTlsContext: istioMutual()}, nil,
			`typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name: SDS secret "default": this proxy has no workload identity`},
		{"unsupported field", &tlsv3.UpstreamTlsContext{AutoHostSni: true}, nil, "typed_config.auto_host_sni"},
		{"bad cipher", &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{CipherSuites: []string{"RC4-MD5"}}}}, nil,
			`typed_config.common_tls_context.tls_params.cipher_suites[0]: "RC4-MD5" is not a supported cipher suite`},
		{"min above max", &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}}}, nil,
			"minimum protocol version is above the maximum"},
		{"server without certificate", &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}, nil, "a server certificate is required"},
		{"validation without CA", &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{}}}}, nil, "validation_context.trusted_ca: required to verify the peer (or system_root_certs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if _, ok := tc.ctx.(*tlsv3.DownstreamTlsContext); ok {
				_, err = CompileDownstream(mustAny(t, tc.ctx), tc.secrets)
			} else {
				_, err = CompileUpstream(mustAny(t, tc.ctx), tc.secrets)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	m := newMesh(t)
	s := m.secrets(t, "spiffe://cluster.local/ns/default/sa/a")
	srv, err := CompileDownstream(mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: istioMutual()}), s)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := CompileUpstream(mustAny(t, &tlsv3.UpstreamTlsContext{Sni: "outbound_.8080_._.reviews.default.svc.cluster.local", CommonTlsContext: istioMutual()}), s)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		h    Hello
		conn *Conn
		err  error
		raw  string
	}
	accept := func() chan res {
		ch := make(chan res, 1)
		go func() {
			nc, err := ln.Accept()
			if err != nil {
				ch <- res{err: err}
				return
			}
			defer nc.Close()
			h, seen, err := Inspect(nc)
			if err != nil || !h.TLS {
				rest := make([]byte, 3)
				_, _ = io.ReadFull(nc, rest)
				ch <- res{h: h, err: err, raw: string(seen) + string(rest)}
				return
			}
			// The peeked bytes replayed, the handshake completes.
			c, err := srv.Handshake(context.Background(), &replay{Conn: nc, buf: seen})
			if err == nil {
				_, _ = c.Write([]byte("ok"))
			}
			ch <- res{h: h, conn: c, err: err}
		}()
		return ch
	}
	ch := accept()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := cli.Handshake(context.Background(), nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(tc, buf); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	r := <-ch
	if r.err != nil || !r.h.TLS || r.h.SNI != "outbound_.8080_._.reviews.default.svc.cluster.local" || strings.Join(r.h.ALPN, ",") != "istio,h2" {
		t.Fatalf("TLS hello: %+v err %v", r.h, r.err)
	}

	ch = accept()
	nc, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\n"))
	r = <-ch
	nc.Close()
	if r.err != nil || r.h.TLS || r.raw != "GET " {
		t.Fatalf("plaintext: %+v err %v seen %q", r.h, r.err, r.raw)
	}
}

type replay struct {
	net.Conn
	buf []byte
}

func (r *replay) Read(p []byte) (int, error) {
	if len(r.buf) > 0 {
		n := copy(p, r.buf)
		r.buf = r.buf[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// rotating is a Secrets whose certificate can change.
type rotating struct {
	mu sync.Mutex
	secrets
}

func (r *rotating) set(s secrets) { r.mu.Lock(); r.secrets = s; r.mu.Unlock() }
func (r *rotating) Certificate(name string) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.secrets.Certificate(name)
}
func (r *rotating) Roots(name string) (*x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.secrets.Roots(name)
}

// TestResumptionAfterRotation: sessions resume while certificates stay;
// after either side renews, a new connection makes a full handshake and
// presents the new certificates.
func TestResumptionAfterRotation(t *testing.T) {
	m := newMesh(t)
	const client, server = "spiffe://cluster.local/ns/default/sa/sleep", "spiffe://cluster.local/ns/default/sa/httpbin"
	cs, ss := &rotating{secrets: m.secrets(t, client)}, &rotating{secrets: m.secrets(t, server)}
	srv, err := CompileDownstream(mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: istioMutual(), RequireClientCertificate: wrapperspb.Bool(true)}), ss)
	if err != nil {
		t.Fatal(err)
	}
	// With an SNI, sessions are cached by name (each handshake below has
	// its own listener port).
	cli, err := CompileUpstream(mustAny(t, &tlsv3.UpstreamTlsContext{Sni: "outbound_.8000_._.httpbin.default.svc.cluster.local", CommonTlsContext: istioMutual(server)}), cs)
	if err != nil {
		t.Fatal(err)
	}
	connect := func() *Conn {
		t.Helper()
		c, err := handshake(t, srv, cli)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := connect()
	if again := connect(); !again.ConnectionState().DidResume {
		t.Fatal("second connection with unchanged certificates did not resume")
	}
	for _, side := range []struct {
		name string
		r    *rotating
		id   string
	}{{"client", cs, client}, {"server", ss, server}} {
		side.r.set(m.secrets(t, side.id))
		c := connect()
		if c.ConnectionState().DidResume {
			t.Errorf("after the %s renewed: session resumed with the old certificate", side.name)
		}
		if side.name == "client" && c.Peer.SerialNumber.Cmp(first.Peer.SerialNumber) == 0 {
			t.Errorf("after the client renewed: the server saw the old client certificate")
		}
	}
}
