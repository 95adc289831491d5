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
		newProxyStatusCmd(&sf), newProxyConfigCmd(&sf), newDemoServiceCmd(), newScaleCmd())
	root.AddCommand(newAnalyzeCmd(&sf), newTokenCmd(&sf), newCACmd(&sf), newDashboardCmd())
	root.AddCommand(newExplainCmd(&sf))
	return root
}
