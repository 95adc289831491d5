package bootstrap

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	// The typed configs below resolve against the linked-in types, as in
	// the proxy binary.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
)

const yamlDoc = `
# A small but complete bootstrap.
node:
  id: sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local
  cluster: web
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 15000}
static_resources:
  listeners:
  - name: tcp
    address:
      socket_address: {address: 0.0.0.0, port_value: 9000}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 10.0.0.2, port_value: 8080}
`

// The same document as JSON, with camelCase names where protojson takes them.
const jsonDoc = `{
  "node": {"id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", "cluster": "web"},
  "admin": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": 15000}}},
  "staticResources": {
    "listeners": [{
      "name": "tcp",
      "address": {"socket_address": {"address": "0.0.0.0", "port_value": 9000}},
      "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
          "stat_prefix": "tcp", "cluster": "backend"
        }
      }]}]
    }],
    "clusters": [{
      "name": "backend", "type": "STATIC", "connectTimeout": "0.250s",
      "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 8080}}}}]}]}
    }]
  }
}`

func TestParse(t *testing.T) {
	y, err := Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	j, err := Parse([]byte(jsonDoc))
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	if !proto.Equal(y, j) {
		t.Errorf("YAML and JSON documents differ:\n%v\n%v", y, j)
	}
	if y.GetNode().GetId() != "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local" || y.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 15000 {
		t.Errorf("node/admin: %v", y)
	}
	c := y.GetStaticResources().GetClusters()
	if len(c) != 1 || c[0].GetConnectTimeout().AsDuration() != 250*time.Millisecond {
		t.Errorf("clusters: %v", c)
	}
	tc := y.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
	if !strings.HasSuffix(tc.GetTypeUrl(), ".TcpProxy") {
		t.Errorf("typed config %v", tc)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // the whole message, or its prefix when it ends in "…"
	}{
		{"empty", "", "empty document"},
		{"blank", " \n\t\n", "empty document"},
		{"only a comment", "# nothing here\n", "empty document"},
		{"only a separator", "---\n", "empty document"},
		{"unknown top-level field yaml", "nodee:\n  id: x\n", "nodee: unknown field"},
		{"unknown top-level field json", `{"node": {"id": "x"}, "nodee": {}}`, "nodee: unknown field"},
		{"unknown nested field", "static_resources:\n  clusters:\n  - name: a\n    conect_timeout: 1s\n",
			"static_resources.clusters[0].conect_timeout: unknown field"},
		{"unknown field in a typed config", strings.Replace(yamlDoc, "stat_prefix: tcp", "stat_prefix: tcp\n          idle: 1s", 1),
			"static_resources.listeners[0].filter_chains[0].filters[0].typed_config.idle: unknown field"},
		{"unknown type", strings.Replace(yamlDoc, "tcp_proxy.v3.TcpProxy", "nope.v3.Nope", 1),
			`static_resources.listeners[0].filter_chains[0].filters[0].typed_config: type "type.googleapis.com/envoy.extensions.filters.network.nope.v3.Nope" is not supported by amime`},
		{"bad yaml", "node: [\n", "yaml: …"},
		{"bad json", `{"node": `, "decode: …"},
		{"wrong value type", "node:\n  id: [1, 2]\n", "decode: …"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %v", b)
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tc.want, "…"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("error %q, want it to start with %q", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("error %q, want %q", got, tc.want)
			}
			// protojson's "proto:" prefix (with its sometimes non-breaking
			// space) is not passed on.
			if strings.Contains(got, "proto:") || strings.ContainsRune(got, '\u00a0') {
				t.Errorf("error %q carries protojson's prefix", got)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "envoy.yaml")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(yamlDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"nodee": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	b, err := Load(good)
	if err != nil || b.GetNode().GetCluster() != "web" {
		t.Errorf("Load(good) = %v, %v", b, err)
	}

	_, err = Load(bad)
	if err == nil || err.Error() != "bootstrap bad.json: nodee: unknown field" {
		t.Errorf("Load(bad) error %v", err)
	}

	missing := filepath.Join(dir, "missing.yaml")
	_, err = Load(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error %v, want one wrapping fs.ErrNotExist", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "read bootstrap: ") {
		t.Errorf("Load(missing) error %q", err)
	}
}
