package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
)

func TestDecodeMultiDocument(t *testing.T) {
	in := `---
# a leading separator and comments are fine
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
---
# only a comment
--- # separator with a comment

---
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1beta1
  kind: DestinationRule
  metadata: {name: reviews, namespace: prod}
  spec:
    host: reviews
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: default, namespace: istio-system}
  spec:
    mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
`
	objs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.APIVersion+" "+o.Key().String())
	}
	want := []string{
		"networking.istio.io/v1alpha3 VirtualService default/reviews",
		"networking.istio.io/v1beta1 DestinationRule prod/reviews",
		"security.istio.io/v1 PeerAuthentication istio-system/default",
		"security.istio.io/v1beta1 AuthorizationPolicy default/allow-nothing",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if pa := objs[2].Spec.(*security.PeerAuthentication); pa.GetMtls().GetMode() != security.PeerAuthentication_MutualTLS_STRICT {
		t.Fatalf("mtls mode: %v", pa.GetMtls())
	}
	if _, ok := objs[3].Spec.(*security.AuthorizationPolicy); !ok {
		t.Fatalf("missing spec should decode to an empty message, got %T", objs[3].Spec)
	}

	objs, err = DecodeOptions{DefaultNamespace: "team-a"}.Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if objs[0].Meta.Namespace != "team-a" || objs[1].Meta.Namespace != "prod" {
		t.Fatalf("namespaces: %s, %s", objs[0].Meta.Namespace, objs[1].Meta.Namespace)
	}
}

func TestDecodeJSON(t *testing.T) {
	obj := `{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{"name":"%s"},
	"spec":{"hosts":["api.example.com"],"ports":[{"number":443,"name":"tls","protocol":"TLS"}],"resolution":"DNS"}}`
	one := strings.Replace(obj, "%s", "a", 1)
	two := strings.Replace(obj, "%s", "b", 1)
	for name, in := range map[string]string{
		"stream": one + "\n" + two,
		"array":  "[" + one + "," + two + "]",
	} {
		objs, err := Decode([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(objs) != 2 || objs[1].Meta.Name != "b" {
			t.Fatalf("%s: got %d objects", name, len(objs))
		}
		se := objs[0].Spec.(*networking.ServiceEntry)
		if se.Resolution != networking.ServiceEntry_DNS || se.Ports[0].Number != 443 {
			t.Fatalf("%s: spec %v", name, se)
		}
	}
}

// Istio accepts Go-style durations; so must we.
func TestDecodeDurations(t *testing.T) {
	objs, err := DecodeOptions{Validate: true}.Decode([]byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 30ms
    retries: {attempts: 3, perTryTimeout: 5m}
    fault:
      delay: {fixedDelay: 1.5s, percentage: {value: 10}}
    route:
    - destination: {host: reviews}
  - timeout: 1h2m3s
    route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 0.250s}
`))
	if err != nil {
		t.Fatal(err)
	}
	vs := objs[0].Spec.(*networking.VirtualService)
	dr := objs[1].Spec.(*networking.DestinationRule)
	for _, c := range []struct {
		got, want time.Duration
	}{
		{vs.Http[0].Timeout.AsDuration(), 30 * time.Millisecond},
		{vs.Http[0].Retries.PerTryTimeout.AsDuration(), 5 * time.Minute},
		{vs.Http[0].Fault.Delay.GetFixedDelay().AsDuration(), 1500 * time.Millisecond},
		{vs.Http[1].Timeout.AsDuration(), time.Hour + 2*time.Minute + 3*time.Second},
		{dr.TrafficPolicy.ConnectionPool.Tcp.ConnectTimeout.AsDuration(), 250 * time.Millisecond},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

// kubectl get -o yaml output applies as is.
func TestDecodeKubectlOutput(t *testing.T) {
	objs, err := Decode([]byte(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"networking.istio.io/v1"}
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 3
  labels: {app: bookinfo}
  managedFields:
  - manager: kubectl
  name: bookinfo-gateway
  namespace: bookinfo
  resourceVersion: "12345"
  uid: 0d3c6c2e-0000-0000-0000-000000000000
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
status: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := objs[0].Meta
	if m.ResourceVersion != "12345" || m.Generation != 3 || m.Labels["app"] != "bookinfo" ||
		!m.CreationTimestamp.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("meta: %+v", m)
	}
}

func TestDecodeErrors(t *testing.T) {
	const vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
	const dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n"
	cases := []struct {
		name string
		in   string
		opts DecodeOptions
		want string
	}{
		{"unknown spec field", vs + "spec:\n  hosts: [reviews]\n  rout: []\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec: unknown field "rout"`},
		{"second document", vs + "spec:\n  hosts: [reviews]\n---\n" + vs + "spec:\n  rout: []\n",
			DecodeOptions{}, `document 2: VirtualService default/reviews: spec: unknown field "rout"`},
		{"nested unknown field", vs + "spec:\n  http:\n  - rout:\n    - destination: {host: r}\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0]: unknown field "rout"`},
		{"unknown kind", "apiVersion: networking.istio.io/v1\nkind: VirtualServise\nmetadata: {name: a}\n",
			DecodeOptions{}, `document 1: unknown kind "VirtualServise" (want one of VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, RequestAuthentication, AuthorizationPolicy, Telemetry)`},
		{"missing kind", "apiVersion: networking.istio.io/v1\nmetadata: {name: a}\n",
			DecodeOptions{}, `document 1: kind is required`},
		{"gateway api is not istio", "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n",
			DecodeOptions{}, `document 1: Gateway default/gw: apiVersion: "gateway.networking.k8s.io/v1" is not served for Gateway (want one of networking.istio.io/v1alpha3, networking.istio.io/v1beta1, networking.istio.io/v1)`},
		{"security version", "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: a}\n",
			DecodeOptions{}, `document 1: PeerAuthentication default/a: apiVersion: "security.istio.io/v1alpha1" is not served for PeerAuthentication (want one of security.istio.io/v1beta1, security.istio.io/v1)`},
		{"missing apiVersion", "kind: Sidecar\nmetadata: {name: a, namespace: ns1}\n",
			DecodeOptions{}, `document 1: Sidecar ns1/a: apiVersion: is required`},
		{"string match oneof", vs + "spec:\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].match[0].uri: only one of "exact", "prefix" may be set`},
		{"simple xor consistentHash", dr + "spec:\n  host: r\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n      consistentHash: {useSourceIp: true}\n",
			DecodeOptions{}, `document 1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer: only one of "consistentHash", "simple" may be set`},
		{"one hash key", dr + "spec:\n  host: r\n  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, httpHeaderName: x-user}\n",
			DecodeOptions{}, `document 1: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.consistentHash: only one of "httpHeaderName", "useSourceIp" may be set`},
		{"unknown enum value", dr + "spec:\n  host: r\n  trafficPolicy:\n    tls: {mode: MUTAL}\n",
			DecodeOptions{}, `document 1: DestinationRule default/reviews: spec.trafficPolicy.tls.mode: unknown value "MUTAL" (want one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)`},
		{"scalar for list", vs + "spec:\n  hosts: reviews\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.hosts: expected a list, got string "reviews"`},
		{"bad duration", vs + "spec:\n  http:\n  - timeout: 5 seconds\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].timeout: invalid duration "5 seconds": want a number with a unit, such as 5s, 100ms or 1m30s`},
		{"number for duration", vs + "spec:\n  http:\n  - timeout: 5\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].timeout: expected a duration such as "5s" or "100ms", got number 5`},
		{"int range", vs + "spec:\n  http:\n  - route:\n    - weight: 3000000000\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].route[0].weight: 3000000000 is out of range for int32`},
		{"string for int", vs + "spec:\n  http:\n  - route:\n    - weight: half\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].route[0].weight: expected an integer, got string "half"`},
		{"null in list", vs + "spec:\n  hosts: [a, ~]\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.hosts[1]: must not be null`},
		{"number for string", vs + "spec:\n  hosts: [a]\n  http:\n  - match:\n    - headers: {version: {exact: 2}}\n",
			DecodeOptions{}, `document 1: VirtualService default/reviews: spec.http[0].match[0].headers[version].exact: expected a string, got number 2`},
		{"yaml syntax", vs + "spec:\n  hosts: [a]\n---\n" + vs + "spec:\n  hosts: [a\n  http: x\n",
			DecodeOptions{}, `document 2: yaml: line 11: did not find expected ',' or ']'`},
		{"duplicate key", vs + "spec:\n  hosts: [a]\n  hosts: [b]\n",
			DecodeOptions{}, `document 1: yaml: unmarshal errors: line 6: key "hosts" already set in map`},
		{"metadata", "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: a\n  labels: {version: 1}\n  nmae: b\nspecs: {}\n",
			DecodeOptions{}, `document 1: Sidecar default/a: metadata.labels[version]: must be a string, got number 1
document 1: Sidecar default/a: metadata: unknown field "nmae"
document 1: Sidecar default/a: specs: unknown field "specs"`},
		{"list item", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(vs, "\n", "\n  ") + "spec: {hosts: [a]}\n- " + strings.ReplaceAll(vs, "\n", "\n  ") + "spec: {x: 1}\n",
			DecodeOptions{}, `document 1: items[1]: VirtualService default/reviews: spec: unknown field "x"`},
		{"validation names the document", "apiVersion: v1\nmetadata: {}\n---\n" + vs + "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - {destination: {host: a}, weight: 50}\n    - {destination: {host: b}, weight: 40}\n",
			DecodeOptions{Validate: true}, `document 1: kind is required
document 2: VirtualService default/reviews: spec.http[0].route[1].weight: weights must sum to 100, got 90`},
		{"not an object", "- a\n- b\n",
			DecodeOptions{}, `document 1: a document must be an object (apiVersion, kind, metadata, spec): json: cannot unmarshal array into Go value of type map[string]json.RawMessage`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := tc.opts.Decode([]byte(tc.in))
			if err == nil {
				t.Fatalf("want error, got %d objects", len(objs))
			}
			if objs != nil {
				t.Fatalf("objects returned with an error")
			}
			if err.Error() != tc.want {
				t.Fatalf("want:\n%s\ngot:\n%s", tc.want, err.Error())
			}
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Fatalf("want a *DocumentError, got %T", err)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
  labels: {app: reviews}
  resourceVersion: "7"
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    timeout: 30ms
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v3}
      weight: 10
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: bookinfo}
spec:
  action: DENY
  rules:
  - from:
    - source: {notNamespaces: [bookinfo]}
`
	objs, err := Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"yaml", "json"} {
		for _, o := range objs {
			out, err := Encode(o, format)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(out)
			if err != nil {
				t.Fatalf("%s: re-decode: %v\n%s", format, err, out)
			}
			b := back[0]
			if !proto.Equal(o.Spec, b.Spec) || o.APIVersion != b.APIVersion || o.Key() != b.Key() ||
				o.Meta.ResourceVersion != b.Meta.ResourceVersion || !mapsEqual(o.Meta.Labels, b.Meta.Labels) {
				t.Fatalf("%s: round trip changed the object:\n%s", format, out)
			}
		}
	}
	out, err := Encode(objs[1], "yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny
  namespace: bookinfo
spec:
  action: DENY
  rules:
  - from:
    - source:
        notNamespaces:
        - bookinfo
`
	if string(out) != want {
		t.Fatalf("yaml:\n%s\nwant:\n%s", out, want)
	}
	out, err = Encode(objs[1], "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "{\n    \"apiVersion\": \"security.istio.io/v1\",\n    \"kind\": \"AuthorizationPolicy\",\n    \"metadata\": {") {
		t.Fatalf("json not kubectl-shaped:\n%s", out)
	}
	if _, err := Encode(objs[1], "xml"); err == nil {
		t.Fatal("want an error for an unknown format")
	}
}

// FuzzDecode: arbitrary input never panics, and whatever decodes encodes
// and decodes again to the same objects.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n"))
	f.Add([]byte(`{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"a"},"spec":{"portLevelMtls":{"80":{"mode":"STRICT"}}}}`))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{}]\n---\n---\n- 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := DecodeOptions{Validate: true}.Decode(data)
		if err != nil {
			return
		}
		for _, o := range objs {
			out, err := Encode(o, "yaml")
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(out)
			if err != nil {
				t.Fatalf("re-decode: %v\n%s", err, out)
			}
			if !proto.Equal(back[0].Spec, o.Spec) {
				t.Fatalf("round trip changed the spec:\n%s", out)
			}
		}
	})
}
