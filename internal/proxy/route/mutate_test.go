package route

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/proxy/header"
)

const (
	appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
	overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIf    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
)

func TestMutateRequestActions(t *testing.T) {
	deprecated := func(key, value string, appendValue bool) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, Append: wrapperspb.Bool(appendValue)}
	}
	keepEmpty := hvo("x-e", "", appendOrAdd)
	keepEmpty.KeepEmptyValue = true
	cases := []struct {
		name   string
		add    []*corev3.HeaderValueOption
		remove []string
		in     header.List
		want   header.List
	}{
		{"append adds a line", []*corev3.HeaderValueOption{hvo("x-a", "2", appendOrAdd)}, nil, hdrs("x-a", "1"), hdrs("x-a", "1", "x-a", "2")},
		{"append adds when absent", []*corev3.HeaderValueOption{hvo("x-a", "2", appendOrAdd)}, nil, nil, hdrs("x-a", "2")},
		{"add_if_absent absent", []*corev3.HeaderValueOption{hvo("x-a", "2", addIfAbsent)}, nil, nil, hdrs("x-a", "2")},
		{"add_if_absent present", []*corev3.HeaderValueOption{hvo("x-a", "2", addIfAbsent)}, nil, hdrs("x-a", "1"), hdrs("x-a", "1")},
		{"overwrite_if_exists_or_add present", []*corev3.HeaderValueOption{hvo("x-a", "2", overwriteOrAdd)}, nil, hdrs("x-a", "1", "x-a", "0"), hdrs("x-a", "2")},
		{"overwrite_if_exists_or_add absent", []*corev3.HeaderValueOption{hvo("x-a", "2", overwriteOrAdd)}, nil, nil, hdrs("x-a", "2")},
		{"overwrite_if_exists present", []*corev3.HeaderValueOption{hvo("x-a", "2", overwriteIf)}, nil, hdrs("x-a", "1"), hdrs("x-a", "2")},
		{"overwrite_if_exists absent", []*corev3.HeaderValueOption{hvo("x-a", "2", overwriteIf)}, nil, nil, nil},
		{"deprecated append true", []*corev3.HeaderValueOption{deprecated("x-a", "2", true)}, nil, hdrs("x-a", "1"), hdrs("x-a", "1", "x-a", "2")},
		{"deprecated append false overwrites", []*corev3.HeaderValueOption{deprecated("x-a", "2", false)}, nil, hdrs("x-a", "1"), hdrs("x-a", "2")},
		{"empty value is dropped", []*corev3.HeaderValueOption{hvo("x-e", "", appendOrAdd)}, nil, nil, nil},
		{"keep_empty_value", []*corev3.HeaderValueOption{keepEmpty}, nil, nil, hdrs("x-e", "")},
		{"key is lower-cased", []*corev3.HeaderValueOption{hvo("X-Up", "v", appendOrAdd)}, nil, nil, hdrs("x-up", "v")},
		{"remove before add", []*corev3.HeaderValueOption{hvo("x-a", "new", appendOrAdd)}, []string{"X-A"}, hdrs("x-a", "old", "x-b", "b"), hdrs("x-b", "b", "x-a", "new")},
		{"overwrites apply before appends", []*corev3.HeaderValueOption{hvo("x-a", "a", appendOrAdd), hvo("x-a", "b", overwriteOrAdd)}, nil, nil, hdrs("x-a", "b", "x-a", "a")},
		{"conditions see the headers before the level", []*corev3.HeaderValueOption{hvo("x-a", "a", overwriteOrAdd), hvo("x-a", "b", addIfAbsent)}, nil, nil, hdrs("x-a", "a", "x-a", "b")},
		{"values see the headers before the level", []*corev3.HeaderValueOption{hvo("x-a", "new", overwriteOrAdd), hvo("x-copy", "%REQ(x-a)%", appendOrAdd)}, nil, hdrs("x-a", "old"), hdrs("x-a", "new", "x-copy", "old")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt := fwdRoute("r", prefixMatch("/"), toCluster("c"))
			rt.RequestHeadersToAdd, rt.RequestHeadersToRemove = tc.add, tc.remove
			r := mustCompile(t, config(vhost("vh", []string{"*"}, rt))).Select(get("h", "/"), 0)
			h := tc.in
			r.MutateRequest(&h, &Env{Request: get("h", "/")})
			if len(h) != 0 || len(tc.want) != 0 {
				if !reflect.DeepEqual(h, tc.want) {
					t.Fatalf("headers = %v, want %v", h, tc.want)
				}
			}
		})
	}
}

func TestMutationOrder(t *testing.T) {
	level := func(v string) []*corev3.HeaderValueOption {
		return []*corev3.HeaderValueOption{hvo("x-level", v, overwriteOrAdd), hvo("x-trail", v, appendOrAdd)}
	}
	build := func(mostSpecificWins bool) *Table {
		w1 := cw("a", 1)
		w1.RequestHeadersToAdd = level("cluster")
		w1.ResponseHeadersToAdd = level("cluster")
		rt := fwdRoute("r", prefixMatch("/"), weights(w1))
		rt.RequestHeadersToAdd, rt.ResponseHeadersToAdd = level("route"), level("route")
		vh := vhost("vh", []string{"*"}, rt)
		vh.RequestHeadersToAdd, vh.ResponseHeadersToAdd = level("vhost"), level("vhost")
		rc := config(vh)
		rc.RequestHeadersToAdd, rc.ResponseHeadersToAdd = level("config"), level("config")
		rc.MostSpecificHeaderMutationsWins = mostSpecificWins
		return mustCompile(t, rc)
	}
	cases := []struct {
		name             string
		mostSpecificWins bool
		want             header.List
	}{
		{"route configuration wins by default", false, hdrs("x-level", "config",
			"x-trail", "cluster", "x-trail", "route", "x-trail", "vhost", "x-trail", "config")},
		{"most_specific_header_mutations_wins", true, hdrs("x-level", "route",
			"x-trail", "cluster", "x-trail", "config", "x-trail", "vhost", "x-trail", "route")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := build(tc.mostSpecificWins).Select(get("h", "/"), 0)
			var req, resp header.List
			r.MutateRequest(&req, &Env{})
			r.MutateResponse(&resp, &Env{})
			if !reflect.DeepEqual(req, tc.want) || !reflect.DeepEqual(resp, tc.want) {
				t.Fatalf("request %v\nresponse %v\nwant %v", req, resp, tc.want)
			}
		})
	}
}

func TestSubstitution(t *testing.T) {
	env := &Env{
		Request:                            get("svc.local:8080", "/p?q=1", "x-in", "inval", "x-alt", "altval", "x-long", "abcdefgh"),
		DownstreamRemoteAddress:            "10.0.0.1:5555",
		DownstreamRemoteAddressWithoutPort: "10.0.0.1",
		DownstreamLocalAddress:             "10.0.0.2:80",
		Hostname:                           "node-1",
		Protocol:                           "HTTP/2",
	}
	cases := []struct{ value, want string }{
		{"plain", "plain"},
		{"100%%", "100%"},
		{"%%REQ(x-in)%%", "%REQ(x-in)%"},
		{"%REQ(x-in)%", "inval"},
		{"%REQ(X-IN)%", "inval"},
		{"%REQ(x-missing?x-alt)%", "altval"},
		{"%REQ(x-in?x-alt)%", "inval"},
		{"%REQ(x-long):3%", "abc"},
		{"%HOSTNAME:4%-%REQ(x-long):0%", "node-"},
		{"%REQ(:path)%", "/p?q=1"},
		{"%REQ(:authority)%", "svc.local:8080"},
		{"%REQ(host)%", "svc.local:8080"},
		{"%REQ(:method)% %REQ(:scheme)%", "GET http"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.1:5555"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.0.1"},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.2:80"},
		{"%HOSTNAME%", "node-1"},
		{"by-%PROTOCOL%-on-%HOSTNAME%", "by-HTTP/2-on-node-1"},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			rt := fwdRoute("r", prefixMatch("/"), toCluster("c"))
			rt.RequestHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-out", tc.value, appendOrAdd)}
			rt.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-out", tc.value, appendOrAdd)}
			r := mustCompile(t, config(vhost("vh", []string{"*"}, rt))).Select(env.Request, 0)
			req := append(header.List(nil), env.Request.Headers...)
			r.MutateRequest(&req, env)
			if got := req.Value("x-out"); got != tc.want {
				t.Errorf("request x-out = %q, want %q", got, tc.want)
			}
			var resp header.List
			r.MutateResponse(&resp, env)
			if got := resp.Value("x-out"); got != tc.want {
				t.Errorf("response x-out = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSubstitutionMissingValues(t *testing.T) {
	rt := fwdRoute("r", prefixMatch("/"), toCluster("c"))
	rt.RequestHeadersToAdd = []*corev3.HeaderValueOption{hvo("x-req", "%REQ(x-none)%", appendOrAdd), hvo("x-host", "%HOSTNAME%", appendOrAdd)}
	r := mustCompile(t, config(vhost("vh", []string{"*"}, rt))).Select(get("h", "/"), 0)
	var h header.List
	r.MutateRequest(&h, nil)
	if len(h) != 0 {
		t.Fatalf("empty substitutions must be dropped, got %v", h)
	}
}

func TestPerFilterConfig(t *testing.T) {
	anyCfg := func() map[string]*anypb.Any { return map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t)} }
	rt := fwdRoute("r", prefixMatch("/"), weights(cw("a", 1)))
	rt.TypedPerFilterConfig = anyCfg()
	rt.GetRoute().GetWeightedClusters().Clusters[0].TypedPerFilterConfig = anyCfg()
	vh := vhost("vh", []string{"*"}, rt)
	vh.TypedPerFilterConfig = anyCfg()
	rc := config(vh)
	rc.TypedPerFilterConfig = anyCfg()

	_, err := Compile(rc)
	if want := `typed_per_filter_config["envoy.filters.http.fault"]: per-route configuration of HTTP filter "envoy.filters.http.fault" is not supported by amime`; err == nil || err.Error() != want {
		t.Fatalf("Compile error = %v, want %s", err, want)
	}
	n := 0
	tab, err := CompileWithOptions(rc, Options{FilterConfigParsers: map[string]FilterConfigParser{
		"envoy.filters.http.fault": func(a *anypb.Any) (any, error) { n++; return n, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := tab.Select(get("h", "/"), 0)
	// Parsed in order: route configuration (1), virtual host (2), route (3), weighted cluster (4).
	if got := r.PerFilterConfig("envoy.filters.http.fault"); got != 4 {
		t.Errorf("most specific = %v, want the weighted cluster's (4)", got)
	}
	if got := r.PerFilterConfigs("envoy.filters.http.fault"); !reflect.DeepEqual(got, []any{1, 2, 3, 4}) {
		t.Errorf("PerFilterConfigs = %v, want [1 2 3 4]", got)
	}
	if r.PerFilterConfig("other") != nil {
		t.Error("unknown filter has a config")
	}
}

func TestMetadataIsIgnored(t *testing.T) {
	rt := fwdRoute("r", prefixMatch("/"), toCluster("c"))
	rt.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {}}}
	if _, err := Compile(config(vhost("vh", []string{"*"}, rt))); err != nil {
		t.Fatal(err)
	}
}

func mustAny(t *testing.T) *anypb.Any {
	t.Helper()
	a, err := anypb.New(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}
