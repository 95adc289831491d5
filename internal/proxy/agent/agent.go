// Package agent is the proxy's workload identity agent, what istio-agent
// is to Envoy: it makes the workload's private key (which never leaves the
// process), has the control plane's CA sign a CSR for it over Istio's
// certificate service, renews the certificate at half its life, and serves
// it and the mesh trust bundle to the proxy's TLS contexts as the SDS
// secrets "default" and "ROOTCA". It also gives the xDS client the
// credentials of the TLS xDS port: the control plane verified against the
// trust bundle, and the join token.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/amime-mesh/amime/internal/ca"
)

// Secret names, as Istio's agent serves them to Envoy.
const (
	WorkloadSecret = "default"
	RootSecret     = "ROOTCA"
)

// DefaultServerName is the name the control plane's certificate is
// checked for, Istio's.
const DefaultServerName = "istiod.istio-system.svc"

// Options configure an Agent.
type Options struct {
	// Addr is the control plane's TLS port (15012) host:port.
	Addr string
	// RootCert is the PEM trust anchor the control plane is first verified
	// with; the bundle the CA returns replaces it.
	RootCert []byte
	// ServerName is checked against the control plane's certificate;
	// default DefaultServerName.
	ServerName string
	// Token returns the join token, read anew for every call (a rotated
	// token file is picked up).
	Token func() (string, error)
	// ID is the identity to ask for.
	ID spiffeid.ID
	// TTL is the lifetime asked for; 0 lets the CA decide (24 h by default).
	TTL time.Duration
	Log *slog.Logger
}

type state struct {
	cert     *tls.Certificate
	leaf     *x509.Certificate
	roots    *x509.CertPool
	bundle   []byte
	renewAt  time.Time
	notAfter time.Time
}

// Agent holds the workload's current certificate.
type Agent struct {
	opts   Options
	cur    atomic.Pointer[state]
	anchor *x509.CertPool // from Options.RootCert
	ready  chan struct{}
	conn   *grpc.ClientConn
	client securityapi.IstioCertificateServiceClient
	// Rotations counts certificates obtained.
	Rotations atomic.Uint64
}

// New returns an agent; Run obtains and renews the certificate.
func New(opts Options) (*Agent, error) {
	if opts.ServerName == "" {
		opts.ServerName = DefaultServerName
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.ID.IsZero() {
		return nil, errors.New("agent: workload identity is required")
	}
	if opts.Token == nil {
		return nil, errors.New("agent: a join token is required")
	}
	a := &Agent{opts: opts, ready: make(chan struct{}), anchor: x509.NewCertPool()}
	if !a.anchor.AppendCertsFromPEM(opts.RootCert) {
		return nil, errors.New("agent: root certificate: no PEM certificate found")
	}
	conn, err := grpc.NewClient(opts.Addr, a.DialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("agent: dial %s: %w", opts.Addr, err)
	}
	a.conn, a.client = conn, securityapi.NewIstioCertificateServiceClient(conn)
	return a, nil
}

// DialOptions are the credentials for the control plane's TLS port.
func (a *Agent) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS12,
			// Checked by verifyServer against the current bundle, which
			// rotates; crypto/tls's RootCAs would be fixed at dial time.
			InsecureSkipVerify: true,
			VerifyConnection:   a.verifyServer,
		})),
		grpc.WithPerRPCCredentials(tokenCreds{a.opts.Token}),
	}
}

func (a *Agent) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("control plane presented no certificate")
	}
	roots := a.anchor
	if s := a.cur.Load(); s != nil {
		roots = s.roots
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: a.opts.ServerName, Roots: roots, Intermediates: inter})
	if err != nil {
		return fmt.Errorf("control plane certificate: %w", err)
	}
	return nil
}

type tokenCreds struct{ token func() (string, error) }

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := t.token()
	if err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return true }

// Ready is closed once the first certificate is held.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Certificate implements tlsctx.Secrets: "default" is the SVID.
func (a *Agent) Certificate(name string) (*tls.Certificate, error) {
	if name != WorkloadSecret {
		return nil, fmt.Errorf("secret %q: unknown (the agent serves %q and %q)", name, WorkloadSecret, RootSecret)
	}
	s := a.cur.Load()
	if s == nil {
		return nil, errors.New("workload certificate not obtained yet")
	}
	return s.cert, nil
}

// Roots implements tlsctx.Secrets: "ROOTCA" is the mesh trust bundle.
func (a *Agent) Roots(name string) (*x509.CertPool, error) {
	if name != RootSecret {
		return nil, fmt.Errorf("secret %q: unknown (the agent serves %q and %q)", name, WorkloadSecret, RootSecret)
	}
	s := a.cur.Load()
	if s == nil {
		return nil, errors.New("trust bundle not obtained yet")
	}
	return s.roots, nil
}

// Leaf returns the current certificate (nil before the first).
func (a *Agent) Leaf() *x509.Certificate {
	if s := a.cur.Load(); s != nil {
		return s.leaf
	}
	return nil
}

// Bundle returns the current trust bundle PEM.
func (a *Agent) Bundle() []byte {
	if s := a.cur.Load(); s != nil {
		return s.bundle
	}
	return nil
}

// SetBundle replaces the trust bundle (the ROOTCA secret the control
// plane pushes over SDS when its root rotates), so peers with
// certificates from a new root are trusted before this proxy renews.
func (a *Agent) SetBundle(pemData []byte) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		return errors.New("trust bundle: no PEM certificate found")
	}
	for {
		cur := a.cur.Load()
		if cur == nil {
			return errors.New("trust bundle: no workload certificate yet")
		}
		next := *cur
		next.roots, next.bundle = roots, pemData
		if a.cur.CompareAndSwap(cur, &next) {
			a.opts.Log.Info("trust bundle updated", "id", a.opts.ID.String())
			return nil
		}
	}
}

// Run obtains the certificate and renews it at half its life until ctx
// ends. Failures are retried with jittered back-off; the current
// certificate keeps serving meanwhile.
func (a *Agent) Run(ctx context.Context) error {
	defer a.conn.Close()
	backoff := time.Duration(0)
	for {
		var wait time.Duration
		if err := a.fetch(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
			wait = backoff/2 + rand.N(backoff/2+1)
			if s := a.cur.Load(); s != nil {
				// Never sleep past expiry when a retry could still save it.
				wait = min(wait, max(time.Until(s.notAfter)/4, 100*time.Millisecond))
			}
			a.opts.Log.Warn("certificate request failed; retrying", "id", a.opts.ID.String(), "in", wait, "err", err)
		} else {
			backoff = 0
			wait = max(time.Until(a.cur.Load().renewAt), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) fetch(ctx context.Context) error {
	keyPEM, csrPEM, err := ca.NewKeyAndCSR(a.opts.ID.String())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.client.CreateCertificate(cctx, &securityapi.IstioCertificateRequest{
		Csr: string(csrPEM), ValidityDuration: int64(a.opts.TTL / time.Second),
	})
	if err != nil {
		return fmt.Errorf("CreateCertificate: %w", err)
	}
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		return fmt.Errorf("CreateCertificate: answer has %d certificates, want the leaf and the trust bundle", len(chain))
	}
	var certPEM []byte
	for _, c := range chain[:len(chain)-1] {
		certPEM = append(certPEM, c...)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("CreateCertificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("CreateCertificate: leaf: %w", err)
		}
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != a.opts.ID.String() {
		return fmt.Errorf("CreateCertificate: certificate is not for %s", a.opts.ID)
	}
	bundle := []byte(chain[len(chain)-1])
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return errors.New("CreateCertificate: trust bundle holds no certificate")
	}
	// The leaf must verify against the bundle it came with, or peers would
	// refuse it.
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("CreateCertificate: certificate does not verify against the trust bundle: %w", err)
	}
	renewAt := ca.RenewAt(leaf, time.Now())
	a.cur.Store(&state{cert: &cert, leaf: leaf, roots: roots, bundle: bundle, renewAt: renewAt, notAfter: leaf.NotAfter})
	if a.Rotations.Add(1) == 1 {
		close(a.ready)
	}
	a.opts.Log.Info("workload certificate obtained", "id", a.opts.ID.String(), "expires", leaf.NotAfter.Format(time.RFC3339), "renew_at", renewAt.Format(time.RFC3339))
	return nil
}
