package fieldcheck

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestCheck(t *testing.T) {
	rules := Rules{
		"envoy.config.route.v3.RouteConfiguration":       {"name", "virtual_hosts"},
		"envoy.config.route.v3.VirtualHost":              {"name", "domains", "routes"},
		"envoy.config.route.v3.Route":                    {"match", "route"},
		"envoy.config.route.v3.RouteMatch":               {"prefix"},
		"envoy.config.route.v3.RouteAction":              {"cluster", "timeout", "weighted_clusters"},
		"envoy.extensions.filters.http.router.v3.Router": {All},
	}
	route := func(ra *routev3.RouteAction) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
			Name: "vh", Domains: []string{"*"},
			Routes: []*routev3.Route{
				{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"}}}},
				{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: ra}},
			},
		}}}
	}
	router, _ := anypb.New(&routerv3.Router{})
	other, _ := anypb.New(&structpb.Struct{})
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"allowed", func() error {
			return rules.Check(route(&routev3.RouteAction{Timeout: durationpb.New(1), ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "b"}}))
		}, ""},
		{"unsupported field", func() error {
			return rules.Check(route(&routev3.RouteAction{PrefixRewrite: "/x"}))
		}, "virtual_hosts[0].routes[1].route.prefix_rewrite: field is not supported by amime"},
		{"unlisted message", func() error {
			return rules.Check(route(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{}}}))
		}, "virtual_hosts[0].routes[1].route.weighted_clusters: envoy.config.route.v3.WeightedCluster is not supported by amime"},
		{"any of listed type", func() error { return rules.Check(router) }, ""},
		{"any of unlisted type", func() error { return Rules{}.Check(router) }, `type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" is not supported by amime`},
		{"any of an unlisted well-known type", func() error { return rules.Check(other) }, `type "type.googleapis.com/google.protobuf.Struct" is not supported by amime`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Fatalf("error = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	m := Merge(Rules{"a": {"x"}}, Rules{"a": {"y"}, "b": {All}})
	if len(m["a"]) != 2 || m["b"][0] != All {
		t.Fatalf("Merge = %v", m)
	}
}
