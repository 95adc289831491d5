package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/proxy"
	"github.com/amime-mesh/amime/internal/proxy/bootstrap"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
	"github.com/amime-mesh/amime/internal/register"
)

func newProxyCmd(sf *serverFlags) *cobra.Command {
	var (
		bootstrapFile string
		opts          proxy.Options
		mode          string
		nodeID        string
		serviceNode   string
		meta          nodeMeta
		doRegister    bool
		workloadName  string
		logFormat     string
		id            identityFlags
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the data plane (sidecar or gateway), configured by xDS or a static Envoy bootstrap",
		Long: `Run the amime proxy. Configuration is Envoy's v3 API: a bootstrap file
(--bootstrap, YAML or JSON, static_resources and/or an ADS config source) or an
ADS server (--xds host:port). Fields and filters amime does not implement are
refused with their path, never ignored.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bootstrapFile == "" && opts.XDSAddr == "" {
				return fmt.Errorf("one of --bootstrap or --xds is required")
			}
			if mode != "sidecar" && mode != "gateway" {
				return fmt.Errorf("--mode: want sidecar or gateway, got %q", mode)
			}
			b := &bootstrapv3.Bootstrap{}
			if bootstrapFile != "" {
				var err error
				if b, err = bootstrap.Load(bootstrapFile); err != nil {
					return err
				}
			}
			if b.Node == nil {
				b.Node = &corev3.Node{}
			}
			if nodeID != "" {
				b.Node.Id = nodeID
			}
			if b.Node.Id == "" {
				host, _ := os.Hostname()
				b.Node.Id = mode + "~" + host + "~" + fmt.Sprint(os.Getpid())
			}
			if serviceNode != "" {
				b.Node.Cluster = serviceNode
			}
			if id.tokenFile != "" {
				if opts.XDSAddr == "" && id.caAddr == "" {
					return fmt.Errorf("--token-file needs --xds (the control plane's TLS port, 15012) or --ca-addr")
				}
				a, err := id.agent(&meta, opts.XDSAddr)
				if err != nil {
					return err
				}
				opts.Agent = a
				meta.mtls = true
			}
			meta.prometheusAddr = opts.PrometheusAddr
			if err := meta.apply(b.Node); err != nil {
				return err
			}
			opts.Bootstrap = b
			// Under a control plane, access logs are its configuration's
			// (meshConfig accessLogFile, the Telemetry API), as in Istio;
			// --access-log adds a proxy-wide log on top.
			var err error
			if opts.AccessLogFormat, err = telemetry.ParseFormat(logFormat); err != nil {
				return fmt.Errorf("--access-log-format: %w", err)
			}
			opts.Log = slog.Default().With("component", "proxy")
			runCtx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			opts.Quit = cancel // POST /quitquitquit
			p, err := proxy.New(opts)
			if err != nil {
				return err
			}
			if !doRegister {
				return p.Run(runCtx)
			}
			ro, err := meta.registration(workloadName, sf.client())
			if err != nil {
				return err
			}
			ro.Log = slog.Default().With("component", "register")
			regErr := make(chan error, 1)
			go func() { regErr <- register.Run(runCtx, ro) }()
			runErr := p.Run(runCtx)
			cancel()
			if err := <-regErr; err != nil && runErr == nil {
				runErr = err
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&bootstrapFile, "bootstrap", "", "Envoy v3 bootstrap file (YAML or JSON)")
	f.StringVar(&opts.XDSAddr, "xds", "", "ADS server address host:port (overrides the bootstrap's ads_config)")
	f.BoolVar(&opts.Delta, "delta", false, "use incremental (delta) xDS")
	f.StringVar(&mode, "mode", "sidecar", "sidecar or gateway")
	f.StringVar(&nodeID, "node-id", "", "xDS node id (default: MODE~HOSTNAME~PID)")
	f.StringVar(&serviceNode, "service-cluster", "", "xDS node cluster")
	meta.register(f)
	f.BoolVar(&doRegister, "register", false, "register the workload with the control plane (a WorkloadEntry kept alive by heartbeats, removed on stop)")
	f.StringVar(&workloadName, "workload-name", "", "name of the WorkloadEntry --register creates (default: APP-VERSION-HOSTNAME-PID from --labels)")
	f.StringVar(&opts.AdminAddr, "admin-addr", "", "admin listener address (default: the bootstrap's admin address; none if unset)")
	f.StringVar(&opts.HealthAddr, "health-addr", "", "health endpoint address serving /healthz/ready (Istio uses :15021); empty disables it")
	f.StringVar(&opts.PrometheusAddr, "prometheus-addr", "", "address serving /stats/prometheus (Istio uses :15090); empty disables it")
	f.BoolVar(&opts.NoMetrics, "no-metrics", false, "do not record Istio's standard request metrics (istio_requests_total, …)")
	f.StringVar(&opts.AccessLog, "access-log", "", "proxy-wide request log in Istio's format: stdout, a file path, or off (default off; under a control plane, meshConfig accessLogFile and Telemetry configure access logs)")
	f.StringVar(&logFormat, "access-log-format", "json", "access log format: json (Istio's JSON fields) or text (Envoy's default line)")
	id.register(f)
	f.DurationVar(&opts.DrainDuration, "drain-duration", 5*time.Second, "on SIGTERM, how long in-flight requests may take before connections are closed")
	return cmd
}
