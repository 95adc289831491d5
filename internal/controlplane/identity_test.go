package controlplane

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/ca"
	"github.com/amime-mesh/amime/internal/proxy/agent"
)

// startSecureCP runs a control plane with its TLS port and CA.
func startSecureCP(t *testing.T) (*ControlPlane, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", SecureXDSAddr: "127.0.0.1:0",
		DataDir: t.TempDir(), Debounce: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	return cp, logs
}

func newAgent(t *testing.T, cp *ControlPlane, root []byte, id string, token string) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Options{Addr: cp.SecureXDSAddr(), RootCert: root, ID: spiffeid.RequireFromString(id),
		Token: func() (string, error) { return token, nil }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestJoinTokenCertificateAndSecureXDS(t *testing.T) {
	cp, logs := startSecureCP(t)
	cli := apiclient.New("http://"+cp.APIAddr(), "")
	ctx := context.Background()
	tok, err := cli.CreateToken(ctx, "shop", "reviews", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Identity != "spiffe://cluster.local/ns/shop/sa/reviews" {
		t.Fatalf("identity = %q", tok.Identity)
	}

	// The agent gets a certificate for its identity over the TLS port,
	// verifying the control plane with the root from the token answer.
	a := newAgent(t, cp, []byte(tok.RootCert), tok.Identity, tok.Token)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(actx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("no certificate; logs:\n%s", logs)
	}
	leaf := a.Leaf()
	if got := leaf.URIs[0].String(); got != tok.Identity {
		t.Fatalf("certificate for %s, want %s", got, tok.Identity)
	}
	if ttl := leaf.NotAfter.Sub(leaf.NotBefore); ttl < 23*time.Hour || ttl > 25*time.Hour {
		t.Errorf("certificate lifetime %s, want the 24h default", ttl)
	}
	roots, err := a.Roots(agent.RootSecret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify against the served bundle: %v", err)
	}

	// ADS over the TLS port with the token: a node matching the identity
	// gets configuration; one claiming another namespace is refused.
	node := func(ns, sa string) *corev3.Node {
		return &corev3.Node{Id: "sidecar~127.0.0.1~x." + ns + "~cluster.local", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			MetaNamespace: structpb.NewStringValue(ns), MetaServiceAccount: structpb.NewStringValue(sa)}}}
	}
	conn, err := grpc.NewClient(cp.SecureXDSAddr(), a.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads := func(n *corev3.Node) error {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		if err != nil {
			return err
		}
		if err := s.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resourcev3.ClusterType}); err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	if err := ads(node("shop", "reviews")); err != nil {
		t.Fatalf("ADS as the token's identity: %v", err)
	}
	err = ads(node("payments", "reviews"))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `namespace "payments"`) {
		t.Fatalf("ADS as another namespace: %v, want PermissionDenied naming it", err)
	}

	// A CSR naming another identity is refused and logged.
	_, csr, err := ca.NewKeyAndCSR("spiffe://cluster.local/ns/shop/sa/admin")
	if err != nil {
		t.Fatal(err)
	}
	_, err = securityapi.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &securityapi.IstioCertificateRequest{Csr: string(csr)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CSR for another identity: %v, want PermissionDenied", err)
	}
	if !strings.Contains(logs.String(), "refused certificate for another identity") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
}

func TestSecurePortRefusesBadCredentials(t *testing.T) {
	cp, _ := startSecureCP(t)
	cli := apiclient.New("http://"+cp.APIAddr(), "")
	tok, err := cli.CreateToken(context.Background(), "default", "web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A token signed by another control plane's key.
	other, _ := startSecureCP(t)
	foreign, err := apiclient.New("http://"+other.APIAddr(), "").CreateToken(context.Background(), "default", "web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tampered := tok.Token[:len(tok.Token)-4] + "AAAA"
	for name, token := range map[string]string{"foreign": foreign.Token, "tampered": tampered, "garbage": "not-a-jwt"} {
		t.Run(name, func(t *testing.T) {
			a := newAgent(t, cp, []byte(tok.RootCert), tok.Identity, token)
			conn, err := grpc.NewClient(cp.SecureXDSAddr(), a.DialOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, csr, _ := ca.NewKeyAndCSR(tok.Identity)
			_, err = securityapi.NewIstioCertificateServiceClient(conn).CreateCertificate(context.Background(), &securityapi.IstioCertificateRequest{Csr: string(csr)})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("CreateCertificate with a %s token: %v, want Unauthenticated", name, err)
			}
		})
	}
	// The agent refuses a control plane whose certificate another root
	// signed (here: the other control plane's root).
	a := newAgent(t, cp, []byte(foreign.RootCert), tok.Identity, tok.Token)
	conn, err := grpc.NewClient(cp.SecureXDSAddr(), a.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, csr, _ := ca.NewKeyAndCSR(tok.Identity)
	_, err = securityapi.NewIstioCertificateServiceClient(conn).CreateCertificate(context.Background(), &securityapi.IstioCertificateRequest{Csr: string(csr)})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("against an untrusted control plane: %v, want a TLS failure", err)
	}
}
