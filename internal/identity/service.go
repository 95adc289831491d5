package identity

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/amime-mesh/amime/internal/ca"
)

// Signer is the part of the CA the certificate service uses.
type Signer interface {
	SignFor(csrPEM []byte, requested, authenticated spiffeid.ID, ttl time.Duration) ([]byte, error)
	Bundle() []byte
}

// CertificateService is Istio's IstioCertificateService: the caller
// (authenticated by the interceptors) sends a CSR and gets back its SVID.
// The chain is [leaf, intermediates..., trust bundle]: the last element
// holds every root the mesh trusts (several during a root rotation), so a
// client taking it as its root file trusts old and new roots alike.
type CertificateService struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	CA Signer
}

// CreateCertificate implements IstioCertificateService.
func (s *CertificateService) CreateCertificate(ctx context.Context, req *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no authenticated identity")
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	chain, err := s.CA.SignFor([]byte(req.GetCsr()), spiffeid.ID{}, id, ttl)
	if err != nil {
		if errors.Is(err, ca.ErrIdentityMismatch) {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	out := splitPEM(string(chain))
	out = append(out, string(s.CA.Bundle()))
	return &securityapi.IstioCertificateResponse{CertChain: out}, nil
}

// splitPEM splits concatenated PEM blocks into one string each.
func splitPEM(s string) []string {
	const end = "-----END CERTIFICATE-----"
	var out []string
	for {
		i := strings.Index(s, end)
		if i < 0 {
			return out
		}
		out = append(out, strings.TrimSpace(s[:i+len(end)])+"\n")
		s = s[i+len(end):]
	}
}
