package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type handshakeResult struct {
	peer spiffeid.ID // what PeerID reported after the handshake
	seen spiffeid.ID // what the authorize callback was given
	err  error
}

// mtlsPair runs a real TLS handshake over 127.0.0.1 between a server and a client, each with
// its own SVID and trust bundle, and exchanges one byte so TLS 1.3's deferred client-auth
// failure surfaces on both sides.
func mtlsPair(t *testing.T, td spiffeid.TrustDomain, serverCert, clientCert tls.Certificate,
	serverBundle, clientBundle x509bundle.Source, clientAuthorize func(spiffeid.ID) error, clientMaxVersion uint16) (server, client handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan handshakeResult, 1)
	go func() {
		var res handshakeResult
		defer func() { done <- res }()
		raw, err := ln.Accept()
		if err != nil {
			res.err = err
			return
		}
		defer raw.Close()
		cfg := ServerConfig(func() (*tls.Certificate, error) { return &serverCert, nil }, td, serverBundle,
			func(id spiffeid.ID) error { res.seen = id; return nil })
		conn := tls.Server(raw, cfg)
		if res.err = conn.HandshakeContext(ctx); res.err != nil {
			return
		}
		if res.peer, res.err = PeerID(conn.ConnectionState()); res.err != nil {
			return
		}
		_, res.err = conn.Write([]byte{1})
	}()

	func() {
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			client.err = err
			return
		}
		defer raw.Close()
		cfg := ClientConfig(func() (*tls.Certificate, error) { return &clientCert, nil }, td, clientBundle,
			func(id spiffeid.ID) error {
				client.seen = id
				if clientAuthorize != nil {
					return clientAuthorize(id)
				}
				return nil
			})
		cfg.MaxVersion = clientMaxVersion
		conn := tls.Client(raw, cfg)
		if client.err = conn.HandshakeContext(ctx); client.err != nil {
			return
		}
		if client.peer, client.err = PeerID(conn.ConnectionState()); client.err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, client.err = conn.Read(make([]byte, 1))
	}()
	return <-done, client
}

func TestMTLSHandshake(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	const serverID = "spiffe://cluster.local/ns/shop/sa/preference"
	const clientID = "spiffe://cluster.local/ns/shop/sa/customer"
	mesh := newTestCA(t, Options{})
	otherCA := newTestCA(t, Options{}) // same trust domain, different root: an impostor
	foreignTD := spiffeid.RequireTrustDomainFromString("other.org")
	foreign := newTestCA(t, Options{TrustDomain: foreignTD})

	// A bundle that trusts both meshes' roots: only the trust-domain check stops the
	// foreign workload.
	bothRoots := x509bundle.FromX509Authorities(td, append(parseChain(t, mesh.Bundle()), parseChain(t, foreign.Bundle())...))

	noURI := func() tls.Certificate {
		// A leaf from the mesh CA but without a SPIFFE ID: must still be refused.
		tmpl := &x509.Certificate{
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			DNSNames:    []string{"customer"},
		}
		leaf, key := testCert(t, tmpl, mesh.Certificate(), mesh.signer)
		return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}()

	tests := []struct {
		name         string
		serverCert   tls.Certificate
		clientCert   tls.Certificate
		serverBundle x509bundle.Source
		authorize    func(spiffeid.ID) error
		maxVersion   uint16 // client's; 0 = TLS 1.3
		wantServer   string // "" = success; else substring of the server's error
		wantClient   string
	}{
		{
			name:       "both from the mesh CA",
			serverCert: issueSVID(t, mesh, serverID),
			clientCert: issueSVID(t, mesh, clientID),
		},
		{
			name:       "both from the mesh CA over TLS 1.2",
			serverCert: issueSVID(t, mesh, serverID),
			clientCert: issueSVID(t, mesh, clientID),
			maxVersion: tls.VersionTLS12,
		},
		{
			name:       "client cert from another CA",
			serverCert: issueSVID(t, mesh, serverID),
			clientCert: issueSVID(t, otherCA, clientID),
			wantServer: "certificate signed by unknown authority",
			wantClient: "error",
		},
		{
			name:       "server cert from another CA",
			serverCert: issueSVID(t, otherCA, serverID),
			clientCert: issueSVID(t, mesh, clientID),
			wantServer: "error",
			wantClient: "certificate signed by unknown authority",
		},
		{
			name:         "client from another trust domain",
			serverCert:   issueSVID(t, mesh, serverID),
			clientCert:   issueSVID(t, foreign, "spiffe://other.org/ns/shop/sa/customer"),
			serverBundle: bothRoots,
			wantServer:   `from trust domain "other.org"`,
			wantClient:   "error",
		},
		{
			name:       "client cert without a SPIFFE ID",
			serverCert: issueSVID(t, mesh, serverID),
			clientCert: noURI,
			wantServer: "no URI SAN",
			wantClient: "error",
		},
		{
			name:       "client refuses an unexpected server identity",
			serverCert: issueSVID(t, mesh, serverID),
			clientCert: issueSVID(t, mesh, clientID),
			authorize: func(id spiffeid.ID) error {
				if id.String() != "spiffe://cluster.local/ns/shop/sa/recommendation" {
					return errors.New("unexpected server")
				}
				return nil
			},
			wantServer: "error",
			wantClient: "not authorized",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverBundle := tt.serverBundle
			if serverBundle == nil {
				serverBundle = mesh.X509Bundle()
			}
			srv, cli := mtlsPair(t, td, tt.serverCert, tt.clientCert, serverBundle, mesh.X509Bundle(), tt.authorize, tt.maxVersion)
			t.Logf("server err: %v; client err: %v", srv.err, cli.err)
			checkSide := func(side string, res handshakeResult, want, wantPeer string) {
				switch {
				case want == "" && res.err != nil:
					t.Errorf("%s: unexpected error: %v", side, res.err)
				case want == "":
					if res.peer.String() != wantPeer || res.seen.String() != wantPeer {
						t.Errorf("%s: peer = %q, authorize saw %q, want %q", side, res.peer, res.seen, wantPeer)
					}
				case res.err == nil:
					t.Errorf("%s: handshake succeeded, want error containing %q", side, want)
				case want != "error" && !strings.Contains(res.err.Error(), want):
					t.Errorf("%s: err = %v, want it to contain %q", side, res.err, want)
				}
			}
			checkSide("server", srv, tt.wantServer, clientID)
			checkSide("client", cli, tt.wantClient, serverID)
		})
	}
}

func TestTLSConfigMinimumVersion(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	b := x509bundle.New(td)
	get := func() (*tls.Certificate, error) { return nil, errors.New("unused") }
	for name, cfg := range map[string]*tls.Config{
		"server": ServerConfig(get, td, b, nil),
		"client": ClientConfig(get, td, b, nil),
	} {
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s MinVersion = %x, want TLS 1.2", name, cfg.MinVersion)
		}
	}
}
