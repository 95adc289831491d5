package controlplane

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/config"
)

// TestWarningsReachOperators checks that what the translator leaves out is
// listed, not silently dropped.
func TestWarningsReachOperators(t *testing.T) {
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.xdsLn.Close(); _ = cp.apiLn.Close(); _ = cp.store.Close() })
	objs, err := config.Decode([]byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - corsPolicy: {allowOrigins: [{exact: "https://example.com"}]}
    route: [{destination: {host: reviews}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Store().ApplyAll(objs); err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{MetaHTTPProxy: "127.0.0.1:15001"})
	if _, err := cp.Generate(&corev3.Node{Id: "sidecar~127.0.0.1~a.default", Metadata: md}, 1); err != nil {
		t.Fatal(err)
	}
	w := cp.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "VirtualService default/reviews: http[0].corsPolicy: not translated") {
		t.Fatalf("warnings %q", w)
	}
}
