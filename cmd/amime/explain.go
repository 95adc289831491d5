package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/amime-mesh/amime/internal/explain"
)

func newExplainCmd(sf *serverFlags) *cobra.Command {
	var (
		from, method, output string
		headers              []string
	)
	cmd := &cobra.Command{
		Use:   "explain --from SOURCE [-X METHOD] [-H 'name: value'] URL",
		Short: "Explain, hop by hop, what the mesh does to a request and why",
		Long: `Explain sends a request description to the control plane, which walks it
through the proxies as they are configured now: the source proxy's listener,
virtual host, route (and the VirtualService it comes from), faults, clusters
with their weights, endpoints and TLS, timeouts and retries, then each
destination sidecar's filter chain, authentication and authorization, and
what the client gets. Nothing is sent to the services.

SOURCE is a proxy id, a workload name or app label that identifies one
connected proxy, or ingressgateway. The exit code is 0 whatever the verdict:
the explanation is the output.`,
		Example: `  amime explain --from customer-v1 http://reviews:9080/reviews/1
  amime explain --from customer-v1 -X POST -H 'x-user: alice' http://reviews:9080/reviews/1
  amime explain --from ingressgateway -o json http://bookinfo.example.com:8080/productpage`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: want text or json", output)
			}
			req := explain.Request{From: from, Method: method, URL: args[0]}
			for _, h := range headers {
				name, value, ok := strings.Cut(h, ":")
				if !ok || strings.TrimSpace(name) == "" {
					return fmt.Errorf("-H %q: want 'name: value'", h)
				}
				if req.Headers == nil {
					req.Headers = map[string][]string{}
				}
				name = strings.ToLower(strings.TrimSpace(name))
				req.Headers[name] = append(req.Headers[name], strings.TrimSpace(value))
			}
			body, err := postExplain(cmd, sf, req)
			if err != nil {
				return err
			}
			if output == "json" {
				var out bytes.Buffer
				if err := json.Indent(&out, body, "", "  "); err != nil {
					return fmt.Errorf("explain: the control plane answered invalid JSON: %w", err)
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), out.String())
				return err
			}
			var trail explain.Trail
			if err := json.Unmarshal(body, &trail); err != nil {
				return fmt.Errorf("explain: the control plane answered an unexpected body: %w", err)
			}
			return trail.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the source: a proxy id, a workload name or app label, or ingressgateway")
	f.StringVarP(&method, "request", "X", "GET", "the request method")
	f.StringArrayVarP(&headers, "header", "H", nil, "a request header 'name: value' (repeatable; 'authorization: Bearer <jwt>' is verified)")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

// postExplain posts the request description; the API client has no
// generic POST, and the answer is read whole either way.
func postExplain(cmd *cobra.Command, sf *serverFlags, req explain.Request) ([]byte, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, strings.TrimSuffix(sf.server, "/")+"/apis/amime.io/v1/explain", bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if sf.token != "" {
		hr.Header.Set("Authorization", "Bearer "+sf.token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(hr)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("explain: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("explain: %s", st.Message)
		}
		return nil, fmt.Errorf("explain: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
