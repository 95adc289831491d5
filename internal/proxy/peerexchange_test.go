package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/bootstrap"
)

// peerBootstrap is one sidecar-like proxy: a listener of the given
// direction whose connection manager runs Istio's metadata exchange filter
// (as istiod sends it: a TypedStruct) and logs every request to a file.
const peerBootstrap = `
node:
  id: {{.ID}}
  metadata:
    NAMESPACE: {{.NS}}
    WORKLOAD_NAME: {{.Workload}}
    LABELS: {app: {{.App}}, version: {{.Version}}}
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: {{.Direction}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{.Log}}
              log_format:
                json_format: {code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%", peer: "%REQ(X-ENVOY-PEER-METADATA-ID)%", up: "%UPSTREAM_CLUSTER%"}
          - name: envoy.access_loggers.file
            filter:
              extension_filter:
                name: envoy.access_loggers.extension_filters.cel
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                  expression: "response.code >= 400"
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{.Log}}.errors
              log_format: {text_format_source: {inline_string: "%RESPONSE_CODE% %REQ(:PATH)%\n"}}
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: {{.Cluster}}}
          http_filters:
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value:
                {{.Exchange}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
{{.Clusters}}
`

func TestPeerMetadataExchangeAndAccessLog(t *testing.T) {
	dir := t.TempDir()
	app := backend(t, "preference")
	ah, ap := hostPort(t, app.URL)
	server := startProxy(t, peerBootstrap, map[string]string{
		"ID": "sidecar~127.0.0.2~preference-v1-x.default~default.svc.cluster.local", "NS": "default", "Workload": "preference-v1",
		"App": "preference", "Version": "v1", "Direction": "INBOUND", "Log": filepath.Join(dir, "server.log"),
		"Cluster": "inbound|8080||", "Clusters": staticCluster("inbound|8080||", ah, ap, ""),
		"Exchange": "{downstream_discovery: [{istio_headers: {}}], downstream_propagation: [{istio_headers: {}}]}",
	})
	sh, sp := hostPort(t, server.url(t, "l"))
	client := startProxy(t, peerBootstrap, map[string]string{
		"ID": "sidecar~127.0.0.1~customer-v1-y.default~default.svc.cluster.local", "NS": "default", "Workload": "customer-v1",
		"App": "customer", "Version": "v1", "Direction": "OUTBOUND", "Log": filepath.Join(dir, "client.log"),
		"Cluster":  "outbound|8080||preference.default.svc.cluster.local",
		"Clusters": staticCluster("outbound|8080||preference.default.svc.cluster.local", sh, sp, ""),
		"Exchange": "{upstream_discovery: [{istio_headers: {}}], upstream_propagation: [{istio_headers: {}}]}",
	})

	// An application trying to pass itself off as another workload.
	req, _ := http.NewRequest("GET", client.url(t, "l")+"/prefs?status=503", nil)
	req.Header.Set("x-envoy-peer-metadata-id", "spoofed")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e := decodeEcho(t, resp)
	for _, h := range []string{"X-Envoy-Peer-Metadata", "X-Envoy-Peer-Metadata-Id"} {
		if v := e.Headers.Get(h); v != "" {
			t.Errorf("the application saw %s: %q", h, v)
		}
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("the client application saw %s on the response: %q", h, v)
		}
	}

	// Each side reports the other's workload.
	metrics := func(r *running) string {
		rec := httptest.NewRecorder()
		r.p.prometheusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/stats/prometheus", nil))
		return rec.Body.String()
	}
	waitFor(t, 5*time.Second, "server metrics", func() bool {
		return strings.Contains(metrics(server), `source_workload="customer-v1"`)
	})
	sm := metrics(server)
	for _, want := range []string{`reporter="destination"`, `source_app="customer"`, `destination_workload="preference-v1"`, `response_code="503"`} {
		if !strings.Contains(sm, want) {
			t.Errorf("server metrics lack %s:\n%s", want, grepLines(sm, "istio_requests_total"))
		}
	}
	waitFor(t, 5*time.Second, "client metrics", func() bool {
		return strings.Contains(metrics(client), `destination_workload="preference-v1"`)
	})
	cm := grepLines(metrics(client), "istio_requests_total{")
	for _, want := range []string{`reporter="source"`, `destination_app="preference"`, `destination_version="v1"`, `source_workload="customer-v1"`} {
		if !strings.Contains(cm, want) {
			t.Errorf("client metrics lack %s:\n%s", want, cm)
		}
	}

	// The access logs, flushed when the proxies stop.
	client.cancel()
	server.cancel()
	<-client.done
	<-server.done
	client.done <- nil // for the cleanup
	server.done <- nil
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(read("server.log")), &line); err != nil {
		t.Fatalf("server.log: %v", err)
	}
	// The server logs the request as it forwarded it: the client's
	// metadata id was removed before the application.
	if line["code"] != float64(503) || line["path"] != "/prefs?status=503" || line["up"] != "inbound|8080||" || line["peer"] != nil {
		t.Errorf("server log line %v", line)
	}
	if err := json.Unmarshal([]byte(read("client.log")), &line); err != nil {
		t.Fatalf("client.log: %v", err)
	}
	// The client's request carried its own id upstream, not the spoofed one.
	if line["peer"] != "sidecar~127.0.0.1~customer-v1-y.default~default.svc.cluster.local" {
		t.Errorf("client log line %v", line)
	}
	if got := read("client.log.errors"); got != "503 /prefs?status=503\n" {
		t.Errorf("errors log %q", got)
	}
}

// The filter's configuration is checked: an unknown discovery method or
// inner type is refused with the field.
func TestPeerMetadataExchangeRefused(t *testing.T) {
	for _, tc := range []struct{ exchange, want string }{
		{"{upstream_discovery: [{workload_discovery: {}}]}", `discovery method "workload_discovery" is not supported`},
		{"{upstream_nonsense: []}", "typed_config.value.upstream_nonsense: not supported"},
	} {
		var buf strings.Builder
		data := map[string]string{"ID": "x", "NS": "default", "Workload": "w", "App": "a", "Version": "v", "Direction": "OUTBOUND",
			"Log": filepath.Join(t.TempDir(), "l"), "Cluster": "c", "Clusters": staticCluster("c", "127.0.0.1", "1", ""), "Exchange": tc.exchange}
		if err := template.Must(template.New("b").Parse(peerBootstrap)).Execute(&buf, data); err != nil {
			t.Fatal(err)
		}
		b, err := bootstrap.Parse([]byte(buf.String()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Options{Bootstrap: b, Log: testLogger(t)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.exchange, err, tc.want)
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
