package telemetry

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Both reporters learn the other side from x-envoy-peer-metadata.
func TestPeerMetadataLabels(t *testing.T) {
	clientNode := node(t, "sidecar~10.0.0.1~customer-v1-abc.default~default.svc.cluster.local", map[string]any{
		"NAMESPACE": "default", "WORKLOAD_NAME": "customer-v1", "LABELS": map[string]any{"app": "customer", "version": "v1"},
		"SERVICE_ACCOUNT": "customer", "INSTANCE_IPS": "10.0.0.1", "ISTIO_VERSION": "not exchanged"})
	serverNode := node(t, "sidecar~10.0.0.2~preference-v2-xyz.prod~prod.svc.cluster.local", map[string]any{
		"NAMESPACE": "prod", "WORKLOAD_NAME": "preference-v2", "LABELS": map[string]any{"app": "preference", "version": "v2"}})
	client, err := New(Config{Node: clientNode})
	if err != nil {
		t.Fatal(err)
	}
	server, err := New(Config{Node: serverNode})
	if err != nil {
		t.Fatal(err)
	}
	if client.Peers().ID() != clientNode.GetId() || client.Peers().Value() == "" {
		t.Fatalf("client sends id %q value %q", client.Peers().ID(), client.Peers().Value())
	}
	if w := server.Peers().Peer(client.Peers().Value()); w == nil || w.Name != "customer-v1" || w.Version != "v1" || w.Namespace != "default" {
		t.Fatalf("decoded %+v", w)
	}
	for _, bad := range []string{"!!!", "aGVsbG8=", ""} {
		if w := server.Peers().Peer(bad); w != nil {
			t.Errorf("%q decoded as %+v", bad, w)
		}
	}
	// The server reports the request with the client's metadata.
	reg := prometheus.NewRegistry()
	reg.MustRegister(server.Collectors()...)
	server.OnComplete(&streaminfo.Info{Cluster: "inbound|8080||", ResponseCode: 200, PeerMetadata: client.Peers().Value()})
	value(t, reg, "istio_requests_total", map[string]string{"reporter": "destination",
		"source_workload": "customer-v1", "source_workload_namespace": "default", "source_app": "customer", "source_version": "v1",
		"source_canonical_service": "customer", "destination_workload": "preference-v2", "destination_version": "v2"})

	// The client reports it with the server's metadata from the response.
	reg = prometheus.NewRegistry()
	reg.MustRegister(client.Collectors()...)
	client.OnComplete(&streaminfo.Info{Cluster: "outbound|8080||preference.prod.svc.cluster.local", ResponseCode: 200, PeerMetadata: server.Peers().Value()})
	client.OnComplete(&streaminfo.Info{Cluster: "outbound|8080||preference.prod.svc.cluster.local", ResponseCode: 200, PeerMetadata: "garbage"})
	m := value(t, reg, "istio_requests_total", map[string]string{"reporter": "source", "source_workload": "customer-v1",
		"destination_workload": "preference-v2", "destination_workload_namespace": "prod", "destination_app": "preference",
		"destination_version": "v2", "destination_service": "preference.prod.svc.cluster.local"})
	if m.GetCounter().GetValue() != 1 {
		t.Errorf("count %v", m.GetCounter().GetValue())
	}
	value(t, reg, "istio_requests_total", map[string]string{"reporter": "source", "destination_workload": "unknown"})
}

func BenchmarkPeerLookup(b *testing.B) {
	n := node(b, "sidecar~10.0.0.1~customer-v1-abc.default~default.svc.cluster.local", map[string]any{
		"NAMESPACE": "default", "LABELS": map[string]any{"app": "customer", "version": "v1"}})
	p := NewPeerMetadata(n)
	v := strings.Clone(p.Value()) // header values are strings in the data path
	b.ReportAllocs()
	for b.Loop() {
		if p.Peer(v) == nil {
			b.Fatal("nil")
		}
	}
}
