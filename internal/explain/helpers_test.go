package explain

import (
	"context"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// reviewsService is the mesh of every test: reviews v1 and v2 behind
// their sidecars, registered as WorkloadEntries.
const reviewsService = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec:
  address: 10.0.0.1
  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec:
  address: 10.0.0.2
  labels: {app: reviews, version: v2, security.istio.io/tlsMode: istio}
  serviceAccount: reviews
`

const reviewsSubsets = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// fixture describes one test mesh.
type fixture struct {
	config string // Istio YAML, added to reviewsService
	mesh   translate.Mesh
	// clientMTLS: the client sidecar holds a workload certificate (the
	// reviews sidecars always do).
	clientMTLS bool
}

// input decodes the fixture's configuration as the control plane's
// store and registry would hold it.
func (f fixture) input(t testing.TB) translate.Input {
	t.Helper()
	objs, err := config.DecodeOptions{DefaultNamespace: "default"}.Decode([]byte(reviewsService + "---\n" + f.config))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	var in translate.Input
	var ses, wes []*config.Object
	for _, o := range objs {
		switch o.Kind {
		case config.ServiceEntry:
			ses = append(ses, o)
		case config.WorkloadEntry:
			wes = append(wes, o)
		case config.VirtualService:
			in.VirtualServices = append(in.VirtualServices, o)
		case config.DestinationRule:
			in.DestinationRules = append(in.DestinationRules, o)
		case config.PeerAuthentication:
			in.PeerAuthentications = append(in.PeerAuthentications, o)
		case config.RequestAuthentication:
			in.RequestAuthentications = append(in.RequestAuthentications, o)
		case config.AuthorizationPolicy:
			in.AuthorizationPolicies = append(in.AuthorizationPolicies, o)
		case config.Gateway:
			in.Gateways = append(in.Gateways, o)
		default:
			t.Fatalf("fixture: unexpected kind %s", o.Kind)
		}
	}
	in.Registry = registry.Build(ses, wes, nil)
	return in
}

// proxies translates the fixture for the client (customer-v1, with an
// HTTP_PROXY listener), another client (productpage-v1) and the two
// reviews sidecars, as the control plane serves them.
func (f fixture) proxies(t testing.TB) []*Proxy {
	t.Helper()
	in := f.input(t)
	inbound := []translate.InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 9080}}
	specs := []translate.Proxy{
		{ID: "sidecar~10.0.0.9~customer-v1.default", Labels: map[string]string{"app": "customer", "version": "v1"},
			IPs: []string{"10.0.0.9"}, ServiceAccount: "customer", Outbound: translate.Outbound{HTTPProxy: "127.0.0.1:15001"}, MTLS: f.clientMTLS},
		{ID: "sidecar~10.0.0.8~productpage-v1.default", Labels: map[string]string{"app": "productpage", "version": "v1"},
			IPs: []string{"10.0.0.8"}, ServiceAccount: "productpage", Outbound: translate.Outbound{HTTPProxy: "127.0.0.1:15001"}, MTLS: f.clientMTLS},
		{ID: "sidecar~10.0.0.1~reviews-v1.default", Labels: map[string]string{"app": "reviews", "version": "v1"},
			IPs: []string{"10.0.0.1"}, ServiceAccount: "reviews", Inbound: inbound, MTLS: true},
		{ID: "sidecar~10.0.0.2~reviews-v2.default", Labels: map[string]string{"app": "reviews", "version": "v2"},
			IPs: []string{"10.0.0.2"}, ServiceAccount: "reviews", Inbound: inbound, MTLS: true},
	}
	var out []*Proxy
	for _, p := range specs {
		p.Namespace, p.Mesh = "default", f.mesh
		res, err := translate.Translate(in, p)
		if err != nil {
			t.Fatalf("translate %s: %v", p.ID, err)
		}
		ep := &Proxy{ID: p.ID, Namespace: p.Namespace, Labels: p.Labels, IPs: p.IPs,
			Resources: Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints}}
		if p.MTLS {
			ep.Identity = p.SpiffeID()
		}
		out = append(out, ep)
	}
	return out
}

func (f fixture) explain(t *testing.T, req Request) *Trail {
	t.Helper()
	if req.From == "" {
		req.From = "customer-v1"
	}
	tr, err := Explain(context.Background(), f.proxies(t), req, Options{})
	if err != nil {
		t.Fatalf("Explain: %v", err)
	}
	var b strings.Builder
	if err := tr.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	return tr
}

// steps returns every step of the trail, nested ones included, with the
// index of its hop.
func steps(tr *Trail) []hopStep {
	var out []hopStep
	var walk func(hop int, ss []Step)
	walk = func(hop int, ss []Step) {
		for _, s := range ss {
			out = append(out, hopStep{hop, s})
			walk(hop, s.Steps)
		}
	}
	for i, h := range tr.Hops {
		walk(i, h.Steps)
	}
	return out
}

type hopStep struct {
	hop int
	Step
}

// findStep returns the first step of kind whose decision contains text.
func findStep(t *testing.T, tr *Trail, kind, text string) hopStep {
	t.Helper()
	for _, s := range steps(tr) {
		if s.Kind == kind && strings.Contains(s.Decision, text) {
			return s
		}
	}
	t.Fatalf("no %s step with %q", kind, text)
	return hopStep{}
}
