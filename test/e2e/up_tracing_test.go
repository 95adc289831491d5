package e2e

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// upSpan is a span as the built-in collector's query API returns it.
type upSpan struct {
	TraceID  string `json:"traceId"`
	SpanID   string `json:"spanId"`
	ParentID string `json:"parentId"`
	Service  string `json:"service"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
}

// wantChain is the tutorial's request as spans, parent first: the gateway
// calls customer, customer preference, preference recommendation; each
// hop is a client span and the server span it caused.
var wantChain = []string{
	"istio-ingressgateway.istio-system CLIENT",
	"customer.default SERVER", "customer.default CLIENT",
	"preference.default SERVER", "preference.default CLIENT",
	"recommendation.default SERVER",
}

// checkChain verifies spans form wantChain: one root, each next span the
// child of the one before.
func checkChain(spans []upSpan) error {
	if len(spans) != len(wantChain) {
		return fmt.Errorf("%d spans, want %d", len(spans), len(wantChain))
	}
	byParent := map[string]upSpan{}
	var root *upSpan
	for i, s := range spans {
		if s.ParentID == "" {
			root = &spans[i]
			continue
		}
		byParent[s.ParentID] = s
	}
	if root == nil {
		return fmt.Errorf("no root span")
	}
	cur := *root
	for i, want := range wantChain {
		if got := cur.Service + " " + cur.Kind; got != want {
			return fmt.Errorf("span %d is %q (%s), want %q", i, got, cur.Name, want)
		}
		if cur.TraceID != root.TraceID {
			return fmt.Errorf("span %d has trace %s, the root %s", i, cur.TraceID, root.TraceID)
		}
		if i < len(wantChain)-1 {
			next, ok := byParent[cur.SpanID]
			if !ok {
				return fmt.Errorf("no child of span %d (%s)", i, want)
			}
			cur = next
		}
	}
	return nil
}

// `amime up` traces every request to the control plane's built-in
// collector: a request through the gateway becomes one trace across the
// four proxies, with the right parent/child spans.
func TestUpTracing(t *testing.T) {
	requireGatewayPortFree(t)
	m := startUp(t, t.TempDir(), freeAddr(t), freeAddr(t), freeAddr(t))
	defer m.stop(t)
	status, _, err := m.get("", "/", "")
	if err != nil || status != 200 {
		t.Fatalf("request: %d %v", status, err)
	}
	var trace struct {
		Spans []upSpan `json:"spans"`
	}
	if err := eventually(20*time.Second, func() error {
		code, body, err := upHTTP("GET", "http://"+m.api+"/api/traces?service=recommendation.default&limit=1")
		if err != nil || code != 200 {
			return fmt.Errorf("search: %d %v %s", code, err, body)
		}
		var sums []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(body), &sums); err != nil || len(sums) == 0 {
			return fmt.Errorf("no trace yet (%s)", body)
		}
		code, body, err = upHTTP("GET", "http://"+m.api+"/api/traces/"+sums[0].ID)
		if err != nil || code != 200 {
			return fmt.Errorf("trace: %d %v", code, err)
		}
		if err := json.Unmarshal([]byte(body), &trace); err != nil {
			return err
		}
		return checkChain(trace.Spans)
	}); err != nil {
		t.Fatalf("%v\nspans: %+v", err, trace.Spans)
	}
}

// Pointing the mesh at another collector is one setting: with mesh.yaml
// naming an OTLP receiver the test runs (registered by a ServiceEntry, as
// Istio users register theirs), the same trace arrives there over
// OTLP/HTTP protobuf.
func TestUpTracingOTLPReceiver(t *testing.T) {
	requireGatewayPortFree(t)
	var mu sync.Mutex
	var spans []upSpan
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &collectorpb.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			svc := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					svc = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					kind := strings.TrimPrefix(s.GetKind().String(), "SPAN_KIND_")
					spans = append(spans, upSpan{TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
						ParentID: hex.EncodeToString(s.GetParentSpanId()), Service: svc, Kind: kind, Name: s.GetName()})
				}
			}
		}
		b, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(recv.Close)
	host, port, err := net.SplitHostPort(strings.TrimPrefix(recv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	mesh := fmt.Sprintf(`extensionProviders:
- name: test-otlp
  opentelemetry: {service: otlp.test.example, port: %s, http: {path: /v1/traces}}
defaultProviders: {tracing: [test-otlp]}
defaultConfig: {tracing: {sampling: 100}}
`, port)
	if err := os.WriteFile(filepath.Join(dataDir, "mesh.yaml"), []byte(mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startUp(t, dataDir, freeAddr(t), freeAddr(t), freeAddr(t))
	defer m.stop(t)
	se := writeFile(t, "otlp.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: otlp, namespace: observability}
spec:
  hosts: [otlp.test.example]
  location: MESH_EXTERNAL
  ports: [{number: %s, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %s}]
`, port, host))
	m.cli(t, "apply", "-f", se)

	// Requests until one trace is complete at the receiver (the first ones
	// may predate the proxies' new tracing configuration).
	var last error
	if err := eventually(30*time.Second, func() error {
		if _, _, err := m.get("", "/", ""); err != nil {
			return err
		}
		mu.Lock()
		byTrace := map[string][]upSpan{}
		for _, s := range spans {
			byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
		}
		mu.Unlock()
		ids := make([]string, 0, len(byTrace))
		for id := range byTrace {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if last = checkChain(byTrace[id]); last == nil {
				return nil
			}
		}
		return fmt.Errorf("no complete trace among %d (last: %v)", len(byTrace), last)
	}); err != nil {
		t.Fatal(err)
	}
}
