package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// VerifyPeerCertificate returns a tls.Config.VerifyPeerCertificate callback for the mesh's
// mTLS: the peer's chain must verify against bundle, its leaf must carry exactly one spiffe://
// URI SAN, in trust domain td. authorize, if not nil, then sees the peer's ID (to check who it
// is, or to record it) and may refuse it. bundle is a source so that a rotated bundle
// (x509bundle.Bundle.SetX509Authorities) applies to new handshakes without a new config.
func VerifyPeerCertificate(td spiffeid.TrustDomain, bundle x509bundle.Source, authorize func(spiffeid.ID) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("mtls: peer presented no certificate")
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("mtls: peer certificate %d: %w", i, err)
			}
			certs = append(certs, c)
		}
		// Check the identity before the chain so a foreign trust domain gets a clear error
		// rather than "no bundle found".
		id, err := x509svid.IDFromCert(certs[0])
		if err != nil {
			return fmt.Errorf("mtls: peer identity: %w", err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("mtls: peer %s is from trust domain %q, want %q", id, id.TrustDomain(), td)
		}
		if _, _, err := x509svid.Verify(certs, bundle); err != nil {
			return fmt.Errorf("mtls: peer %s: %w", id, err)
		}
		if authorize != nil {
			if err := authorize(id); err != nil {
				return fmt.Errorf("mtls: peer %s not authorized: %w", id, err)
			}
		}
		return nil
	}
}

// PeerID returns the SPIFFE ID of the peer of a connection whose handshake used
// VerifyPeerCertificate.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer identity: %w", err)
	}
	return id, nil
}

// ServerConfig is the inbound side of mesh mTLS: it presents the SVID from getCert (called
// per handshake, so a renewed SVID applies at once) and requires a client SVID.
func ServerConfig(getCert func() (*tls.Certificate, error), td spiffeid.TrustDomain, bundle x509bundle.Source, authorize func(spiffeid.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return getCert()
		},
		// Chain verification is done by VerifyPeerCertificate against the SPIFFE bundle, not
		// by crypto/tls against ClientCAs, hence "any" client cert here.
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: VerifyPeerCertificate(td, bundle, authorize),
		// VerifyPeerCertificate is skipped on resumed sessions; without tickets every
		// connection is checked against the current bundle.
		SessionTicketsDisabled: true,
	}
}

// ClientConfig is the outbound side of mesh mTLS: it presents the SVID from getCert and
// verifies the server's SVID; authorize is where the caller checks the expected server ID.
func ClientConfig(getCert func() (*tls.Certificate, error), td spiffeid.TrustDomain, bundle x509bundle.Source, authorize func(spiffeid.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return getCert()
		},
		// SVIDs carry no DNS names: hostname verification is replaced by the SPIFFE checks in
		// VerifyPeerCertificate, which still verifies the chain.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: VerifyPeerCertificate(td, bundle, authorize),
	}
}
