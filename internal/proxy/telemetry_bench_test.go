package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// benchTelemetryBootstrap is a sidecar outbound listener with everything
// amime's control plane may turn on for telemetry: the metadata exchange,
// an access log in Istio's JSON format to a file, tracing at 1% over
// OTLP/HTTP. With .Off, none of it (and Options.NoMetrics turns the
// Istio metrics off).
const benchTelemetryBootstrap = `
node:
  id: sidecar~127.0.0.1~bench-v1-x.default~default.svc.cluster.local
  cluster: bench.default
  metadata: {NAMESPACE: default, WORKLOAD_NAME: bench-v1, LABELS: {app: bench, version: v1}}
static_resources:
  listeners:
  - name: http
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          {{- if not .Off}}
          tracing:
            random_sampling: {value: 1}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service:
                  http_uri: {uri: "http://collector/v1/traces", cluster: collector, timeout: 5s}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{.Log}}
              log_format:
                json_format: {start_time: "%START_TIME%", route_name: "%ROUTE_NAME%", method: "%REQ(:METHOD)%",
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", protocol: "%PROTOCOL%", response_code: "%RESPONSE_CODE%",
                  response_flags: "%RESPONSE_FLAGS%", response_code_details: "%RESPONSE_CODE_DETAILS%",
                  bytes_received: "%BYTES_RECEIVED%", bytes_sent: "%BYTES_SENT%", duration: "%DURATION%",
                  upstream_service_time: "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", x_forwarded_for: "%REQ(X-FORWARDED-FOR)%",
                  user_agent: "%REQ(USER-AGENT)%", request_id: "%REQ(X-REQUEST-ID)%", authority: "%REQ(:AUTHORITY)%",
                  upstream_host: "%UPSTREAM_HOST%", upstream_cluster: "%UPSTREAM_CLUSTER_RAW%",
                  downstream_local_address: "%DOWNSTREAM_LOCAL_ADDRESS%", downstream_remote_address: "%DOWNSTREAM_REMOTE_ADDRESS%",
                  requested_server_name: "%REQUESTED_SERVER_NAME%"}
          {{- end}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: a}
          http_filters:
          {{- if not .Off}}
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value: {upstream_discovery: [{istio_headers: {}}], upstream_propagation: [{istio_headers: {}}]}
          {{- end}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:{{.Clusters}}
`

// BenchmarkHTTP1Telemetry compares a request's cost with telemetry off
// and with all of it on (issue: at most 10% more CPU per request).
func BenchmarkHTTP1Telemetry(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchTelemetry(b, true) })
	b.Run("on", func(b *testing.B) { benchTelemetry(b, false) })
}

func benchTelemetry(b *testing.B, off bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echoBackend(c)
		}
	}()
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer col.Close()
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	ch, cp := hostPort(b, col.URL)
	data := map[string]any{"Off": off, "Log": filepath.Join(b.TempDir(), "access.log"),
		"Clusters": staticCluster("a", h, p, "") + staticCluster("collector", ch, cp, "")}
	r := startProxy(b, benchTelemetryBootstrap, data, func(o *Options) { o.NoMetrics = off })
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url(b, "http"), "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("x", 1024)
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(c)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.WriteString(c, req); err != nil {
			b.Fatal(err)
		}
		if n := readResponse(b, br, buf); n != len(body) {
			b.Fatalf("body %d bytes", n)
		}
	}
}
