package analyze

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

func TestDecodeManifests(t *testing.T) {
	in := `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: other}
spec:
  hosts: [reviews]
  htp: []
--- # a comment
kind: Foo
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]}
`
	objs, fs := DecodeManifests([]byte(in), "shop")
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key().String())
	}
	if want := []string{"DestinationRule shop/reviews", "Gateway shop/gw"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("objects: got %q, want %q", keys, want)
	}
	var lines []string
	for _, f := range fs {
		lines = append(lines, f.String())
	}
	want := []string{
		`Error [IST0106] (VirtualService other/bad spec) Schema validation error: unknown field "htp". Fix: correct spec: the control plane refuses the whole resource until it is valid`,
		`Error [IST0106] (document 3 of the -f input) Schema validation error: unknown kind "Foo" (want one of VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, RequestAuthentication, AuthorizationPolicy, Telemetry). Fix: correct the resource: the control plane refuses it until it is valid`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	// A good input decodes in one go, with no findings.
	objs, fs = DecodeManifests([]byte("kind: DestinationRule\napiVersion: networking.istio.io/v1\nmetadata: {name: r}\nspec: {host: r}\n"), "default")
	if len(objs) != 1 || fs != nil {
		t.Errorf("good input: got %d objects, findings %v", len(objs), fs)
	}
}

func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour)
	mk := func(kind, ns, name string, created time.Time, gen int64) *config.Object {
		return &config.Object{Kind: kind, Meta: config.Meta{Namespace: ns, Name: name, CreationTimestamp: created, Generation: gen}}
	}
	server := []*config.Object{mk("VirtualService", "default", "a", t0, 1), mk("VirtualService", "default", "b", t0, 1)}
	files := []*config.Object{mk("VirtualService", "default", "b", time.Time{}, 2), mk("DestinationRule", "default", "b", time.Time{}, 2)}
	got, fromFile := Merge(server, files, now)
	type sum struct {
		key     string
		created time.Time
		gen     int64
	}
	var sums []sum
	for _, o := range got {
		sums = append(sums, sum{o.Key().String(), o.Meta.CreationTimestamp, o.Meta.Generation})
	}
	want := []sum{
		{"VirtualService default/a", t0, 1},
		{"VirtualService default/b", t0, 2}, // replaced, keeps its age
		{"DestinationRule default/b", now, 2},
	}
	if !reflect.DeepEqual(sums, want) {
		t.Errorf("merged: got %v, want %v", sums, want)
	}
	if len(fromFile) != 2 || !fromFile[files[0].Key()] || !fromFile[files[1].Key()] {
		t.Errorf("fromFile: got %v", fromFile)
	}
}

func TestGatewayProxiesFromStatus(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         []GatewayProxy
		known        bool
	}{
		{name: "no labels reported", status: `[{"id":"router~10.0.0.1~gw~default.svc.cluster.local","types":{}},{"id":"sidecar~10.0.0.2~a~default.svc.cluster.local"}]`,
			want: []GatewayProxy{{ID: "router~10.0.0.1~gw~default.svc.cluster.local"}}},
		{name: "empty list proves nothing", status: `[]`},
		{name: "labels reported", status: `[{"id":"gateway~h~1","labels":{"istio":"ingressgateway"}},{"id":"sidecar~h~2","labels":{}}]`,
			want: []GatewayProxy{{ID: "gateway~h~1", Labels: map[string]string{"istio": "ingressgateway"}}}, known: true},
		{name: "a gateway without labels", status: `[{"id":"gateway~h~1","labels":{"istio":"ingressgateway"}},{"id":"router~h~2"}]`,
			want: []GatewayProxy{{ID: "gateway~h~1", Labels: map[string]string{"istio": "ingressgateway"}}, {ID: "router~h~2"}}},
		{name: "sidecars only, labels reported", status: `[{"id":"sidecar~h~2","labels":{"app":"x"}}]`, known: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, known, err := GatewayProxiesFromStatus([]byte(tc.status))
			if err != nil || known != tc.known || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, %v, %v; want %v, %v", got, known, err, tc.want, tc.known)
			}
		})
	}
}

func TestFindingFormats(t *testing.T) {
	f := Finding{Code: "IST0101", Level: Error, Kind: "VirtualService", Namespace: "default", Name: "reviews",
		Message: `Referenced host+subset in destinationrule not found: "reviews+v3"`,
		Fix:     "add subset v3 to DestinationRule default/reviews, or route to an existing subset"}
	// The text line of the task's example (no field path).
	if got, want := f.String(), `Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: "reviews+v3". Fix: add subset v3 to DestinationRule default/reviews, or route to an existing subset`; got != want {
		t.Errorf("String:\ngot  %s\nwant %s", got, want)
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"code":"IST0101","level":"Error","kind":"VirtualService","namespace":"default","name":"reviews","message":"Referenced host+subset in destinationrule not found: \"reviews+v3\"","fix":"add subset v3 to DestinationRule default/reviews, or route to an existing subset"}`; string(b) != want {
		t.Errorf("JSON:\ngot  %s\nwant %s", b, want)
	}
	var back Finding
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Errorf("JSON round trip: got %+v, %v", back, err)
	}
	for s, want := range map[string]Level{"error": Error, "Warning": Warning, "INFO": Info} {
		if l, err := ParseLevel(s); err != nil || l != want {
			t.Errorf("ParseLevel(%q) = %v, %v", s, l, err)
		}
	}
	if _, err := ParseLevel("fatal"); err == nil {
		t.Error("ParseLevel(fatal): want an error")
	}
}
