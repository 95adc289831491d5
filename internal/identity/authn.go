package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authenticator establishes who is calling the TLS xDS port: a join token
// in `authorization: Bearer <token>` (as Istio's agents send their
// ServiceAccount token), or a client certificate that is a valid SVID of
// the mesh (a proxy renewing with the certificate it holds).
type Authenticator struct {
	Tokens *Tokens
	// Bundle verifies client certificates; nil disables that method.
	Bundle x509bundle.Source
	TD     spiffeid.TrustDomain
	// CheckNode, when set, refuses an xDS stream whose node claims an
	// identity other than the authenticated one.
	CheckNode func(id spiffeid.ID, node *corev3.Node) error
	Log       *slog.Logger
}

type ctxKey struct{}

// FromContext returns the identity the interceptors established.
func FromContext(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(ctxKey{}).(spiffeid.ID)
	return id, ok
}

// Authenticate returns the caller's identity.
func (a *Authenticator) Authenticate(ctx context.Context) (spiffeid.ID, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			scheme, tok, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, "bearer") || a.Tokens == nil {
				continue
			}
			id, err := a.Tokens.Verify(strings.TrimSpace(tok))
			if err != nil {
				return spiffeid.ID{}, err
			}
			return id, nil
		}
	}
	if p, ok := peer.FromContext(ctx); ok && a.Bundle != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			return a.verifyCert(ti.State)
		}
	}
	return spiffeid.ID{}, errors.New("no credentials: send a join token (authorization: Bearer) or a client SVID")
}

func (a *Authenticator) verifyCert(cs tls.ConnectionState) (spiffeid.ID, error) {
	id, _, err := x509svid.Verify(cs.PeerCertificates, a.Bundle)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("client certificate: %w", err)
	}
	if id.TrustDomain() != a.TD {
		return spiffeid.ID{}, fmt.Errorf("client certificate: %s is not in trust domain %s", id, a.TD)
	}
	return id, nil
}

func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	id, err := a.Authenticate(ctx)
	if err != nil {
		addr := ""
		if p, ok := peer.FromContext(ctx); ok {
			addr = p.Addr.String()
		}
		a.log().Warn("refused unauthenticated call", "method", method, "peer", addr, "err", err)
		return nil, status.Errorf(codes.Unauthenticated, "authentication failed: %v", err)
	}
	return context.WithValue(ctx, ctxKey{}, id), nil
}

func (a *Authenticator) log() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// UnaryInterceptor authenticates every unary call.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := a.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor authenticates every stream and checks the node of
// discovery requests against the identity.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		id, _ := FromContext(ctx)
		as := &authedStream{ServerStream: ss, ctx: ctx, id: id, a: a}
		err = h(srv, as)
		if as.denied != nil {
			// The xDS server ends the stream on a receive error without
			// passing it on: answer with the refusal itself.
			return as.denied
		}
		return err
	}
}

type authedStream struct {
	grpc.ServerStream
	ctx     context.Context
	id      spiffeid.ID
	a       *Authenticator
	checked bool
	denied  error
}

func (s *authedStream) Context() context.Context { return s.ctx }

func (s *authedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.checked || s.a.CheckNode == nil {
		return nil
	}
	var node *corev3.Node
	switch r := m.(type) {
	case *discoveryv3.DiscoveryRequest:
		node = r.GetNode()
	case *discoveryv3.DeltaDiscoveryRequest:
		node = r.GetNode()
	}
	if node == nil {
		return nil
	}
	s.checked = true
	if err := s.a.CheckNode(s.id, node); err != nil {
		s.a.log().Warn("refused xDS stream: node claims another identity", "authenticated", s.id.String(), "node", node.GetId(), "err", err)
		s.denied = status.Errorf(codes.PermissionDenied, "node %s: %v", node.GetId(), err)
		return s.denied
	}
	return nil
}
