package translate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// gatewayCase translates YAML objects (plus a router TestProxy selecting
// istio=ingressgateway) and returns the result.
func gatewayCase(t *testing.T, objects string, mtls bool) *Resources {
	t.Helper()
	proxy := "kind: TestProxy\nid: gw-1\ntype: router\nnamespace: istio-system\nlabels: {istio: ingressgateway}\n"
	if mtls {
		proxy += "mtls: true\n"
	}
	path := filepath.Join(t.TempDir(), "input.yaml")
	if err := os.WriteFile(path, []byte(gatewayServices+"---\n"+objects+"---\n"+proxy), 0o644); err != nil {
		t.Fatal(err)
	}
	tc := loadCase(t, path)
	res, err := Translate(tc.in, tc.proxy)
	if err != nil {
		t.Fatal(err)
	}
	checkProxyAccepts(t, res)
	return res
}

const gatewayServices = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: http, number: 8080, protocol: HTTP}
  endpoints:
  - address: 10.0.0.1
`

// gw is a Gateway default/gw selecting the test proxy with one server.
func gw(server string) string {
	return "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n" + server
}

const certFiles = `      serverCertificate: testdata/gateway-certs/bookinfo.example.com.pem
      privateKey: testdata/gateway-certs/bookinfo.example.com.key
`

const httpVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  gateways: [gw]
  http:
  - route:
    - destination: {host: web}
`

func TestGatewayWarnings(t *testing.T) {
	cases := []struct {
		name      string
		objects   string
		mtls      bool
		warning   string // a warning containing this must be reported
		listeners []string
	}{
		{
			name:    "credentialName outside Kubernetes skips the server",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE, credentialName: web-cert}\n") + "---\n" + httpVS,
			warning: "Gateway default/gw: servers[0].tls.credentialName: certificates from Kubernetes Secrets need amime's Kubernetes integration",
		},
		{
			name:    "AUTO_PASSTHROUGH is refused",
			objects: gw("  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: ['*.local']\n    tls: {mode: AUTO_PASSTHROUGH}\n"),
			warning: "Gateway default/gw: servers[0].tls.mode: AUTO_PASSTHROUGH is not supported",
		},
		{
			name: "tls route without a matching server",
			objects: gw("  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n") + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tlsvs, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match:
    - sniHosts: [b.example.com]
    route:
    - destination: {host: web, port: {number: 8080}}
`,
			warning: "VirtualService default/tlsvs: tls[0]: no PASSTHROUGH server",
		},
		{
			name:    "ISTIO_MUTUAL without a workload certificate",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n") + "---\n" + httpVS,
			warning: "Gateway default/gw: servers[0].tls.mode: ISTIO_MUTUAL needs a workload certificate",
		},
		{
			name:    "ISTIO_MUTUAL with certificate files",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: ISTIO_MUTUAL\n"+certFiles) + "---\n" + httpVS,
			mtls:    true,
			warning: "servers[0].tls.mode: ISTIO_MUTUAL uses the gateway's workload certificate and takes no certificate files",
		},
		{
			name:    "MUTUAL without caCertificates",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: MUTUAL\n"+certFiles) + "---\n" + httpVS,
			warning: "servers[0].tls.caCertificates: MUTUAL needs the CA certificates",
		},
		{
			name:    "SIMPLE without certificates",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE}\n") + "---\n" + httpVS,
			warning: "servers[0].tls.serverCertificate: SIMPLE needs serverCertificate and privateKey",
		},
		{
			name:    "caCrl is not checked, so the server is not served",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: MUTUAL\n      caCertificates: testdata/gateway-certs/ca.pem\n      caCrl: /etc/crl.pem\n"+certFiles) + "---\n" + httpVS,
			warning: "servers[0].tls.caCrl: the amime proxy checks no revocation list",
		},
		{
			name:    "HTTPS without tls",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n") + "---\n" + httpVS,
			warning: "servers[0].tls: required for protocol HTTPS",
		},
		{
			name:    "TLS settings on a plaintext server",
			objects: gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web.example.com]\n    tls:\n      mode: SIMPLE\n"+certFiles) + "---\n" + httpVS,
			warning: "servers[0].tls: a plaintext HTTP server takes only httpsRedirect",
		},
		{
			name:    "unknown protocol",
			objects: gw("  - port: {number: 53, name: dns, protocol: UDP}\n    hosts: ['*']\n"),
			warning: `servers[0].port.protocol: "UDP" is not a Gateway protocol amime serves`,
		},
		{
			name: "plaintext HTTP and TLS cannot share a port",
			objects: gw("  - port: {number: 8443, name: http, protocol: HTTP}\n    hosts: [web.example.com]\n  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: SIMPLE\n"+certFiles) +
				"---\n" + httpVS,
			warning:   "servers[1]: port 8443 on 0.0.0.0 already serves plaintext HTTP for Gateway default/gw; a TLS server cannot share it",
			listeners: []string{"0.0.0.0_8443"},
		},
		{
			name: "two HTTPS servers with one port name",
			objects: gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: SIMPLE\n"+certFiles+
				"  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [other.example.com]\n    tls:\n      mode: SIMPLE\n"+certFiles) + "---\n" + httpVS,
			warning:   "servers[1].port.name: route configuration https.443.https.gw.default already exists",
			listeners: []string{"0.0.0.0_443"},
		},
		{
			name:    "TCP server without a tcp route",
			objects: gw("  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: ['*']\n"),
			warning: "servers[0]: no VirtualService bound to Gateway default/gw has a tcp route for port 9000",
		},
		{
			name:      "invalid wildcard host cannot be an SNI name",
			objects:   gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com, 'w*.example.com']\n    tls:\n      mode: SIMPLE\n"+certFiles) + "---\n" + httpVS,
			warning:   `servers[0]: host "w*.example.com" is not a name Envoy can match by SNI`,
			listeners: []string{"0.0.0.0_443"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := gatewayCase(t, tc.objects, tc.mtls)
			if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, tc.warning) }) {
				t.Errorf("no warning containing %q; got:\n%s", tc.warning, strings.Join(res.Warnings, "\n"))
			}
			var got []string
			for _, l := range res.Listeners {
				got = append(got, l.GetName())
			}
			if !slices.Equal(got, tc.listeners) {
				t.Errorf("listeners %v, want %v", got, tc.listeners)
			}
		})
	}
}

// The builder notes that a sidecar does not carry out tls routes; on a
// gateway that serves them the note must not appear.
func TestGatewayTLSRoutesNotReportedUntranslated(t *testing.T) {
	res := gatewayCase(t, gw("  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n")+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tlsvs, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  tls:
  - match:
    - sniHosts: [a.example.com]
    route:
    - destination: {host: web, port: {number: 8080}}
`, false)
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}
	if len(res.Listeners) != 1 || len(res.Listeners[0].GetFilterChains()) != 1 {
		t.Fatalf("want one listener with one chain, got %v", res.Listeners)
	}
	if got := res.Listeners[0].GetFilterChains()[0].GetFilterChainMatch().GetServerNames(); !slices.Equal(got, []string{"a.example.com"}) {
		t.Errorf("server_names %v", got)
	}
}

func TestGatewayRDSName(t *testing.T) {
	res := gatewayCase(t, gw("  - port: {number: 443, name: https-web, protocol: HTTPS}\n    bind: 127.0.0.1\n    hosts: [web.example.com]\n    tls:\n      mode: SIMPLE\n"+certFiles+
		"  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web.example.com]\n")+"---\n"+httpVS, false)
	var names []string
	for _, rc := range res.Routes {
		names = append(names, rc.GetName())
	}
	// Istio's names, as istioctl proxy-config routes shows them.
	if want := []string{"http.80", "https.443.https-web.gw.default.127.0.0.1"}; !slices.Equal(names, want) {
		t.Errorf("route configurations %v, want %v", names, want)
	}
}
