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

// RenewAt is when a workload should renew cert: half way through its validity, Istio's
// default, which leaves half the lifetime to ride out a control-plane outage.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
}
