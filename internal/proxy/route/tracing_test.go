package route

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/amime-mesh/amime/internal/proxy/tracing"
)

func TestRouteTracing(t *testing.T) {
	rc := func(tr *routev3.Tracing) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Tracing: tr,
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}},
		}}}}
	}
	tab, err := Compile(rc(&routev3.Tracing{
		RandomSampling: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND},
		CustomTags:     []*tagv3.CustomTag{{Tag: "a", Type: &tagv3.CustomTag_Literal_{Literal: &tagv3.CustomTag_Literal{Value: "b"}}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	tr := tab.Select(get("h", "/x"), 0).Tracing()
	if tr == nil {
		t.Fatal("no route tracing")
	}
	// Unset percentages are 100%, as in Envoy's route Tracing.
	want := tracing.Sampling{Client: tracing.Fraction{Numerator: 100, Denominator: 100}, Random: tracing.Fraction{Numerator: 5, Denominator: 10000},
		Overall: tracing.Fraction{Numerator: 100, Denominator: 100}}
	if tr.Sampling != want || len(tr.Tags) != 1 || tr.Tags[0].Literal != "b" {
		t.Errorf("tracing = %+v", tr)
	}
	if tab, _ := Compile(rc(nil)); tab.Select(get("h", "/x"), 0).Tracing() != nil {
		t.Error("tracing set without config")
	}
	_, err = Compile(rc(&routev3.Tracing{CustomTags: []*tagv3.CustomTag{{Tag: "m", Type: &tagv3.CustomTag_Metadata_{Metadata: &tagv3.CustomTag_Metadata{}}}}}))
	if err == nil || !strings.Contains(err.Error(), "virtual_hosts[0].routes[0].tracing.custom_tags[0].metadata") {
		t.Errorf("metadata tag: err = %v", err)
	}
}
