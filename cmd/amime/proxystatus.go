package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

type proxyStatus struct {
	ID      string            `json:"id"`
	Cluster string            `json:"cluster"`
	Version string            `json:"version"`
	Types   map[string]string `json:"types"`
	Error   string            `json:"error"`
}

func newProxyStatusCmd(sf *serverFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "proxy-status",
		Short: "List connected proxies and whether they have the latest configuration",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st []proxyStatus
			if err := sf.client().GetJSON(cmd.Context(), "/debug/proxy-status", &st); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCLUSTER\tCDS\tLDS\tEDS\tRDS\tVERSION")
			for _, s := range st {
				short := func(t string) string {
					v := s.Types[t]
					if strings.HasPrefix(v, "NACK") {
						return "NACK"
					}
					return v
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Cluster, short("CDS"), short("LDS"), short("EDS"), short("RDS"), s.Version)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// NACK reasons are what an operator needs next: print them whole.
			for _, s := range st {
				types := make([]string, 0, len(s.Types))
				for t := range s.Types {
					types = append(types, t)
				}
				sort.Strings(types)
				for _, t := range types {
					if v := s.Types[t]; strings.HasPrefix(v, "NACK") {
						fmt.Fprintf(cmd.OutOrStdout(), "\n%s %s %s\n", s.ID, t, v)
					}
				}
				if s.Error != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "\n%s: generation failed: %s\n", s.ID, s.Error)
				}
			}
			// What the control plane accepted but could not give the proxies.
			var warnings []string
			if err := sf.client().GetJSON(cmd.Context(), "/debug/warnings", &warnings); err == nil && len(warnings) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "\nConfiguration not (fully) translated (%d):\n", len(warnings))
				for _, w := range warnings {
					fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", w)
				}
			}
			return nil
		},
	}
}

func newProxyConfigCmd(sf *serverFlags) *cobra.Command {
	var output string
	types := map[string]string{"listeners": "LDS", "listener": "LDS", "routes": "RDS", "route": "RDS", "clusters": "CDS", "cluster": "CDS", "endpoints": "EDS", "endpoint": "EDS", "all": ""}
	cmd := &cobra.Command{
		Use:   "proxy-config listeners|routes|clusters|endpoints|all PROXY",
		Short: "Show the configuration the control plane serves a proxy",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			typ, ok := types[args[0]]
			if !ok {
				return fmt.Errorf("unknown type %q: want listeners, routes, clusters, endpoints or all", args[0])
			}
			q := url.Values{"proxy": {args[1]}}
			if typ != "" {
				q.Set("type", typ)
			}
			var dump map[string][]json.RawMessage
			if err := sf.client().GetJSON(cmd.Context(), "/debug/config_dump?"+q.Encode(), &dump); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(dump)
			}
			return printProxyConfig(cmd, dump)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json for the full resources")
	return cmd
}

// printProxyConfig prints one line per resource, like istioctl's tables.
func printProxyConfig(cmd *cobra.Command, dump map[string][]json.RawMessage) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
	for _, typ := range []string{"LDS", "RDS", "CDS", "EDS"} {
		items := dump[typ]
		if len(items) == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\tNAME\tDETAIL\n", typ)
		for _, raw := range items {
			var r struct {
				Name        string `json:"name"`
				ClusterName string `json:"cluster_name"`
				Type        string `json:"type"`
				Address     struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
				VirtualHosts []struct {
					Domains []string `json:"domains"`
				} `json:"virtual_hosts"`
				Endpoints []struct {
					LbEndpoints []struct {
						Endpoint struct {
							Address struct {
								SocketAddress struct {
									Address   string `json:"address"`
									PortValue int    `json:"port_value"`
								} `json:"socket_address"`
							} `json:"address"`
						} `json:"endpoint"`
						HealthStatus string `json:"health_status"`
					} `json:"lb_endpoints"`
				} `json:"endpoints"`
			}
			if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&r); err != nil {
				return err
			}
			detail := ""
			switch typ {
			case "LDS":
				detail = fmt.Sprintf("%s:%d", r.Address.SocketAddress.Address, r.Address.SocketAddress.PortValue)
			case "RDS":
				detail = fmt.Sprintf("%d virtual hosts", len(r.VirtualHosts))
			case "CDS":
				detail = r.Type
			case "EDS":
				r.Name = r.ClusterName
				var eps []string
				for _, le := range r.Endpoints {
					for _, lb := range le.LbEndpoints {
						e := fmt.Sprintf("%s:%d", lb.Endpoint.Address.SocketAddress.Address, lb.Endpoint.Address.SocketAddress.PortValue)
						if lb.HealthStatus != "" && lb.HealthStatus != "HEALTHY" {
							e += "(" + lb.HealthStatus + ")"
						}
						eps = append(eps, e)
					}
				}
				detail = strings.Join(eps, ",")
			}
			fmt.Fprintf(tw, "\t%s\t%s\n", r.Name, detail)
		}
	}
	return tw.Flush()
}
