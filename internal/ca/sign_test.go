package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// csrWith builds a CSR claiming whatever the test wants; the CA must not believe it.
func csrWith(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSignForRefusesAnotherIdentity(t *testing.T) {
	const self = "spiffe://cluster.local/ns/shop/sa/cart"
	const other = "spiffe://cluster.local/ns/bank/sa/vault"
	tests := []struct {
		name      string
		csrURIs   []string
		requested string
		wantErr   bool
	}{
		{name: "CSR names own identity", csrURIs: []string{self}, requested: self},
		{name: "no claims, authenticated identity used", csrURIs: nil},
		{name: "non-SPIFFE URI in CSR is ignored", csrURIs: []string{"https://example.com/x"}},
		{name: "CSR names a foreign SPIFFE ID", csrURIs: []string{other}, wantErr: true},
		{name: "CSR names own and a foreign SPIFFE ID", csrURIs: []string{self, other}, wantErr: true},
		{name: "request names a foreign SPIFFE ID", csrURIs: []string{self}, requested: other, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := testLogger(t)
			c := newTestCA(t, Options{Logger: log})
			tmpl := &x509.CertificateRequest{}
			for _, u := range tt.csrURIs {
				tmpl.URIs = append(tmpl.URIs, mustURL(t, u))
			}
			var requested spiffeid.ID
			if tt.requested != "" {
				requested = mustID(t, tt.requested)
			}
			chainPEM, err := c.SignFor(csrWith(t, tmpl), requested, mustID(t, self), 0)
			if tt.wantErr {
				if !errors.Is(err, ErrIdentityMismatch) {
					t.Fatalf("err = %v, want ErrIdentityMismatch", err)
				}
				if !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), self) {
					t.Errorf("error %q should name both identities", err)
				}
				if l := logs.String(); !strings.Contains(l, "refused") || !strings.Contains(l, other) {
					t.Errorf("refusal not logged: %q", l)
				}
				return
			}
			if err != nil {
				t.Fatalf("SignFor: %v", err)
			}
			leaf := parseChain(t, chainPEM)[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != self {
				t.Errorf("leaf URIs = %v, want exactly [%s]", leaf.URIs, self)
			}
		})
	}
}

func TestSignIgnoresCSRSubjectAndSANs(t *testing.T) {
	c := newTestCA(t, Options{})
	const id = "spiffe://cluster.local/ns/shop/sa/cart"
	csr := csrWith(t, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"evil"}},
		DNSNames:       []string{"bank.example.com"},
		EmailAddresses: []string{"root@example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		URIs:           []*url.URL{mustURL(t, "spiffe://cluster.local/ns/bank/sa/vault"), mustURL(t, "https://x")},
	})
	before := time.Now()
	chainPEM, err := c.Sign(csr, mustID(t, id), 0)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	leaf := parseChain(t, chainPEM)[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"exactly one URI SAN, the given identity", len(leaf.URIs) == 1 && leaf.URIs[0].String() == id},
		{"no DNS SANs", len(leaf.DNSNames) == 0},
		{"no email SANs", len(leaf.EmailAddresses) == 0},
		{"no IP SANs", len(leaf.IPAddresses) == 0},
		{"empty subject", leaf.Subject.CommonName == "" && len(leaf.Subject.Organization) == 0},
		{"not a CA", leaf.BasicConstraintsValid && !leaf.IsCA},
		{"key usage digitalSignature+keyEncipherment", leaf.KeyUsage == x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment},
		{"EKU server+client", len(leaf.ExtKeyUsage) == 2 && leaf.ExtKeyUsage[0] == x509.ExtKeyUsageServerAuth && leaf.ExtKeyUsage[1] == x509.ExtKeyUsageClientAuth},
		{"serial of ~128 bits", leaf.SerialNumber.BitLen() > 64 && leaf.SerialNumber.BitLen() <= 128},
		{"NotBefore backdated", leaf.NotBefore.Before(before.Add(-ClockSkew / 2))},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("leaf: %s does not hold", ch.name)
		}
	}
	if err := verifyLeaf(chainPEM, c.Bundle()); err != nil {
		t.Errorf("leaf does not verify against bundle: %v", err)
	}
}

func TestSignRefusesBadRequests(t *testing.T) {
	c := newTestCA(t, Options{})
	_, good, err := NewKeyAndCSR("spiffe://cluster.local/ns/a/sa/b")
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() []byte {
		b, _ := pem.Decode(good)
		der := append([]byte(nil), b.Bytes...)
		der[len(der)-5] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: der})
	}()
	tests := []struct {
		name string
		csr  []byte
		id   spiffeid.ID
		ttl  time.Duration
		want string
	}{
		{"not PEM", []byte("hello"), mustID(t, "spiffe://cluster.local/ns/a/sa/b"), 0, "no PEM"},
		{"bad signature", tampered, mustID(t, "spiffe://cluster.local/ns/a/sa/b"), 0, "signature"},
		{"other trust domain", good, mustID(t, "spiffe://other.org/ns/a/sa/b"), 0, "trust domain"},
		{"empty identity", good, spiffeid.ID{}, 0, "empty identity"},
		{"negative ttl", good, mustID(t, "spiffe://cluster.local/ns/a/sa/b"), -time.Second, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Sign(tt.csr, tt.id, tt.ttl)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestSignTTL(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	const id = "spiffe://cluster.local/ns/a/sa/b"
	tests := []struct {
		name         string
		opts         Options
		ttl          time.Duration
		wantNotAfter func(root *x509.Certificate) time.Time
	}{
		{"default 24h", Options{}, 0, func(*x509.Certificate) time.Time { return now.Add(24 * time.Hour) }},
		{"configured default", Options{DefaultTTL: time.Hour}, 0, func(*x509.Certificate) time.Time { return now.Add(time.Hour) }},
		{"explicit ttl", Options{}, 2 * time.Hour, func(*x509.Certificate) time.Time { return now.Add(2 * time.Hour) }},
		{"capped by MaxTTL", Options{MaxTTL: 48 * time.Hour}, 1000 * time.Hour, func(*x509.Certificate) time.Time { return now.Add(48 * time.Hour) }},
		{"capped by CA NotAfter", Options{RootTTL: 3 * time.Hour}, 0, func(root *x509.Certificate) time.Time { return root.NotAfter }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Now = clock
			c := newTestCA(t, tt.opts)
			_, csr, err := NewKeyAndCSR(id)
			if err != nil {
				t.Fatal(err)
			}
			chainPEM, err := c.Sign(csr, mustID(t, id), tt.ttl)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			leaf := parseChain(t, chainPEM)[0]
			if want := tt.wantNotAfter(c.Certificate()); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %s, want %s", leaf.NotAfter, want)
			}
			if want := now.Add(-ClockSkew); !leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %s, want %s", leaf.NotBefore, want)
			}
		})
	}
}

func TestSignTTLCappedByPluginCANotAfter(t *testing.T) {
	dir := t.TempDir()
	caNotAfter := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	writePlugin(t, dir, caNotAfter)
	c, err := LoadPlugin(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, csr, _ := NewKeyAndCSR("spiffe://cluster.local/ns/a/sa/b")
	chainPEM, err := c.Sign(csr, mustID(t, "spiffe://cluster.local/ns/a/sa/b"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseChain(t, chainPEM)[0].NotAfter; !got.Equal(caNotAfter) {
		t.Errorf("NotAfter = %s, want the issuing CA's %s", got, caNotAfter)
	}
}

func TestNewKeyAndCSRAndRenewAt(t *testing.T) {
	if _, _, err := NewKeyAndCSR("http://not-spiffe"); err == nil {
		t.Error("NewKeyAndCSR accepted a non-SPIFFE identity")
	}
	const id = "spiffe://cluster.local/ns/a/sa/b"
	keyPEM, csrPEM, err := NewKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		t.Fatalf("CSR does not parse or verify: %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id {
		t.Errorf("CSR URIs = %v", csr.URIs)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Error("key does not match CSR")
	}

	// Certificates are backdated by ClockSkew: the half is of what is left
	// when the certificate arrives, so a lifetime shorter than the skew
	// does not renew at once (in a loop).
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	got := nb.Add(ClockSkew)
	tests := []struct {
		life     time.Duration // from receipt
		received time.Time
		want     time.Time
	}{
		{24 * time.Hour, got, got.Add(12 * time.Hour)},
		{time.Hour, got, got.Add(30 * time.Minute)},
		{6 * time.Second, got, got.Add(3 * time.Second)},
		{time.Hour, nb.Add(-time.Minute), nb.Add(time.Hour + ClockSkew - (time.Hour+ClockSkew)/2)}, // clock behind NotBefore
	}
	for _, tt := range tests {
		cert := &x509.Certificate{NotBefore: nb, NotAfter: got.Add(tt.life)}
		if tt.received.Before(nb) {
			cert.NotAfter = nb.Add(tt.life + ClockSkew)
		}
		if r := RenewAt(cert, tt.received); !r.Equal(tt.want) {
			t.Errorf("RenewAt(life %s, received %s) = %s, want %s", tt.life, tt.received, r, tt.want)
		}
	}
}
