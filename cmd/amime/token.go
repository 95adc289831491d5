package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCmd(sf *serverFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Workload join tokens (identity for proxies outside Kubernetes)"}
	var (
		ns, sa, outDir string
		ttl            time.Duration
	)
	create := &cobra.Command{
		Use:   "create --sa NAME [-n NAMESPACE]",
		Short: "Issue a join token: the proxy of that service account gets its certificate and config with it",
		Long: `Issue a join token for spiffe://<trust-domain>/ns/<namespace>/sa/<name>.
A proxy started with --token-file (and --root-cert, the mesh root) connects to
the control plane's TLS port (15012), obtains a certificate for exactly that
identity and speaks mTLS. Without --out-dir the token is printed; with it,
DIR/token and DIR/root-cert.pem are written (mode 0600 / 0644).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sa == "" {
				return fmt.Errorf("--sa is required")
			}
			t, err := sf.client().CreateToken(cmd.Context(), ns, sa, ttl)
			if err != nil {
				return err
			}
			if outDir == "" {
				fmt.Fprintln(cmd.OutOrStdout(), t.Token)
				fmt.Fprintf(cmd.ErrOrStderr(), "token for %s, expires %s\n", t.Identity, t.Expires)
				return nil
			}
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(outDir, "token"), []byte(t.Token+"\n"), 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(outDir, "root-cert.pem"), []byte(t.RootCert), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s for %s (expires %s)\n", filepath.Join(outDir, "token"), filepath.Join(outDir, "root-cert.pem"), t.Identity, t.Expires)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&sa, "sa", "", "service account")
	f.StringVarP(&ns, "namespace", "n", "default", "namespace")
	f.DurationVar(&ttl, "ttl", 0, "token lifetime (default 720h)")
	f.StringVar(&outDir, "out-dir", "", "write token and root-cert.pem here instead of printing the token")
	cmd.AddCommand(create)
	return cmd
}
