package translate

import (
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// BenchmarkTranslate is one sidecar's view of a mesh of 1000 services with
// 10 endpoints each (HTTP_PROXY mode: one route configuration with 1000
// virtual hosts, 1000 clusters, 1000 assignments), every tenth service
// with a VirtualService and a DestinationRule with two subsets.
func BenchmarkTranslate(b *testing.B) {
	var ses []*config.Object
	var in Input
	for i := range 1000 {
		host := fmt.Sprintf("svc-%04d.ns-%d.svc.cluster.local", i, i%10)
		se := &networking.ServiceEntry{
			Hosts: []string{host}, Resolution: networking.ServiceEntry_STATIC, Location: networking.ServiceEntry_MESH_INTERNAL,
			Ports: []*networking.ServicePort{{Name: "http", Number: 8080, Protocol: "HTTP"}},
		}
		for j := range 10 {
			se.Endpoints = append(se.Endpoints, &networking.WorkloadEntry{
				Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1),
				Labels:  map[string]string{"app": "svc", "version": fmt.Sprintf("v%d", j%2+1), registry.TLSModeLabel: "istio"},
			})
		}
		ns := fmt.Sprintf("ns-%d", i%10)
		ses = append(ses, object(config.ServiceEntry, ns, host, se))
		if i%10 == 0 {
			in.DestinationRules = append(in.DestinationRules, object(config.DestinationRule, ns, host, &networking.DestinationRule{
				Host: host,
				Subsets: []*networking.Subset{
					{Name: "v1", Labels: map[string]string{"version": "v1"}},
					{Name: "v2", Labels: map[string]string{"version": "v2"}},
				},
			}))
			in.VirtualServices = append(in.VirtualServices, object(config.VirtualService, ns, host, &networking.VirtualService{
				Hosts: []string{host},
				Http: []*networking.HTTPRoute{
					{
						Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
							"user-agent": {MatchType: &networking.StringMatch_Regex{Regex: ".*Safari.*"}},
						}}},
						Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host, Subset: "v2"}}},
					},
					{Route: []*networking.HTTPRouteDestination{
						{Destination: &networking.Destination{Host: host, Subset: "v1"}, Weight: 90},
						{Destination: &networking.Destination{Host: host, Subset: "v2"}, Weight: 10},
					}},
				},
			}))
		}
	}
	in.Registry = registry.Build(ses, nil, nil)
	p := Proxy{ID: "bench", Namespace: "ns-0", IPs: []string{"10.99.0.1"}, Outbound: Outbound{HTTPProxy: "127.0.0.1:15001"},
		Inbound: []InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 8080, ListenPort: 18080}}}
	b.ReportAllocs()
	for b.Loop() {
		r, err := Translate(in, p)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Endpoints) != 1200 {
			b.Fatalf("%d assignments", len(r.Endpoints))
		}
	}
}
