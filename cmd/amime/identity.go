package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/amime-mesh/amime/internal/proxy/agent"
)

// identityFlags give a proxy its workload identity: a join token for the
// control plane's TLS port, which also signs its certificate.
type identityFlags struct {
	tokenFile   string
	rootCert    string
	caAddr      string
	serverName  string
	trustDomain string
	certTTL     time.Duration
}

func (f *identityFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.tokenFile, "token-file", "", "join token file (amime token create): the proxy connects to the TLS xDS port with it, gets a workload certificate and speaks mTLS")
	fs.StringVar(&f.rootCert, "root-cert", "", "PEM file of the mesh root the control plane's certificate is verified with (with --token-file)")
	fs.StringVar(&f.caAddr, "ca-addr", "", "the control plane's certificate service host:port (default: the --xds address)")
	fs.StringVar(&f.serverName, "xds-server-name", agent.DefaultServerName, "name the control plane's TLS certificate is checked for")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the workload identity")
	fs.DurationVar(&f.certTTL, "cert-ttl", 0, "workload certificate lifetime to ask for (default: the CA's, 24h); renewed at half life")
}

func (f *identityFlags) agent(m *nodeMeta, xdsAddr string) (*agent.Agent, error) {
	if f.rootCert == "" {
		return nil, fmt.Errorf("--token-file needs --root-cert (the mesh root, from amime token create)")
	}
	root, err := os.ReadFile(f.rootCert)
	if err != nil {
		return nil, fmt.Errorf("--root-cert: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(f.trustDomain)
	if err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	sa := m.serviceAccount
	if sa == "" {
		sa = "default"
	}
	id, err := spiffeid.FromSegments(td, "ns", m.namespace, "sa", sa)
	if err != nil {
		return nil, fmt.Errorf("workload identity (--namespace, --service-account): %w", err)
	}
	addr := f.caAddr
	if addr == "" {
		addr = xdsAddr
	}
	path := f.tokenFile
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	return agent.New(agent.Options{
		Addr: addr, RootCert: root, ServerName: f.serverName, ID: id, TTL: f.certTTL,
		Log: slog.Default().With("component", "agent"),
		Token: func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		},
	})
}
