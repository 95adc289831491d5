package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/demo"
	"github.com/amime-mesh/amime/internal/up"
)

func newUpCmd() *cobra.Command {
	var opts up.Options
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole mesh on this machine: control plane, the tutorial's services with sidecars, ingress gateway",
		Long: `Run the whole mesh on this machine, as separate processes supervised by this one:
the control plane, the Istio tutorial's demo application (customer → preference →
recommendation v1 and v2), each instance with its own sidecar, and an ingress gateway
on 127.0.0.1:8080. Ctrl-C stops everything; applied configuration is kept in --data-dir.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("locate the amime binary: %w", err)
			}
			opts.Binary = bin
			opts.Out = cmd.OutOrStdout()
			opts.Log = slog.Default().With("component", "up")
			return up.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data-dir", envOr("AMIME_DATA_DIR", defaultDataDir()), "configuration, logs and state")
	f.StringVar(&opts.XDSAddr, "xds-addr", "127.0.0.1:15010", "control plane xDS address")
	f.StringVar(&opts.SecureXDSAddr, "secure-xds-addr", "127.0.0.1:15012", "control plane TLS xDS and CA address (proxies get certificates and speak mTLS)")
	f.StringVar(&opts.APIAddr, "api-addr", "127.0.0.1:15014", "control plane API address")
	f.StringVar(&opts.ConsoleAddr, "console-addr", "127.0.0.1:20001", "the console (service graph, traces, proxies)")
	f.StringVar(&opts.ControlAddr, "control-addr", "127.0.0.1:15015", "address `amime scale` talks to")
	f.StringToIntVar(&opts.Replicas, "replicas", nil, "instances per deployment, e.g. recommendation-v2=2")
	return cmd
}

func newDemoServiceCmd() *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:    "demo-service",
		Short:  "Run one service of the tutorial's demo application (used by `amime up`)",
		Hidden: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.Default().With("service", cfg.Service)
			s, err := demo.New(cfg)
			if err != nil {
				return err
			}
			return s.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Service, "service", "", "customer, preference or recommendation")
	f.StringVar(&cfg.Version, "version", "v1", "version label the service reports")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "listen address")
	f.StringVar(&cfg.InstanceID, "instance-id", "", "instance name it reports (default random)")
	f.StringVar(&cfg.Upstream, "upstream", "", "URL of the service it calls (default the tutorial's, by service name)")
	return cmd
}

func newScaleCmd() *cobra.Command {
	var (
		replicas int
		ctl      string
	)
	cmd := &cobra.Command{
		Use:     "scale DEPLOYMENT --replicas N",
		Short:   "Change the number of instances of a deployment in a running `amime up`",
		Example: "  amime scale recommendation-v2 --replicas 2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{"deployment": {args[0]}, "replicas": {fmt.Sprint(replicas)}}
			resp, err := http.Post("http://"+ctl+"/scale?"+q.Encode(), "text/plain", nil)
			if err != nil {
				return fmt.Errorf("is `amime up` running? %w", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s", strings.TrimSpace(string(b)))
			}
			fmt.Fprint(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 1, "instances")
	cmd.Flags().StringVar(&ctl, "control-addr", "127.0.0.1:15015", "the control address of `amime up`")
	_ = cmd.MarkFlagRequired("replicas")
	return cmd
}
