package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/controlplane"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

func defaultDataDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".amime")
	}
	return ".amime"
}

func newControlPlaneCmd() *cobra.Command {
	var (
		opts         controlplane.Options
		registryOnly bool
		inMemory     bool
		meshConfig   string
	)
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "Run the control plane: Istio config in, xDS out",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inMemory {
				opts.DataDir = ""
			}
			if registryOnly {
				opts.Mesh.OutboundTrafficPolicy = translate.RegistryOnly
			}
			if meshConfig != "" {
				if err := loadMeshConfig(meshConfig, cmd.Flags(), &opts.Mesh); err != nil {
					return err
				}
			}
			opts.Log = slog.Default().With("component", "control-plane")
			cp, err := controlplane.New(opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "amime control plane: xDS on %s (TLS: %s), API on http://%s, console %s\n", cp.XDSAddr(), orNone(cp.SecureXDSAddr()), cp.APIAddr(), orNone(consoleURL(cp.ConsoleAddr())))
			return cp.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data-dir", envOr("AMIME_DATA_DIR", defaultDataDir()), "where applied configuration is kept")
	f.BoolVar(&inMemory, "in-memory", false, "keep configuration in memory only")
	f.StringVar(&opts.ConfigDir, "config-dir", "", "directory of Istio YAML kept in sync into the store (GitOps; read-only source)")
	f.StringVar(&opts.XDSAddr, "xds-addr", "127.0.0.1:15010", "ADS (gRPC, plaintext) listen address")
	f.StringVar(&opts.SecureXDSAddr, "secure-xds-addr", "127.0.0.1:15012", "ADS and certificate service over TLS, for proxies with a join token (empty disables it)")
	f.StringVar(&opts.CADir, "ca-dir", "", "operator CA in Istio's plug-in files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); default: a self-signed root under --data-dir")
	f.DurationVar(&opts.CertTTL, "workload-cert-ttl", 24*time.Hour, "workload certificate lifetime when a proxy does not ask for one (at most 90 days)")
	f.StringVar(&opts.APIAddr, "api-addr", "127.0.0.1:15014", "HTTP API, /metrics and /debug listen address")
	f.StringVar(&opts.ConsoleAddr, "console-addr", "127.0.0.1:20001", "the console (amime dashboard): service graph, traces, proxies; empty disables it (loopback only: it has no login)")
	f.StringVar(&opts.PrometheusURL, "prometheus-url", "", "Prometheus the console reads metrics from (default: it scrapes the proxies itself)")
	f.StringVar(&opts.Token, "api-token", os.Getenv("AMIME_TOKEN"), "bearer token required on the API (mandatory off loopback)")
	f.StringVar(&opts.Mesh.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	f.BoolVar(&registryOnly, "registry-only", false, "outboundTrafficPolicy REGISTRY_ONLY (default ALLOW_ANY)")
	f.StringVar(&meshConfig, "mesh-config", "", "Istio MeshConfig file (the istio ConfigMap's \"mesh\" key, or the ConfigMap): trustDomain, rootNamespace, outboundTrafficPolicy, defaultHttpRetryPolicy, accessLogFile/Encoding/Format, extensionProviders, defaultProviders, defaultConfig.tracing.sampling")
	f.DurationVar(&opts.Debounce, "debounce", 100*time.Millisecond, "wait for changes to settle this long before pushing")
	f.DurationVar(&opts.UnhealthyAfter, "unhealthy-after", 15*time.Second, "a registered workload without heartbeat this long gets no traffic")
	f.DurationVar(&opts.RemoveAfter, "remove-after", 60*time.Second, "a registered workload without heartbeat this long is removed")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func consoleURL(addr string) string {
	if addr == "" {
		return ""
	}
	return "http://" + addr + "/"
}
