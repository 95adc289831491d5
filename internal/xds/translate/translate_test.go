package translate

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

func object(kind, ns, name string, spec proto.Message) *config.Object {
	return &config.Object{Kind: kind, Meta: config.Meta{Namespace: ns, Name: name, CreationTimestamp: time.Unix(1_700_000_000, 0)}, Spec: spec}
}

func httpService(ns, host string, port uint32) *config.Object {
	return object(config.ServiceEntry, ns, host, &networking.ServiceEntry{
		Hosts: []string{host}, Resolution: networking.ServiceEntry_STATIC, Location: networking.ServiceEntry_MESH_INTERNAL,
		Ports:     []*networking.ServicePort{{Name: "http", Number: port, Protocol: "HTTP"}},
		Endpoints: []*networking.WorkloadEntry{{Address: "10.0.0.1", Labels: map[string]string{"version": "v1"}}},
	})
}

func vsTo(ns, name string, hosts []string, dest string) *config.Object {
	return object(config.VirtualService, ns, name, &networking.VirtualService{
		Hosts: hosts,
		Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: dest}}}}},
	})
}

func sidecar(ns string) Proxy {
	return Proxy{ID: "test", Namespace: ns, Outbound: Outbound{HTTPProxy: "127.0.0.1:15001"}}
}

// vhost returns the virtual host of the http_proxy route with that name.
func vhost(t *testing.T, r *Resources, name string) *routev3.VirtualHost {
	t.Helper()
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() == name {
				return vh
			}
		}
	}
	t.Fatalf("no virtual host %q", name)
	return nil
}

func TestHostNames(t *testing.T) {
	b := &builder{mesh: Mesh{}.withDefaults(), proxy: &Proxy{Namespace: "default"}}
	aliases := []struct {
		host string
		want []string
	}{
		{"reviews.default.svc.cluster.local", []string{"reviews", "reviews.default.svc", "reviews.default"}},
		{"reviews.other.svc.cluster.local", []string{"reviews.other", "reviews.other.svc"}},
		{"httpbin.org", nil},
		{"a.b.c.svc.cluster.local", nil}, // not name.namespace
		{"*.default.svc.cluster.local", nil},
	}
	for _, tc := range aliases {
		if got := b.aliases(tc.host); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("aliases(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
	resolve := []struct{ host, ns, want string }{
		{"reviews", "prod", "reviews.prod.svc.cluster.local"},
		{"Reviews.Prod", "default", "reviews.prod"}, // has a dot: as is (Istio)
		{"*", "prod", "*"},
		{"*.example.com", "prod", "*.example.com"},
		{"10.0.0.1", "prod", "10.0.0.1"},
	}
	for _, tc := range resolve {
		if got := b.resolveHost(tc.host, tc.ns); got != tc.want {
			t.Errorf("resolveHost(%q, %q) = %q, want %q", tc.host, tc.ns, got, tc.want)
		}
	}
	coverage := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "anything.example.com", true},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "*.api.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.api.example.com", "*.example.com", false},
		{"api.example.com", "*.example.com", false},
		{"api.example.com", "api.example.com", true},
	}
	for _, tc := range coverage {
		if got := registry.HostCovers(tc.pattern, tc.host); got != tc.want {
			t.Errorf("registry.HostCovers(%q, %q) = %v", tc.pattern, tc.host, got)
		}
	}
}

func TestTranslateRejectsBadProxy(t *testing.T) {
	for name, p := range map[string]Proxy{
		"type":       {Type: ProxyType(7)},
		"http proxy": {Outbound: Outbound{HTTPProxy: "localhost:15001"}},
		"bind ip":    {Outbound: Outbound{BindIP: "127.0.0.1:80"}},
		"ip":         {IPs: []string{"not-an-ip"}},
		"inbound":    {Inbound: []InboundPort{{Name: "http"}}},
	} {
		if _, err := Translate(Input{}, p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestEmptyInput(t *testing.T) {
	r, err := Translate(Input{}, sidecar("default"))
	if err != nil {
		t.Fatal(err)
	}
	// The catch-all still routes unknown hosts.
	if len(r.Listeners) != 1 || len(r.Routes) != 1 || len(r.Clusters) != 2 || len(r.Endpoints) != 0 {
		t.Errorf("got %d listeners, %d routes, %d clusters, %d endpoints", len(r.Listeners), len(r.Routes), len(r.Clusters), len(r.Endpoints))
	}
	byType := r.ByType()
	if len(byType[resourcev3.ListenerType]) != 1 || len(byType[resourcev3.ClusterType]) != 2 {
		t.Errorf("ByType = %v", byType)
	}
}

func TestVirtualServicePrecedence(t *testing.T) {
	reg := registry.Build([]*config.Object{
		httpService("prod", "reviews.prod.svc.cluster.local", 8080),
		httpService("prod", "ratings.prod.svc.cluster.local", 8080),
		httpService("prod", "details.prod.svc.cluster.local", 8080),
		httpService("prod", "a.api.example.com", 8080),
	}, nil, nil)
	in := Input{Registry: reg, VirtualServices: []*config.Object{
		// Same host from two namespaces: the proxy's own namespace wins.
		vsTo("prod", "reviews-prod", []string{"reviews"}, "ratings.prod.svc.cluster.local"),
		vsTo("front", "reviews-front", []string{"reviews.prod.svc.cluster.local"}, "details.prod.svc.cluster.local"),
		// Exact beats wildcard; the most specific wildcard wins.
		vsTo("prod", "wild", []string{"*.prod.svc.cluster.local"}, "details.prod.svc.cluster.local"),
		vsTo("prod", "ratings", []string{"ratings"}, "reviews.prod.svc.cluster.local"),
		vsTo("prod", "wide", []string{"*.example.com"}, "reviews.prod.svc.cluster.local"),
		vsTo("prod", "narrow", []string{"*.api.example.com"}, "ratings.prod.svc.cluster.local"),
	}}
	r, err := Translate(in, sidecar("front"))
	if err != nil {
		t.Fatal(err)
	}
	for vh, want := range map[string]string{
		"reviews.prod.svc.cluster.local:8080": "outbound|8080||details.prod.svc.cluster.local",
		"ratings.prod.svc.cluster.local:8080": "outbound|8080||reviews.prod.svc.cluster.local",
		"details.prod.svc.cluster.local:8080": "outbound|8080||details.prod.svc.cluster.local",
		"a.api.example.com:8080":              "outbound|8080||ratings.prod.svc.cluster.local",
	} {
		if got := vhost(t, r, vh).GetRoutes()[0].GetRoute().GetCluster(); got != want {
			t.Errorf("%s routes to %s, want %s", vh, got, want)
		}
	}
}

func TestDestinationRulePrecedence(t *testing.T) {
	dr := func(ns, name, host string, lb networking.LoadBalancerSettings_SimpleLB) *config.Object {
		return object(config.DestinationRule, ns, name, &networking.DestinationRule{
			Host:          host,
			TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: lb}}},
		})
	}
	reg := registry.Build([]*config.Object{httpService("svc", "reviews.svc.svc.cluster.local", 8080)}, nil, nil)
	tests := []struct {
		name string
		drs  []*config.Object
		want string
	}{
		{"root namespace", []*config.Object{dr("istio-system", "mesh", "*.cluster.local", networking.LoadBalancerSettings_RANDOM)}, "RANDOM"},
		{"service namespace beats root", []*config.Object{
			dr("istio-system", "mesh", "*.cluster.local", networking.LoadBalancerSettings_RANDOM),
			dr("svc", "svc", "reviews", networking.LoadBalancerSettings_ROUND_ROBIN),
		}, "ROUND_ROBIN"},
		{"proxy namespace beats service", []*config.Object{
			dr("svc", "svc", "reviews", networking.LoadBalancerSettings_ROUND_ROBIN),
			dr("client", "client", "reviews.svc.svc.cluster.local", networking.LoadBalancerSettings_RANDOM),
		}, "RANDOM"},
		{"exact beats wildcard in one namespace", []*config.Object{
			dr("svc", "wild", "*.svc.svc.cluster.local", networking.LoadBalancerSettings_RANDOM),
			dr("svc", "exact", "reviews", networking.LoadBalancerSettings_ROUND_ROBIN),
		}, "ROUND_ROBIN"},
		{"short name resolves in the rule's namespace", []*config.Object{
			dr("client", "client", "reviews", networking.LoadBalancerSettings_RANDOM), // reviews.client...
		}, "LEAST_REQUEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Translate(Input{Registry: reg, DestinationRules: tc.drs}, sidecar("client"))
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(r.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == "outbound|8080||reviews.svc.svc.cluster.local" })
			if got := r.Clusters[i].GetLbPolicy().String(); got != tc.want {
				t.Errorf("lb_policy = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDomainsDoNotCollide(t *testing.T) {
	// "foo.bar" is a real (external) host; the alias "foo.bar" of
	// foo.bar.svc.cluster.local must not take it, whatever the order.
	reg := registry.Build([]*config.Object{
		httpService("bar", "foo.bar.svc.cluster.local", 8080),
		httpService("ext", "foo.bar", 8080),
	}, nil, nil)
	r, err := Translate(Input{Registry: reg}, sidecar("default"))
	if err != nil {
		t.Fatal(err)
	}
	if got := vhost(t, r, "foo.bar:8080").GetDomains(); !reflect.DeepEqual(got, []string{"foo.bar:8080"}) {
		t.Errorf("foo.bar domains = %q", got)
	}
	if got := vhost(t, r, "foo.bar.svc.cluster.local:8080").GetDomains(); slices.Contains(got, "foo.bar:8080") {
		t.Errorf("alias took another service's name: %q", got)
	}
}

func TestListenerAddressClash(t *testing.T) {
	p := sidecar("default")
	p.IPs = []string{"127.0.0.1"}
	p.Inbound = []InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 15001}}
	r, err := Translate(Input{}, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Listeners) != 1 || !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "already used") }) {
		t.Errorf("listeners %d, warnings %q", len(r.Listeners), r.Warnings)
	}
}

func TestMeshDefaultRetryAndIdentity(t *testing.T) {
	reg := registry.Build([]*config.Object{httpService("default", "a.default.svc.cluster.local", 8080)}, nil, nil)
	p := sidecar("default")
	p.ServiceAccount = "a"
	p.Mesh = Mesh{TrustDomain: "example.org", DefaultHTTPRetry: &networking.HTTPRetry{Attempts: 5, RetryOn: "5xx"}}
	r, err := Translate(Input{Registry: reg}, p)
	if err != nil {
		t.Fatal(err)
	}
	rp := vhost(t, r, "a.default.svc.cluster.local:8080").GetRoutes()[0].GetRoute().GetRetryPolicy()
	if rp.GetNumRetries().GetValue() != 5 || rp.GetRetryOn() != "5xx" {
		t.Errorf("retry policy = %v", rp)
	}
	if got := p.SpiffeID(); got != "spiffe://example.org/ns/default/sa/a" {
		t.Errorf("SpiffeID = %q", got)
	}
}
