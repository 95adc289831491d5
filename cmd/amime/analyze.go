package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/analyze"
	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/config"
)

func newAnalyzeCmd(sf *serverFlags) *cobra.Command {
	var (
		files            []string
		useServer        bool
		namespace        string
		allNamespaces    bool
		output           string
		failureThreshold string
		outputThreshold  string
	)
	cmd := &cobra.Command{
		Use:   "analyze [-f FILE|DIR|-]",
		Short: "Find mistakes in Istio configuration, on the control plane and in files (like istioctl analyze)",
		Long: `Analyze the configuration on the control plane, optionally merged with local
files (-f: analyzed as if applied over the server's state), and report
problems the config store accepts but that break or silently drop traffic:
unknown subsets and hosts, shadowed routes, subsets and gateway selectors
that select nothing, unknown gateways, conflicting VirtualServices and
Gateways, and validation errors in files.

Findings are reported for the namespace given by -n (default "default"), or
every namespace with -A, plus every resource of the -f files; references are
resolved across all namespaces. The exit status is non-zero when a finding
reaches --failure-threshold.`,
		Example: `  amime analyze
  amime analyze -A -o json
  amime analyze -f examples/routing/ -n shop
  amime analyze --use-server=false -f vs.yaml -f dr.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace != "" && allNamespaces {
				return fmt.Errorf("-n and -A are exclusive")
			}
			if !useServer && len(files) == 0 {
				return fmt.Errorf("--use-server=false needs -f: there is nothing else to analyze")
			}
			switch output {
			case "text", "json":
			default:
				return fmt.Errorf("-o: want text or json, got %q", output)
			}
			failAt, err := analyze.ParseLevel(failureThreshold)
			if err != nil {
				return fmt.Errorf("--failure-threshold: %w", err)
			}
			showAt, err := analyze.ParseLevel(outputThreshold)
			if err != nil {
				return fmt.Errorf("--output-threshold: %w", err)
			}
			ns := namespace
			if ns == "" {
				ns = config.DefaultNamespace
			}

			var fileObjs []*config.Object
			var fileFindings []analyze.Finding
			if len(files) > 0 {
				docs, err := readManifests(files, cmd.InOrStdin())
				if err != nil {
					return err
				}
				fileObjs, fileFindings = analyze.DecodeManifests(docs, ns)
			}
			in := analyze.Input{}
			var serverObjs []*config.Object
			if useServer {
				c := sf.client()
				if serverObjs, err = listAll(cmd.Context(), c); err != nil {
					return err
				}
				in.GatewayProxies, in.GatewayLabelsKnown = gatewayProxies(cmd.Context(), c)
			}
			var fromFile map[config.Key]bool
			in.Objects, fromFile = analyze.Merge(serverObjs, fileObjs, time.Now())

			// Decoding problems of the files are always in scope.
			inScope := fileFindings
			for _, f := range analyze.Analyze(in) {
				k := config.Key{Kind: f.Kind, Namespace: f.Namespace, Name: f.Name}
				if allNamespaces || f.Namespace == ns || fromFile[k] {
					inScope = append(inScope, f)
				}
			}
			var shown []analyze.Finding
			failed := false
			for _, f := range inScope {
				if f.Level >= failAt {
					failed = true
				}
				if f.Level >= showAt {
					shown = append(shown, f)
				}
			}
			analyze.Sort(shown)

			scope := "namespace: " + ns
			if allNamespaces {
				scope = "all namespaces"
			}
			if err := printFindings(cmd.OutOrStdout(), shown, output, scope); err != nil {
				return err
			}
			if failed {
				return fmt.Errorf("analyzers found issues at level %s or above when analyzing %s", failAt, scope)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to analyze as if applied (repeatable)")
	f.BoolVar(&useServer, "use-server", true, "merge the files with the control plane's configuration; false analyzes the files alone")
	f.StringVarP(&namespace, "namespace", "n", "", "namespace to report on, and of file resources that name none (default \"default\")")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "report on every namespace")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.StringVar(&failureThreshold, "failure-threshold", "Error", "lowest level that makes the exit status non-zero: Error, Warning or Info")
	f.StringVar(&outputThreshold, "output-threshold", "Info", "lowest level reported: Error, Warning or Info")
	return cmd
}

// listAll reads every kind in every namespace: references cross namespaces
// (Gateways in istio-system, mesh-wide DestinationRules) even when one
// namespace is reported.
func listAll(ctx context.Context, c *apiclient.Client) ([]*config.Object, error) {
	var out []*config.Object
	for _, k := range config.Kinds() {
		objs, err := c.List(ctx, k, "")
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", k.Plural, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// gatewayProxies reads the connected gateway proxies from
// /debug/proxy-status; on failure their labels are unknown and the
// analyzer says it could not check Gateway selectors.
func gatewayProxies(ctx context.Context, c *apiclient.Client) ([]analyze.GatewayProxy, bool) {
	data, err := c.GetRaw(ctx, "/debug/proxy-status")
	if err == nil {
		var gps []analyze.GatewayProxy
		var known bool
		if gps, known, err = analyze.GatewayProxiesFromStatus(data); err == nil {
			return gps, known
		}
	}
	slog.Warn("analyze: cannot list proxies; Gateway selectors are not checked", "err", err)
	return nil, false
}

// printFindings writes istioctl's text lines, or a JSON list.
func printFindings(w io.Writer, fs []analyze.Finding, output, scope string) error {
	if output == "json" {
		type item struct {
			analyze.Finding
			Origin string `json:"origin"`
		}
		items := make([]item, len(fs))
		for i, f := range fs {
			items[i] = item{f, f.Origin()}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	}
	if len(fs) == 0 {
		_, err := fmt.Fprintf(w, "\u2714 No validation issues found when analyzing %s.\n", scope)
		return err
	}
	for _, f := range fs {
		if _, err := fmt.Fprintln(w, f.String()); err != nil {
			return err
		}
	}
	return nil
}
