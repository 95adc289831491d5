package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/amime-mesh/amime/internal/ca"
	"github.com/amime-mesh/amime/internal/identity"
	"github.com/amime-mesh/amime/internal/xds/server"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// openIdentity loads the CA and the token key and binds the TLS port.
func (cp *ControlPlane) openIdentity() error {
	td, err := spiffeid.TrustDomainFromString(cp.opts.Mesh.TrustDomain)
	if cp.opts.Mesh.TrustDomain == "" {
		td, err = spiffeid.TrustDomainFromString(ca.DefaultTrustDomain)
	}
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	dir := cp.opts.DataDir
	if dir == "" {
		// An in-memory control plane still needs a CA; it lives as long
		// as the process.
		if dir, err = os.MkdirTemp("", "amime-ca-"); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
		cp.tmpDir = dir
	}
	cp.ca, err = ca.Open(dir, cp.opts.CADir, ca.Options{TrustDomain: td, DefaultTTL: cp.opts.CertTTL, Logger: cp.log.With("component", "ca")})
	if err != nil {
		return err
	}
	if cp.tokens, err = identity.LoadOrCreateTokens(dir, td); err != nil {
		return err
	}
	if cp.secureLn, err = net.Listen("tcp", cp.opts.SecureXDSAddr); err != nil {
		return fmt.Errorf("secure xds listener: %w", err)
	}
	return nil
}

// CA returns the control plane's CA (nil without the TLS port).
func (cp *ControlPlane) CA() *ca.CA { return cp.ca }

// Tokens returns the join-token issuer (nil without the TLS port).
func (cp *ControlPlane) Tokens() *identity.Tokens { return cp.tokens }

// SecureXDSAddr returns the bound TLS xDS address ("" when disabled).
func (cp *ControlPlane) SecureXDSAddr() string {
	if cp.secureLn == nil {
		return ""
	}
	return cp.secureLn.Addr().String()
}

// secureServer is the gRPC server of the TLS port: ADS and Istio's
// certificate service, both for authenticated proxies only.
func (cp *ControlPlane) secureServer(ctx context.Context) *grpc.Server {
	authn := &identity.Authenticator{
		Tokens: cp.tokens, Bundle: cp.ca.X509Bundle(), TD: cp.ca.TrustDomain(),
		CheckNode: checkNode, Log: cp.log.With("component", "xds-auth"),
	}
	creds := credentials.NewTLS(&tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cp.servingCert().get,
		// A proxy renewing may present its SVID; a new one has only its
		// token. Authenticator checks whichever it gets.
		ClientAuth: tls.RequestClientCert,
	})
	g := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(authn.UnaryInterceptor()), grpc.StreamInterceptor(authn.StreamInterceptor()))
	cp.xds.Register(ctx, g)
	securityapi.RegisterIstioCertificateServiceServer(g, &identity.CertificateService{CA: cp.ca})
	return g
}

// checkNode refuses a node claiming a namespace or service account other
// than the authenticated identity's: its configuration (and the identity
// its listeners present) would be another workload's.
func checkNode(id spiffeid.ID, node *corev3.Node) error {
	p, err := ProxyFromNode(node, translate.Mesh{})
	if err != nil {
		return err
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	want := fmt.Sprintf("/ns/%s/sa/%s", p.Namespace, sa)
	if id.Path() != want {
		return fmt.Errorf("authenticated as %s, but the node says namespace %q, service account %q", id, p.Namespace, sa)
	}
	return nil
}

// servingCert issues the TLS port's certificate and renews it at half life.
type servingCertSource struct {
	cp   *ControlPlane
	mu   sync.Mutex
	cert *tls.Certificate
	at   time.Time
	root *x509.Certificate // the CA certificate that issued cert
}

func (cp *ControlPlane) servingCert() *servingCertSource { return &servingCertSource{cp: cp} }

func (s *servingCertSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A rotated root gets a new certificate at once: after the old root
	// is retired, proxies would no longer trust one it signed.
	root := s.cp.ca.Certificate()
	if s.cert != nil && time.Now().Before(s.at) && s.root == root {
		return s.cert, nil
	}
	names := s.cp.opts.ServerNames
	if len(names) == 0 {
		names = []string{"istiod.istio-system.svc", "localhost"}
	}
	var ips []net.IP
	if host, _, err := net.SplitHostPort(s.cp.SecureXDSAddr()); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			ips = append(ips, ip)
		}
	}
	ips = append(ips, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	id, err := spiffeid.FromSegments(s.cp.ca.TrustDomain(), "ns", "istio-system", "sa", "istiod")
	if err != nil {
		return nil, err
	}
	cert, err := s.cp.ca.IssueServing(id, names, ips, 0)
	if err != nil {
		return nil, err
	}
	s.cert, s.at, s.root = cert, ca.RenewAt(cert.Leaf, time.Now()), root
	return cert, nil
}

// rootSecret is the SDS secret ROOTCA, the mesh trust bundle, that proxies
// with a certificate subscribe to: a root rotation reaches them at once,
// not at their next renewal. Built once per bundle.
func (cp *ControlPlane) rootSecret() (*server.Set, error) {
	bundle := cp.ca.Bundle()
	cp.rootMu.Lock()
	defer cp.rootMu.Unlock()
	if cp.rootSet != nil && bytes.Equal(cp.rootPEM, bundle) {
		return cp.rootSet, nil
	}
	sec := &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bundle}},
	}}}
	set, err := server.NewSet(resourcev3.SecretType, []types.Resource{sec})
	if err != nil {
		return nil, err
	}
	cp.rootSet, cp.rootPEM = set, bundle
	return set, nil
}

// rotateRoot and retireOld change the CA's roots, reissue the control
// plane's own certificate and push the new bundle to every proxy.
func (a *api) caRotate(w http.ResponseWriter, r *http.Request) {
	if a.ca == nil {
		writeStatus(w, http.StatusNotFound, "NotFound", "this control plane has no CA (start it with --secure-xds-addr)")
		return
	}
	var err error
	op := r.PathValue("op")
	switch op {
	case "rotate-root":
		err = a.ca.RotateRoot()
	case "retire-old":
		err = a.ca.RetireOld()
	default:
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("unknown CA operation %q (rotate-root, retire-old)", op))
		return
	}
	if errors.Is(err, ca.ErrPluginCA) {
		writeStatus(w, http.StatusConflict, "Conflict", err.Error())
		return
	}
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	a.push("ca")
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(a.ca.Bundle())
}

// tokenRequest is the body of POST /apis/amime.io/v1/tokens.
type tokenRequest struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	TTL            string `json:"ttl,omitempty"`
}

// tokenResponse answers it: the token, the identity it is good for, and
// the trust bundle the proxy verifies the control plane with.
type tokenResponse struct {
	Token    string `json:"token"`
	Identity string `json:"identity"`
	Expires  string `json:"expires"`
	RootCert string `json:"rootCert"`
}

func (a *api) createToken(w http.ResponseWriter, r *http.Request) {
	if a.tokens == nil {
		writeStatus(w, http.StatusNotFound, "NotFound", "this control plane has no CA (start it with --secure-xds-addr)")
		return
	}
	var req tokenRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", "body: "+err.Error())
		return
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.ServiceAccount == "" {
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", "serviceAccount: required")
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			writeStatus(w, http.StatusUnprocessableEntity, "Invalid", fmt.Sprintf("ttl: %q is not a positive duration", req.TTL))
			return
		}
	}
	tok, id, err := a.tokens.Create(req.Namespace, req.ServiceAccount, ttl)
	if err != nil {
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", err.Error())
		return
	}
	if ttl == 0 {
		ttl = identity.DefaultTokenTTL
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(tokenResponse{Token: tok, Identity: id.String(),
		Expires: time.Now().Add(ttl).UTC().Format(time.RFC3339), RootCert: string(a.ca.Bundle())})
}

func (a *api) rootCert(w http.ResponseWriter, _ *http.Request) {
	if a.ca == nil {
		writeStatus(w, http.StatusNotFound, "NotFound", "this control plane has no CA (start it with --secure-xds-addr)")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(a.ca.Bundle())
}
