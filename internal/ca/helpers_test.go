package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

func newTestCA(t *testing.T, opts Options) *CA {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = testLogger(t)
	}
	c, err := LoadOrCreate(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	return c
}

func mustID(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatalf("spiffe id %q: %v", s, err)
	}
	return id
}

func parseChain(t *testing.T, chainPEM []byte) []*x509.Certificate {
	t.Helper()
	certs, err := parseCerts(chainPEM)
	if err != nil {
		t.Fatalf("parse chain: %v", err)
	}
	return certs
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// verifyLeaf verifies a PEM chain (leaf first) against the PEM bundle, as a peer would.
func verifyLeaf(chainPEM, bundlePEM []byte) error {
	chain, err := parseCerts(chainPEM)
	if err != nil {
		return err
	}
	roots, err := parseCerts(bundlePEM)
	if err != nil {
		return err
	}
	_, err = chain[0].Verify(x509.VerifyOptions{
		Roots:         pool(roots...),
		Intermediates: pool(chain[1:]...),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// issueSVID makes a workload key + CSR and has c sign it, returning a TLS certificate.
func issueSVID(t *testing.T, c *CA, id string) tls.Certificate {
	t.Helper()
	keyPEM, csrPEM, err := NewKeyAndCSR(id)
	if err != nil {
		t.Fatalf("NewKeyAndCSR: %v", err)
	}
	chain, err := c.Sign(csrPEM, mustID(t, id), 0)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	cert, err := tls.X509KeyPair(chain, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	return cert
}

// testCert creates a certificate from tmpl signed by parent/parentKey (self-signed if nil).
func testCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"operator"}, CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func writePEMFile(t *testing.T, path string, blocks ...[]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(blocks, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func certPEM(certs ...*x509.Certificate) []byte { return encodeCerts(certs) }

func keyPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	b, err := encodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pluginFiles is an operator CA: root → intermediate → ca-cert, laid out as Istio expects.
type pluginFiles struct {
	root, inter, caCert *x509.Certificate
	caKey               crypto.Signer
}

func writePlugin(t *testing.T, dir string, caNotAfter time.Time) pluginFiles {
	t.Helper()
	root, rootKey := testCert(t, caTemplate("operator root"), nil, nil)
	inter, interKey := testCert(t, caTemplate("operator intermediate"), root, rootKey)
	tmpl := caTemplate("amime issuing CA")
	tmpl.NotAfter = caNotAfter
	caCert, caKey := testCert(t, tmpl, inter, interKey)
	writePEMFile(t, filepath.Join(dir, PluginCertFile), certPEM(caCert))
	writePEMFile(t, filepath.Join(dir, PluginKeyFile), keyPEM(t, caKey))
	writePEMFile(t, filepath.Join(dir, PluginRootFile), certPEM(root))
	// Istio's convention: cert-chain.pem repeats ca-cert.pem and ends with the root.
	writePEMFile(t, filepath.Join(dir, PluginChainFile), certPEM(caCert, inter, root))
	return pluginFiles{root: root, inter: inter, caCert: caCert, caKey: caKey}
}
