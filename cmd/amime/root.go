package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "amime",
		Short:         "amime (網目) is a service mesh configured with Istio's API",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(strings.ToUpper(logLevel))); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	var sf serverFlags
	sf.register(root)
	root.AddCommand(newProxyCmd(&sf), newUpCmd(), newControlPlaneCmd(), newApplyCmd(&sf), newGetCmd(&sf), newDeleteCmd(&sf),
		newProxyStatusCmd(&sf), newProxyConfigCmd(&sf))
	return root
}

func newUpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Run the whole mesh on this machine: control plane, demo services with sidecars, gateway, dashboard",
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(cmd.OutOrStdout(), `amime up: the local mesh is not built yet.

What works today is the data plane:
  go run ./cmd/amime proxy --bootstrap examples/proxy/static.yaml

The control plane and the demo services that 'up' starts are being built
(see the project's issues); this command will start them when they land.
`)
			return fmt.Errorf("up: not available yet")
		},
	}
}
