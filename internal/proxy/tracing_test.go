package proxy

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/amime-mesh/amime/internal/proxy/tracing"
)

// collected is a span as either collector received it.
type collected struct {
	TraceID, SpanID, ParentID, Name, Kind, Service string
	Start, End                                     time.Time
	Tags                                           map[string]string
	Shared                                         bool
	Host                                           string // the export request's Host
}

// collector is an OTLP/HTTP or Zipkin v2 JSON collector on 127.0.0.1.
type collector struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []collected
}

func (c *collector) add(s collected) {
	c.mu.Lock()
	c.spans = append(c.spans, s)
	c.mu.Unlock()
}

// find returns the spans of a trace.
func (c *collector) find(traceID string) []collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []collected
	for _, s := range c.spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

func otlpCollector(t *testing.T) *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &collectorpb.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, req) != nil {
			t.Errorf("OTLP export: path %s, content-type %q", r.URL.Path, r.Header.Get("Content-Type"))
			w.WriteHeader(400)
			return
		}
		if r.Header.Get("X-Token") != "secret" {
			t.Errorf("OTLP export without request_headers_to_add: %v", r.Header)
		}
		for _, rs := range req.GetResourceSpans() {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					svc = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					tags := map[string]string{}
					for _, kv := range sp.GetAttributes() {
						tags[kv.GetKey()] = kv.GetValue().GetStringValue()
					}
					kind := map[tracepb.Span_SpanKind]string{tracepb.Span_SPAN_KIND_SERVER: "SERVER", tracepb.Span_SPAN_KIND_CLIENT: "CLIENT"}[sp.GetKind()]
					c.add(collected{TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
						ParentID: hex.EncodeToString(sp.GetParentSpanId()), Name: sp.GetName(), Kind: kind, Service: svc,
						Start: time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
						Tags: tags, Host: r.Host})
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		resp, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		_, _ = w.Write(resp)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func zipkinCollector(t *testing.T) *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spans []tracing.ZipkinSpan
		if r.URL.Path != "/api/v2/spans" || json.NewDecoder(r.Body).Decode(&spans) != nil {
			t.Errorf("Zipkin export: path %s", r.URL.Path)
			w.WriteHeader(400)
			return
		}
		for _, s := range spans {
			start := time.UnixMicro(s.Timestamp)
			c.add(collected{TraceID: s.TraceID, SpanID: s.ID, ParentID: s.ParentID, Name: s.Name, Kind: s.Kind,
				Service: s.LocalEndpoint.ServiceName, Start: start, End: start.Add(time.Duration(s.Duration) * time.Microsecond),
				Tags: s.Tags, Shared: s.Shared, Host: r.Host})
		}
		w.WriteHeader(202)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

const tracingBootstrap = `
node:
  id: sidecar~10.0.0.1~app-1.ns~ns.svc.cluster.local
  cluster: app.ns
  locality: {zone: zone-a}
static_resources:
  listeners:
  - name: otel_in
    traffic_direction: INBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: otel_in
          tracing:
            random_sampling: {value: 100}
            custom_tags:
            - {tag: mesh, literal: {value: amime}}
            - {tag: tenant, request_header: {name: x-tenant, default_value: none}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service:
                  http_uri: {uri: "http://otel-collector.istio-system:4318/v1/traces", cluster: otel, timeout: 2s}
                  request_headers_to_add: [{header: {key: x-token, value: secret}}]
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                decorator: {operation: "app.ns.svc.cluster.local:80/*"}
                route: {cluster: app}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: otel_zero
    traffic_direction: INBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: otel_zero
          tracing:
            random_sampling: {value: 0}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: zero
                http_service:
                  http_uri: {uri: "http://otel-collector.istio-system:4318/v1/traces", cluster: otel, timeout: 2s}
                  request_headers_to_add: [{header: {key: x-token, value: secret}}]
          route_config:
            virtual_hosts:
            - {name: app, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: zipkin_out
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: zipkin_out
          tracing:
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
          route_config:
            virtual_hosts:
            - {name: app, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: zipkin_in
    traffic_direction: INBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: zipkin_in
          tracing:
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_hostname: zipkin.istio-system
          route_config:
            virtual_hosts:
            - {name: app, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: app}}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:{{.Clusters}}
`

type tracingEnv struct {
	r            *running
	otel, zipkin *collector
}

func startTracingProxy(t *testing.T) *tracingEnv {
	t.Helper()
	app := backend(t, "app")
	e := &tracingEnv{otel: otlpCollector(t), zipkin: zipkinCollector(t)}
	ah, ap := hostPort(t, app.URL)
	oh, op := hostPort(t, e.otel.srv.URL)
	zh, zp := hostPort(t, e.zipkin.srv.URL)
	clusters := staticCluster("app", ah, ap, "") + staticCluster("otel", oh, op, "") + staticCluster("zipkin", zh, zp, "")
	e.r = startProxy(t, tracingBootstrap, map[string]string{"Clusters": clusters}, func(o *Options) {
		o.TraceFlushInterval = 20 * time.Millisecond
	})
	waitFor(t, 5*time.Second, "listeners bound", func() bool {
		for _, l := range []string{"otel_in", "otel_zero", "zipkin_out", "zipkin_in"} {
			if e.r.p.ListenerAddr(l) == nil {
				return false
			}
		}
		return true
	})
	return e
}

// get sends a GET through a listener and returns what the app saw.
func (e *tracingEnv) get(t *testing.T, listener string, h map[string]string) (echo, time.Time, time.Time) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.r.url(t, listener)+"/hello?q=1", nil)
	req.Host = "app.ns:80"
	for k, v := range h {
		req.Header.Set(k, v)
	}
	before := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ec := decodeEcho(t, resp)
	return ec, before, time.Now()
}

func (c *collector) wait(t *testing.T, traceID string) collected {
	t.Helper()
	var got []collected
	waitFor(t, 5*time.Second, "span of trace "+traceID, func() bool {
		got = c.find(traceID)
		return len(got) > 0
	})
	if len(got) != 1 {
		t.Fatalf("%d spans for trace %s, want 1: %+v", len(got), traceID, got)
	}
	return got[0]
}

// parseTraceparent splits a traceparent the app received.
func parseTraceparent(t *testing.T, v string) (traceID, spanID, flags string) {
	t.Helper()
	p := strings.Split(v, "-")
	if len(p) != 4 || p[0] != "00" || len(p[1]) != 32 || len(p[2]) != 16 {
		t.Fatalf("traceparent %q", v)
	}
	return p[1], p[2], p[3]
}

func checkTiming(t *testing.T, s collected, before, after time.Time) {
	t.Helper()
	if s.Start.Before(before.Add(-time.Millisecond)) || s.End.After(after.Add(time.Millisecond)) || !s.End.After(s.Start) {
		t.Errorf("span %v..%v outside the request %v..%v", s.Start, s.End, before, after)
	}
}

func TestTracingOpenTelemetry(t *testing.T) {
	e := startTracingProxy(t)
	const inTrace, inSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

	t.Run("incoming traceparent", func(t *testing.T) {
		ec, before, after := e.get(t, "otel_in", map[string]string{"traceparent": "00-" + inTrace + "-" + inSpan + "-01", "x-tenant": "t1", "tracestate": "k=v"})
		tid, sid, flags := parseTraceparent(t, ec.Headers.Get("Traceparent"))
		if tid != inTrace || sid == inSpan || flags != "01" {
			t.Fatalf("upstream traceparent %q: want trace %s, a new span, sampled", ec.Headers.Get("Traceparent"), inTrace)
		}
		// The B3 view of the same context, for apps that forward B3.
		if ec.Headers.Get("X-B3-Traceid") != inTrace || ec.Headers.Get("X-B3-Spanid") != sid ||
			ec.Headers.Get("X-B3-Parentspanid") != inSpan || ec.Headers.Get("X-B3-Sampled") != "1" {
			t.Errorf("upstream b3 headers %v", ec.Headers)
		}
		if ec.Headers.Get("Tracestate") != "k=v" {
			t.Errorf("tracestate %q, want forwarded", ec.Headers.Get("Tracestate"))
		}
		rid := ec.Headers.Get("X-Request-Id")
		if len(rid) != 36 || rid[14] != 'a' {
			t.Errorf("x-request-id %q: want the sampled trace reason packed in", rid)
		}
		s := e.otel.wait(t, inTrace)
		if s.SpanID != sid || s.ParentID != inSpan || s.Kind != "SERVER" || s.Name != "app.ns.svc.cluster.local:80/*" || s.Service != "app.ns" {
			t.Errorf("span %+v", s)
		}
		if s.Host != "otel-collector.istio-system:4318" {
			t.Errorf("export Host %q, want the http_uri's", s.Host)
		}
		want := map[string]string{
			"http.method": "GET", "http.status_code": "200", "http.protocol": "HTTP/1.1", "http.url": "http://app.ns:80/hello?q=1",
			"upstream_cluster": "app", "upstream_cluster.name": "app", "node_id": "sidecar~10.0.0.1~app-1.ns~ns.svc.cluster.local",
			"zone": "zone-a", "guid:x-request-id": rid, "component": "proxy", "response_flags": "-", "peer.address": "127.0.0.1",
			"request_size": "0", "downstream_cluster": "-", "user_agent": "Go-http-client/1.1", "mesh": "amime", "tenant": "t1",
		}
		for k, v := range want {
			if s.Tags[k] != v {
				t.Errorf("tag %s = %q, want %q", k, s.Tags[k], v)
			}
		}
		if _, ok := s.Tags["error"]; ok {
			t.Error("error tag on a 200")
		}
		checkTiming(t, s, before, after)
	})

	t.Run("new trace", func(t *testing.T) {
		ec, before, after := e.get(t, "otel_in", nil)
		tid, sid, flags := parseTraceparent(t, ec.Headers.Get("Traceparent"))
		if flags != "01" || ec.Headers.Get("X-B3-Traceid") != tid || ec.Headers.Get("X-B3-Spanid") != sid || ec.Headers.Get("X-B3-Parentspanid") != "" {
			t.Fatalf("upstream headers %v", ec.Headers)
		}
		s := e.otel.wait(t, tid)
		if s.SpanID != sid || s.ParentID != "" || s.Tags["tenant"] != "none" {
			t.Errorf("root span %+v", s)
		}
		checkTiming(t, s, before, after)
	})

	t.Run("sampled=0 exports nothing", func(t *testing.T) {
		const offTrace = "11111111111111112222222222222222"
		ec, _, _ := e.get(t, "otel_in", map[string]string{"traceparent": "00-" + offTrace + "-" + inSpan + "-00"})
		tid, _, flags := parseTraceparent(t, ec.Headers.Get("Traceparent"))
		if tid != offTrace || flags != "00" || ec.Headers.Get("X-B3-Sampled") != "0" {
			t.Fatalf("upstream headers %v", ec.Headers)
		}
		// 0% random sampling: propagated, unsampled, not exported.
		ec0, _, _ := e.get(t, "otel_zero", nil)
		tid0, _, flags0 := parseTraceparent(t, ec0.Headers.Get("Traceparent"))
		if flags0 != "00" {
			t.Errorf("0%% listener: traceparent %q, want unsampled", ec0.Headers.Get("Traceparent"))
		}
		// A sampled request after them: once its span is in, theirs would be.
		ec2, _, _ := e.get(t, "otel_in", nil)
		tid2, _, _ := parseTraceparent(t, ec2.Headers.Get("Traceparent"))
		e.otel.wait(t, tid2)
		if got := e.otel.find(offTrace); len(got) != 0 {
			t.Errorf("unsampled trace exported: %+v", got)
		}
		if got := e.otel.find(tid0); len(got) != 0 {
			t.Errorf("0%% trace exported: %+v", got)
		}
	})

	if st := e.r.p.tracer.Stats(tracing.OpenTelemetry); st.Sent < 3 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTracingZipkin(t *testing.T) {
	e := startTracingProxy(t)
	const inTrace, inSpan, inParent = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312", "0020000000000001"

	t.Run("egress with b3", func(t *testing.T) {
		ec, before, after := e.get(t, "zipkin_out", map[string]string{"x-b3-traceid": inTrace, "x-b3-spanid": inSpan, "x-b3-sampled": "1"})
		sid := ec.Headers.Get("X-B3-Spanid")
		if ec.Headers.Get("X-B3-Traceid") != inTrace || sid == inSpan || len(sid) != 16 || ec.Headers.Get("X-B3-Parentspanid") != inSpan {
			t.Fatalf("upstream b3 %v", ec.Headers)
		}
		if tid, tsid, _ := parseTraceparent(t, ec.Headers.Get("Traceparent")); tid != inTrace || tsid != sid {
			t.Errorf("traceparent %q inconsistent with b3", ec.Headers.Get("Traceparent"))
		}
		s := e.zipkin.wait(t, inTrace)
		if s.SpanID != sid || s.ParentID != inSpan || s.Kind != "CLIENT" || s.Name != "egress app.ns:80" || s.Service != "app.ns" || s.Shared {
			t.Errorf("span %+v", s)
		}
		if s.Host != "zipkin" {
			t.Errorf("export Host %q, want the cluster name", s.Host)
		}
		if s.Tags["http.status_code"] != "200" || s.Tags["upstream_cluster"] != "app" || s.Tags["component"] != "proxy" {
			t.Errorf("tags %v", s.Tags)
		}
		checkTiming(t, s, before, after)
	})

	t.Run("ingress shares the client's span", func(t *testing.T) {
		const tr = "5b8efff798038103d269b633813fc60c"
		ec, _, _ := e.get(t, "zipkin_in", map[string]string{"b3": tr + "-" + inSpan + "-1-" + inParent})
		if ec.Headers.Get("X-B3-Spanid") != inSpan || ec.Headers.Get("X-B3-Parentspanid") != inParent ||
			ec.Headers.Get("B3") != tr+"-"+inSpan+"-1-"+inParent {
			t.Fatalf("upstream headers %v", ec.Headers)
		}
		s := e.zipkin.wait(t, tr)
		if s.SpanID != inSpan || s.ParentID != inParent || s.Kind != "SERVER" || s.Name != "ingress" || !s.Shared {
			t.Errorf("shared span %+v", s)
		}
		if s.Host != "zipkin.istio-system" {
			t.Errorf("export Host %q, want collector_hostname", s.Host)
		}
	})

	t.Run("sampled=0 exports nothing", func(t *testing.T) {
		const off = "00000000000000000000000000000abc"
		ec, _, _ := e.get(t, "zipkin_out", map[string]string{"x-b3-traceid": off, "x-b3-spanid": inSpan, "x-b3-sampled": "0"})
		if ec.Headers.Get("X-B3-Sampled") != "0" || ec.Headers.Get("X-B3-Traceid") != off {
			t.Fatalf("upstream headers %v", ec.Headers)
		}
		ec2, _, _ := e.get(t, "zipkin_out", nil)
		tid := ec2.Headers.Get("X-B3-Traceid")
		if len(tid) != 16 {
			t.Errorf("new Zipkin trace id %q: want 64 bits (trace_id_128bit false)", tid)
		}
		e.zipkin.wait(t, tid)
		if got := e.zipkin.find(off); len(got) != 0 {
			t.Errorf("unsampled trace exported: %+v", got)
		}
	})
}

// BenchmarkHTTP1Tracing measures a request through the proxy (as
// BenchmarkHTTP1Proxy) with tracing off, on at 0% sampling (headers
// parsed and propagated, no span), and on at 100% (a span per request,
// exported to a collector on 127.0.0.1).
func BenchmarkHTTP1Tracing(b *testing.B) {
	for _, bc := range []struct{ name, tracing string }{
		{"off", ""},
		{"sampled-0", "0"},
		{"sampled-100", "100"},
	} {
		b.Run(bc.name, func(b *testing.B) { benchTracing(b, bc.tracing) })
	}
}

const benchTracingBootstrap = `
node: {id: bench, cluster: bench.ns}
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
          {{- if .Sampling}}
          tracing:
            random_sampling: {value: {{.Sampling}}}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
          {{- end}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                decorator: {operation: "bench:80/*"}
                route: {cluster: a}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:{{.Clusters}}
`

func benchTracing(b *testing.B, sampling string) {
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
	zk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(202)
	}))
	defer zk.Close()
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	zh, zp := hostPort(b, zk.URL)
	r := startProxy(b, benchTracingBootstrap, map[string]string{"Sampling": sampling,
		"Clusters": staticCluster("a", h, p, "") + staticCluster("zipkin", zh, zp, "")})
	c, err := net.Dial("tcp", strings.TrimPrefix(r.url(b, "http"), "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("x", 1024)
	req := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nx-b3-traceid: 463ac35c9f6413ad48485a3953bb6124\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
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
