package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NewKeyAndCSR is the workload side of issuance: it generates a P-256 key that never leaves
// the workload and a CSR naming id, returning both as PEM (the key as PKCS#8).
func NewKeyAndCSR(id string) (keyPEM, csrPEM []byte, err error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: csr: identity %q: %w", id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: csr: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{sid.URL()},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: csr: create: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: csr: %w", err)
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// RenewAt is when a workload that received cert at received should renew
// it: half way through the rest of its validity, Istio's default, which
// leaves half the lifetime to ride out a control-plane outage. The half is
// taken from the receipt, not from NotBefore, which the CA backdates by
// ClockSkew: with a lifetime shorter than that, NotBefore's midpoint would
// already be past and the workload would renew in a loop.
func RenewAt(cert *x509.Certificate, received time.Time) time.Time {
	start := received
	if cert.NotBefore.After(start) {
		start = cert.NotBefore
	}
	return start.Add(cert.NotAfter.Sub(start) / 2)
}
