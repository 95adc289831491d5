package translate

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/golang/protobuf/jsonpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"sigs.k8s.io/yaml"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/proxy"
	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/hcm"
	"github.com/amime-mesh/amime/internal/proxy/listener"
	proxyroute "github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/registry"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// testProxy is the test-only document of an input.yaml describing the
// requesting proxy (kind: TestProxy).
type testProxy struct {
	ID             string            `json:"id"`
	Type           string            `json:"type"` // sidecar | router | grpc
	Namespace      string            `json:"namespace"`
	Labels         map[string]string `json:"labels"`
	IPs            []string          `json:"ips"`
	ServiceAccount string            `json:"serviceAccount"`
	Inbound        []struct {
		Name       string `json:"name"`
		Protocol   string `json:"protocol"`
		Port       uint32 `json:"port"`
		ListenPort uint32 `json:"listenPort"`
		TargetPort uint32 `json:"targetPort"`
	} `json:"inbound"`
	Outbound struct {
		HTTPProxy string `json:"httpProxy"`
		BindIP    string `json:"bindIP"`
	} `json:"outbound"`
	RegistryOnly bool `json:"registryOnly"`
	// MTLS: the proxy holds a workload certificate.
	MTLS bool `json:"mtls"`
	// Unhealthy lists WorkloadEntries ("namespace/name") whose heartbeats
	// stopped.
	Unhealthy []string `json:"unhealthy"`
	// MeshConfig is Istio's MeshConfig for the case.
	MeshConfig json.RawMessage `json:"meshConfig"`
}

type testCase struct {
	in    Input
	proxy Proxy
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadCase decodes an input.yaml: Istio objects plus one TestProxy. Specs
// go through strict jsonpb, which takes Istio's Go-style durations.
func loadCase(t testing.TB, path string) testCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ses, wes []*config.Object
	var tc testCase
	var tp *testProxy
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		var env struct {
			APIVersion string          `json:"apiVersion"`
			Kind       string          `json:"kind"`
			Metadata   config.Meta     `json:"metadata"`
			Spec       json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(js, &env); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if env.Kind == "TestProxy" {
			tp = &testProxy{}
			if err := json.Unmarshal(js, tp); err != nil {
				t.Fatalf("%s: TestProxy: %v", path, err)
			}
			continue
		}
		kind, ok := config.LookupKind(env.Kind)
		if !ok {
			t.Fatalf("%s: document %d: unknown kind %q", path, i, env.Kind)
		}
		spec := kind.New()
		if err := (&jsonpb.Unmarshaler{}).Unmarshal(bytes.NewReader(env.Spec), protoadapt.MessageV1Of(spec)); err != nil {
			t.Fatalf("%s: %s %s: %v", path, env.Kind, env.Metadata.Name, err)
		}
		if env.Metadata.Namespace == "" {
			env.Metadata.Namespace = "default"
		}
		if env.Metadata.CreationTimestamp.IsZero() {
			// Document order is precedence order.
			env.Metadata.CreationTimestamp = time.Unix(int64(1_700_000_000+i), 0).UTC()
		}
		o := &config.Object{APIVersion: env.APIVersion, Kind: kind.Kind, Meta: env.Metadata, Spec: spec}
		switch kind.Kind {
		case config.ServiceEntry:
			ses = append(ses, o)
		case config.WorkloadEntry:
			wes = append(wes, o)
		case config.VirtualService:
			tc.in.VirtualServices = append(tc.in.VirtualServices, o)
		case config.DestinationRule:
			tc.in.DestinationRules = append(tc.in.DestinationRules, o)
		case config.Gateway:
			tc.in.Gateways = append(tc.in.Gateways, o)
		case config.PeerAuthentication:
			tc.in.PeerAuthentications = append(tc.in.PeerAuthentications, o)
		case config.AuthorizationPolicy:
			tc.in.AuthorizationPolicies = append(tc.in.AuthorizationPolicies, o)
		case config.RequestAuthentication:
			tc.in.RequestAuthentications = append(tc.in.RequestAuthentications, o)
		case config.Telemetry:
			tc.in.Telemetries = append(tc.in.Telemetries, o)
		default:
			t.Fatalf("%s: kind %s is not an input of the translator", path, kind.Kind)
		}
	}
	if tp == nil {
		t.Fatalf("%s: no TestProxy document", path)
	}
	unhealthy := map[string]bool{}
	for _, u := range tp.Unhealthy {
		unhealthy[u] = true
	}
	tc.in.Registry = registry.Build(ses, wes, healthFunc(func(k config.Key) bool { return !unhealthy[k.Namespace+"/"+k.Name] }))
	p := Proxy{ID: tp.ID, Namespace: tp.Namespace, Labels: tp.Labels, IPs: tp.IPs, ServiceAccount: tp.ServiceAccount,
		Outbound: Outbound{HTTPProxy: tp.Outbound.HTTPProxy, BindIP: tp.Outbound.BindIP}, MTLS: tp.MTLS}
	switch tp.Type {
	case "router":
		p.Type = Router
	case "grpc":
		p.Type = GRPC
	}
	if tp.RegistryOnly {
		p.Mesh.OutboundTrafficPolicy = RegistryOnly
	}
	if len(tp.MeshConfig) > 0 {
		mc, err := config.DecodeMeshConfig(tp.MeshConfig)
		if err != nil {
			t.Fatalf("%s: meshConfig: %v", path, err)
		}
		p.Mesh.Config = mc
	}
	for _, in := range tp.Inbound {
		p.Inbound = append(p.Inbound, InboundPort{Name: in.Name, Protocol: registry.ParseProtocol(in.Protocol), Port: in.Port, ListenPort: in.ListenPort, TargetPort: in.TargetPort})
	}
	tc.proxy = p
	return tc
}

type healthFunc func(config.Key) bool

func (f healthFunc) Healthy(k config.Key) bool { return f(k) }

// render is the golden form: protojson (proto field names), re-indented by
// encoding/json, whose output is stable where protojson's is not.
func render(t testing.TB, r *Resources) []byte {
	t.Helper()
	var g struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
		Warnings  []string          `json:"warnings"`
	}
	m := func(msg proto.Message) json.RawMessage {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, l := range r.Listeners {
		g.Listeners = append(g.Listeners, m(l))
	}
	for _, rc := range r.Routes {
		g.Routes = append(g.Routes, m(rc))
	}
	for _, c := range r.Clusters {
		g.Clusters = append(g.Clusters, m(c))
	}
	for _, e := range r.Endpoints {
		g.Endpoints = append(g.Endpoints, m(e))
	}
	g.Warnings = append([]string{}, r.Warnings...)
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			tc := loadCase(t, in)
			res, err := Translate(tc.in, tc.proxy)
			if err != nil {
				t.Fatal(err)
			}
			if tc.proxy.Type == GRPC {
				checkGRPCAccepts(t, res)
			} else {
				checkProxyAccepts(t, res)
			}
			got := render(t, res)

			// Same output whatever the order of the inputs.
			rev := tc.in
			rev.VirtualServices = reversed(tc.in.VirtualServices)
			rev.DestinationRules = reversed(tc.in.DestinationRules)
			rev.Gateways = reversed(tc.in.Gateways)
			again, err := Translate(rev, tc.proxy)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(render(t, again), got) {
				t.Error("output depends on input order")
			}

			golden := filepath.Join(dir, "output.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", golden, diffLines(string(want), string(got)))
			}
		})
	}
}

func reversed[T any](in []T) []T {
	out := slices.Clone(in)
	slices.Reverse(out)
	return out
}

// checkProxyAccepts runs what the amime proxy runs before applying a
// configuration, so the control plane never emits what it would NACK.
// SDS secret names compile against a proxy with an identity (noSecrets):
// the translator only names them for such proxies.
func checkProxyAccepts(t *testing.T, r *Resources) {
	t.Helper()
	rules := proxy.Rules()
	type validator interface{ ValidateAll() error }
	check := func(kind, name string, m proto.Message) {
		if err := rules.Check(m); err != nil {
			t.Errorf("%s %q: proxy rules: %v", kind, name, err)
		}
		if err := m.(validator).ValidateAll(); err != nil {
			t.Errorf("%s %q: Envoy validation: %v", kind, name, err)
		}
	}
	routes := map[string]bool{}
	referenced := map[string]bool{}
	for _, rc := range r.Routes {
		check("route", rc.GetName(), rc)
		if _, err := proxyroute.CompileWithOptions(rc, hcm.RouteOptions()); err != nil {
			t.Errorf("route %q: route.Compile: %v", rc.GetName(), err)
		}
		routes[rc.GetName()] = true
		routeClusters(rc, referenced)
	}
	for _, l := range r.Listeners {
		check("listener", l.GetName(), l)
		c, err := listener.Compile(l, &listener.Deps{Secrets: noSecrets{}})
		if err != nil {
			t.Errorf("listener %q: listener.Compile: %v", l.GetName(), err)
			continue
		}
		for _, name := range c.RDSNames {
			if !routes[name] {
				t.Errorf("listener %q: route configuration %q is missing: the listener would never warm", l.GetName(), name)
			}
		}
		listenerClusters(t, l, referenced)
	}
	for _, c := range r.Clusters {
		check("cluster", c.GetName(), c)
	}
	built, err := cluster.BuildWith(r.Clusters, cluster.Options{Secrets: noSecrets{}})
	if err != nil {
		t.Errorf("cluster.Build: %v", err)
	}
	for _, e := range r.Endpoints {
		check("cluster_load_assignment", e.GetClusterName(), e)
	}
	if err := cluster.ValidateEndpoints(r.Endpoints); err != nil {
		t.Errorf("endpoints: %v", err)
	}
	eds := map[string]bool{}
	for _, e := range r.Endpoints {
		eds[e.GetClusterName()] = true
	}
	for name, c := range built {
		if c.Discovery == cluster.EDS && !eds[c.EDSServiceName] {
			t.Errorf("cluster %q: no ClusterLoadAssignment: the proxy would never be ready", name)
		}
	}
	for name := range referenced {
		if built[name] == nil && !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "503 (NC)") }) {
			t.Errorf("cluster %q is referenced but not defined, and no warning says so", name)
		}
	}
}

func routeClusters(rc *routev3.RouteConfiguration, into map[string]bool) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" {
				into[c] = true
			}
			for _, w := range r.GetRoute().GetWeightedClusters().GetClusters() {
				into[w.GetName()] = true
			}
		}
	}
}

func listenerClusters(t *testing.T, l *listenerv3.Listener, into map[string]bool) {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			switch a := f.GetTypedConfig(); {
			case a.MessageIs(&tcpv3.TcpProxy{}):
				tp := &tcpv3.TcpProxy{}
				if err := a.UnmarshalTo(tp); err != nil {
					t.Fatal(err)
				}
				if c := tp.GetCluster(); c != "" {
					into[c] = true
				}
				for _, w := range tp.GetWeightedClusters().GetClusters() {
					into[w.GetName()] = true
				}
			case a.MessageIs(&hcmv3.HttpConnectionManager{}):
				m := &hcmv3.HttpConnectionManager{}
				if err := a.UnmarshalTo(m); err != nil {
					t.Fatal(err)
				}
				if rc := m.GetRouteConfig(); rc != nil {
					routeClusters(rc, into)
				}
			}
		}
	}
}

// diffLines shows the first lines that differ, enough to find the change.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

// noSecrets stands for a proxy's identity agent at compile time.
type noSecrets struct{}

func (noSecrets) Certificate(string) (*tls.Certificate, error) { return nil, errors.New("none") }
func (noSecrets) Roots(string) (*x509.CertPool, error)         { return nil, errors.New("none") }

// An unchanged input translates to the same bytes every time: proxies
// compare what they receive byte for byte (a changed filter chain drains
// its connections), so map order in Anys (Struct fields, RBAC policies,
// JWT providers) must not vary between translations.
func TestTranslationIsDeterministic(t *testing.T) {
	for _, name := range []string{"authz", "telemetry"} {
		tc := loadCase(t, filepath.Join("testdata", name, "input.yaml"))
		var first [][]byte
		for i := 0; i < 20; i++ {
			r, err := Translate(tc.in, tc.proxy)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			for _, l := range r.Listeners {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(l)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b)
			}
			if i == 0 {
				first = got
				continue
			}
			for j := range got {
				if !bytes.Equal(got[j], first[j]) {
					t.Fatalf("%s: translation %d serialized listener %q differently", name, i, r.Listeners[j].GetName())
				}
			}
		}
	}
}
