package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrIdentityMismatch is returned by SignFor when a workload asks for an identity other than
// the one it authenticated as.
var ErrIdentityMismatch = errors.New("requested identity differs from the authenticated identity")

// Sign issues a leaf SVID for id from a PEM CSR and returns the PEM chain: leaf, then the
// issuing certificate and any intermediates. Only the CSR's public key is used: its subject
// and SANs are ignored, because the identity comes from the caller's authentication, never
// from what the workload claims. ttl 0 means Options.DefaultTTL; it is capped by MaxTTL and
// by the issuing chain's own NotAfter.
func (c *CA) Sign(csrPEM []byte, id spiffeid.ID, ttl time.Duration) ([]byte, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return c.issue(csr, id, ttl)
}

// SignFor is Sign for a request coming from an authenticated proxy: requested is the identity
// the proxy asked for (zero if it did not say) and authenticated the one the authentication
// layer established. The request is refused, and logged, if either requested or a SPIFFE URI
// SAN in the CSR names another identity: a proxy can only obtain a certificate for itself.
func (c *CA) SignFor(csrPEM []byte, requested, authenticated spiffeid.ID, ttl time.Duration) ([]byte, error) {
	if authenticated.IsZero() {
		return nil, errors.New("ca: sign: no authenticated identity")
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	claims := make([]string, 0, len(csr.URIs)+1)
	if !requested.IsZero() {
		claims = append(claims, requested.String())
	}
	for _, u := range csr.URIs {
		if u.Scheme == "spiffe" {
			claims = append(claims, u.String())
		}
	}
	for _, claim := range claims {
		if claim != authenticated.String() {
			c.opts.Logger.Warn("ca: refused certificate for another identity",
				"authenticated", authenticated.String(), "requested", claim)
			return nil, fmt.Errorf("ca: sign: %s asked for %s: %w", authenticated, claim, ErrIdentityMismatch)
		}
	}
	return c.issue(csr, authenticated, ttl)
}

func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || (b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST") {
		return nil, errors.New("ca: sign: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: parse CSR: %w", err)
	}
	// The signature proves the requester holds the private key it wants certified.
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: sign: CSR signature: %w", err)
	}
	if err := checkLeafKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	return csr, nil
}

func checkLeafKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
			return fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too short (minimum 2048)", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// IssueServing issues the control plane's own serving certificate: the
// SVID of id plus DNS names and IP addresses, so that proxies verifying the
// xDS/CA endpoint by hostname (Istio's istiod.istio-system.svc) or by
// address accept it. The key is made here and returned as a tls.Certificate.
func (c *CA) IssueServing(id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	chainPEM, err := c.issueWith(&x509.CertificateRequest{PublicKey: key.Public()}, id, ttl, func(t *x509.Certificate) {
		t.DNSNames, t.IPAddresses = dnsNames, ips
	})
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	return &cert, nil
}

func (c *CA) issue(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) ([]byte, error) {
	return c.issueWith(csr, id, ttl, nil)
}

func (c *CA) issueWith(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration, edit func(*x509.Certificate)) ([]byte, error) {
	if id.IsZero() {
		return nil, errors.New("ca: sign: empty identity")
	}
	if id.TrustDomain() != c.opts.TrustDomain {
		return nil, fmt.Errorf("ca: sign: %s is not in trust domain %s", id, c.opts.TrustDomain)
	}
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("ca: sign: negative TTL %s", ttl)
	case ttl == 0:
		ttl = c.opts.DefaultTTL
	case ttl > c.opts.MaxTTL:
		ttl = c.opts.MaxTTL
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}

	c.mu.RLock()
	signer, issuer, chain := c.signer, c.cert, c.chain
	c.mu.RUnlock()

	now := c.opts.Now()
	notBefore, notAfter := now.Add(-ClockSkew), now.Add(ttl)
	// A leaf outliving its issuer would fail verification early anyway; stating the real end
	// lets the workload schedule renewal correctly.
	for _, ch := range chain {
		if ch.NotAfter.Before(notAfter) {
			notAfter = ch.NotAfter
		}
	}
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: sign: issuing certificate %q expired at %s", issuer.Subject, notAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, csr.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, encodeCerts(chain)...)
	return out, nil
}
