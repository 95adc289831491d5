package controlplane

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// TestGenerateEqualsTranslate: what Generate serves a proxy, from views
// shared with other proxies and parts kept between pushes, is exactly
// translate.Translate's resources for it, push after push.
func TestGenerateEqualsTranslate(t *testing.T) {
	cfg := scaleConfig{Services: 30, Endpoints: 4, Proxies: 24}
	mesh := newScaleMesh(cfg)
	mesh.objects = append(mesh.objects, &config.Object{APIVersion: "networking.istio.io/v1", Kind: config.Gateway,
		Meta: config.Meta{Namespace: "ns-0", Name: "gw"}, Spec: &networking.Gateway{
			Selector: map[string]string{"istio": "ingressgateway"},
			Servers:  []*networking.Server{{Port: &networking.Port{Number: 8080, Name: "http", Protocol: "HTTP"}, Hosts: []string{"*"}}},
		}})
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.xdsLn.Close(); _ = cp.apiLn.Close(); _ = cp.store.Close() })
	if _, err := cp.Store().ApplyAll(mesh.objects); err != nil {
		t.Fatal(err)
	}
	var nodes []*corev3.Node
	for k := range cfg.Proxies {
		nodes = append(nodes, mesh.node(k))
	}
	md := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	nodes = append(nodes,
		// An inbound port on the HTTP_PROXY listener's address.
		&corev3.Node{Id: "sidecar~127.0.0.1~clash.ns-1~ns-1.svc.cluster.local", Metadata: func() *structpb.Struct {
			s := md(map[string]any{MetaNamespace: "ns-1", MetaInstanceIPs: "127.0.0.1", MetaHTTPProxy: "127.0.0.1:15001"})
			s.Fields[MetaInbound] = InboundMetadata([]translate.InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 8080, ListenPort: 15001}})
			return s
		}()},
		&corev3.Node{Id: "sidecar~10.9.0.1~bind.ns-2~ns-2.svc.cluster.local", Metadata: md(map[string]any{MetaNamespace: "ns-2", MetaBindIP: "127.0.0.2"})},
		&corev3.Node{Id: "router~10.9.0.2~gw.ns-0~ns-0.svc.cluster.local", Metadata: md(map[string]any{MetaNamespace: "ns-0",
			MetaLabels: map[string]any{"istio": "ingressgateway"}, MetaInstanceIPs: "10.9.0.2"})},
		&corev3.Node{Id: "sidecar~10.9.0.3~grpc.ns-3~ns-3.svc.cluster.local", Metadata: md(map[string]any{MetaNamespace: "ns-3", MetaGenerator: "grpc"})},
		&corev3.Node{Id: "sidecar~bad~bad.ns-3~ns-3.svc.cluster.local", Metadata: md(map[string]any{MetaNamespace: "ns-3", MetaInstanceIPs: "not-an-ip"})},
	)
	check := func(push uint64) {
		t.Helper()
		in := cp.input()
		for _, n := range nodes {
			p, err := ProxyFromNode(n, cp.opts.Mesh)
			if err != nil {
				t.Fatal(err)
			}
			want, wantErr := translate.Translate(in, p)
			got, err := cp.Generate(n, push)
			if wantErr != nil || err != nil {
				if fmt.Sprint(err) != fmt.Sprint(wantErr) {
					t.Errorf("push %d, %s: error %v, want %v", push, n.GetId(), err, wantErr)
				}
				continue
			}
			for typ, rs := range want.ByType() {
				served := map[string][]byte{}
				for _, set := range got[typ] {
					for _, r := range set.Resources() {
						served[r.Name] = r.Any.GetValue()
					}
				}
				if len(served) != len(rs) {
					t.Errorf("push %d, %s: %d %s, want %d", push, n.GetId(), len(served), typ, len(rs))
					continue
				}
				for _, r := range rs {
					b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
					if err != nil {
						t.Fatal(err)
					}
					if name := cachev3.GetResourceName(r); !bytes.Equal(served[name], b) {
						t.Errorf("push %d, %s: %s %q differs from Translate's", push, n.GetId(), typ, name)
					}
				}
			}
		}
	}
	check(1)
	check(1) // from the views and parts kept
	// A routing change (same registry), then an endpoint change.
	if _, _, err := cp.Store().Apply(&config.Object{APIVersion: "networking.istio.io/v1", Kind: config.VirtualService,
		Meta: config.Meta{Namespace: scaleNamespace(0), Name: scaleName(0)}, Spec: scaleVirtualService(0, 70, "changed")}); err != nil {
		t.Fatal(err)
	}
	check(2)
	if _, err := cp.Store().Create(&config.Object{APIVersion: "networking.istio.io/v1", Kind: config.WorkloadEntry,
		Meta: config.Meta{Namespace: scaleNamespace(0), Name: "new"},
		Spec: &networking.WorkloadEntry{Address: "10.254.254.1", Labels: map[string]string{"app": scaleName(0), "version": "v2"}}}); err != nil {
		t.Fatal(err)
	}
	check(3)
}
