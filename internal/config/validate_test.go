package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// specObject decodes a spec written as YAML (left-aligned) into an object
// default/x of kind.
func specObject(t *testing.T, kind, spec string) *Object {
	t.Helper()
	ki, ok := kindByName(kind)
	if !ok {
		t.Fatalf("unknown kind %s", kind)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: %s/%s\nkind: %s\nmetadata:\n  name: x\n  namespace: default\n", ki.Group, ki.Versions[len(ki.Versions)-1], kind)
	if strings.TrimSpace(spec) != "" {
		b.WriteString("spec:\n")
		for _, l := range strings.Split(strings.Trim(spec, "\n"), "\n") {
			b.WriteString("  " + l + "\n")
		}
	}
	objs, err := Decode([]byte(b.String()))
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, b.String())
	}
	return objs[0]
}

type validationCase struct {
	name string
	kind string
	spec string
	// want lists the expected problems as "field: reason", in order; empty
	// means valid.
	want []string
}

func runValidationCases(t *testing.T, cases []validationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			o := specObject(t, tc.kind, tc.spec)
			err := Validate(o)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got:\n%v", err)
				}
				return
			}
			lines := make([]string, len(tc.want))
			for i, w := range tc.want {
				lines[i] = tc.kind + " default/x: " + w
			}
			want := strings.Join(lines, "\n")
			if err == nil {
				t.Fatalf("want error:\n%s\ngot nil", want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want *ValidationError, got %T", err)
			}
			if err.Error() != want {
				t.Fatalf("error mismatch\nwant:\n%s\ngot:\n%s", want, err.Error())
			}
		})
	}
}

func TestValidateVirtualService(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: VirtualService, spec: `
hosts: [reviews, reviews.prod.svc.cluster.local, 10.0.0.1]
http:
- name: canary
  match:
  - uri: {prefix: /api}
    headers:
      end-user: {exact: jason}
      x-present: {}
    queryParams:
      debug: {regex: "^(1|true)$"}
    port: 9080
    sourceLabels: {app: productpage}
    gateways: [mesh]
  rewrite: {uri: /}
  retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,gateway-error,503,unavailable"}
  timeout: 10s
  fault:
    delay: {percentage: {value: 0.1}, fixedDelay: 5s}
    abort: {percentage: {value: 50}, httpStatus: 503}
  mirror: {host: reviews, subset: v3}
  mirrorPercentage: {value: 10}
  corsPolicy:
    allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.com"}]
    allowMethods: [GET, POST]
    allowHeaders: [x-custom, "*"]
    maxAge: 24h
  headers:
    request:
      set: {x-env: prod, ":authority": reviews.internal}
      remove: [x-debug]
    response:
      add: {x-served-by: "%HOSTNAME% 100%%"}
  route:
  - destination: {host: reviews, subset: v1, port: {number: 9080}}
    weight: 75
  - destination: {host: reviews, subset: v2}
    weight: 25
- route:
  - destination: {host: reviews}
`},
		{name: "single destination may omit weight", kind: VirtualService, spec: `
hosts: [reviews]
http:
- route:
  - destination: {host: reviews}
`},
		{name: "weights must sum to 100", kind: VirtualService, spec: `
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v2}
    weight: 40
`, want: []string{"spec.http[0].route[1].weight: weights must sum to 100, got 90"}},
		{name: "weight out of range", kind: VirtualService, spec: `
hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v1}
    weight: 120
  - destination: {host: reviews, subset: v2}
    weight: -20
`, want: []string{
			"spec.http[0].route[0].weight: weight 120 must be in the range 0..100",
			"spec.http[0].route[1].weight: weight -20 must be in the range 0..100",
		}},
		{name: "weights omitted on several destinations", kind: VirtualService, spec: `
hosts: [reviews]
tcp:
- route:
  - destination: {host: reviews, subset: v1}
  - destination: {host: reviews, subset: v2}
`, want: []string{"spec.tcp[0].route[1].weight: weights must sum to 100, got 0"}},
		{name: "invalid hosts", kind: VirtualService, spec: `
hosts: [foo_bar, "a.*.com", "reviews.123"]
http:
- route:
  - destination: {host: reviews}
`, want: []string{
			`spec.hosts[0]: domain name "foo_bar" invalid (label "foo_bar" invalid)`,
			`spec.hosts[1]: domain name "a.*.com" invalid (label "*" invalid)`,
			`spec.hosts[2]: domain name "reviews.123" invalid (top level domain "123" cannot be all-numeric)`,
		}},
		{name: "wildcard host for the mesh", kind: VirtualService, spec: `
hosts: ["*"]
http:
- route:
  - destination: {host: reviews}
`, want: []string{`spec.hosts[0]: wildcard host "*" is only allowed in a VirtualService bound to gateways (not the mesh)`}},
		{name: "wildcard host only alone", kind: VirtualService, spec: `
hosts: ["*", bookinfo.com]
gateways: [bookinfo-gateway]
http:
- route:
  - destination: {host: productpage}
`, want: []string{`spec.hosts[1]: duplicate host: "bookinfo.com" overlaps "*"`}},
		{name: "gateway names", kind: VirtualService, spec: `
hosts: [bookinfo.com]
gateways: [istio-system/ingress, mesh, "bad_ns/gw", "ns/", gw.istio-system.svc.cluster.local]
http:
- route:
  - destination: {host: productpage}
`, want: []string{
			`spec.gateways[2]: invalid gateway "bad_ns/gw": namespace "bad_ns" is not a DNS-1123 label`,
			`spec.gateways[3]: invalid gateway "ns/": namespace and name must not be empty`,
		}},
		{name: "no routes", kind: VirtualService, spec: `
hosts: [reviews]
`, want: []string{"spec: at least one of http, tcp or tls routes is required"}},
		{name: "route and redirect", kind: VirtualService, spec: `
hosts: [reviews]
http:
- redirect: {uri: /v2}
  route:
  - destination: {host: reviews}
`, want: []string{"spec.http[0]: route and redirect are mutually exclusive"}},
		{name: "no route, redirect or directResponse", kind: VirtualService, spec: `
hosts: [reviews]
http:
- match:
  - uri: {prefix: /}
`, want: []string{"spec.http[0]: one of route, redirect or directResponse is required"}},
		{name: "redirect and directResponse", kind: VirtualService, spec: `
hosts: [reviews]
http:
- redirect: {redirectCode: 200, scheme: ftp}
  directResponse: {status: 99}
- redirect: {redirectCode: 301}
`, want: []string{
			"spec.http[0]: redirect and directResponse are mutually exclusive",
			"spec.http[0].redirect.redirectCode: 200 is not a redirect code (want 3xx)",
			`spec.http[0].redirect.scheme: invalid scheme "ftp" (want http or https)`,
			"spec.http[0].directResponse.status: HTTP status 99 is not in the range 200..599",
			"spec.http[1].redirect: at least one of uri, authority, port, derivePort, scheme or prefixRewrite is required",
		}},
		{name: "direct response", kind: VirtualService, spec: `
hosts: [reviews]
http:
- directResponse: {status: 503, body: {string: unavailable}}
`},
		{name: "destination", kind: VirtualService, spec: `
hosts: [reviews]
http:
- route:
  - destination: {subset: V_1, port: {number: 70000}}
- route:
  - destination: {host: "*"}
  - weight: 100
`, want: []string{
			"spec.http[0].route[0].destination.host: is required",
			`spec.http[0].route[0].destination.subset: invalid subset name "V_1": must be a DNS-1123 label`,
			"spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535",
			`spec.http[1].route[0].destination.host: wildcard host "*" is not a valid destination`,
			"spec.http[1].route[1].destination: is required",
		}},
		{name: "matches", kind: VirtualService, spec: `
hosts: [reviews]
http:
- match:
  - uri: {}
    method: {prefix: ""}
    authority: {regex: "(("}
    headers:
      "x user": {exact: a}
      "@request.auth.claims.group": {exact: admin}
    port: 70000
    sourceNamespace: Prod
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].match[0].uri: one of exact, prefix or regex is required",
			"spec.http[0].match[0].method.prefix: must not be empty",
			"spec.http[0].match[0].authority.regex: invalid RE2 regex \"((\": error parsing regexp: missing closing ): `((`",
			"spec.http[0].match[0].headers[@request.auth.claims.group]: JWT claim based routing is only supported in VirtualServices bound to gateways",
			`spec.http[0].match[0].headers[x user]: invalid header name "x user": must match [-_A-Za-z0-9]+`,
			"spec.http[0].match[0].port: port number 70000 must be in the range 1..65535",
			`spec.http[0].match[0].sourceNamespace: invalid namespace "Prod": must be a DNS-1123 label`,
		}},
		{name: "jwt claim routing on a gateway", kind: VirtualService, spec: `
hosts: [bookinfo.com]
gateways: [istio-system/ingress]
http:
- match:
  - headers:
      "@request.auth.claims[group]": {exact: admin}
  route:
  - destination: {host: productpage}
`},
		{name: "retries", kind: VirtualService, spec: `
hosts: [reviews]
http:
- retries: {attempts: -1, perTryTimeout: 500us, retryOn: "5xx,bogus,503,999"}
  route:
  - destination: {host: reviews}
- retries: {attempts: 0, retryOn: 5xx}
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].retries.attempts: must not be negative, got -1",
			"spec.http[0].retries.perTryTimeout: duration must be at least 1ms, got 500µs",
			`spec.http[0].retries.retryOn: "bogus" is not a valid retryOn condition`,
			`spec.http[0].retries.retryOn: "999" is not a valid retryOn condition`,
			"spec.http[1].retries.attempts: is 0 (retries disabled) but other retry settings are set",
		}},
		{name: "timeouts", kind: VirtualService, spec: `
hosts: [reviews]
http:
- timeout: 0s
  route:
  - destination: {host: reviews}
- timeout: 1500us
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].timeout: duration must be at least 1ms, got 0s",
			"spec.http[1].timeout: only durations to ms precision are supported, got 1.5ms",
		}},
		{name: "rewrite", kind: VirtualService, spec: `
hosts: [reviews]
http:
- rewrite: {uri: /a, uriRegexRewrite: {match: "((", rewrite: ""}}
  route:
  - destination: {host: reviews}
- rewrite: {}
  route:
  - destination: {host: reviews}
- rewrite: {authority: a}
  headers:
    request:
      set: {host: b}
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].rewrite: uri and uriRegexRewrite are mutually exclusive",
			"spec.http[0].rewrite.uriRegexRewrite.match: invalid RE2 regex \"((\": error parsing regexp: missing closing ): `((`",
			"spec.http[0].rewrite.uriRegexRewrite.rewrite: is required",
			"spec.http[1].rewrite: at least one of uri, uriRegexRewrite or authority is required",
			"spec.http[2]: the authority is rewritten more than once (rewrite.authority and headers.request :authority/host)",
		}},
		{name: "fault and mirror", kind: VirtualService, spec: `
hosts: [reviews]
http:
- fault:
    abort: {httpStatus: 700, percentage: {value: 101}}
    delay: {exponentialDelay: 1s}
  mirrorPercentage: {value: 150}
  mirror: {host: ""}
  route:
  - destination: {host: reviews}
- fault: {}
  mirrors:
  - destination: {host: mirror}
    percentage: {value: -1}
  route:
  - destination: {host: reviews}
- fault:
    abort: {grpcStatus: NOPE}
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].fault.abort.percentage.value: percentage 101 must be 0 or in the range 0.0001..100",
			"spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in the range 200..599",
			"spec.http[0].fault.delay.exponentialDelay: exponentialDelay is not supported",
			"spec.http[0].mirrorPercentage.value: must be in the range 0..100, got 150",
			"spec.http[0].mirror.host: is required",
			"spec.http[1].fault: at least one of delay or abort is required",
			"spec.http[1].mirrors[0].percentage.value: must be in the range 0..100, got -1",
			`spec.http[2].fault.abort.grpcStatus: unknown gRPC status "NOPE" (want a code name such as UNAVAILABLE or NOT_FOUND)`,
		}},
		{name: "cors", kind: VirtualService, spec: `
hosts: [reviews]
http:
- corsPolicy:
    allowOrigins: [{exact: ""}, {}]
    allowMethods: [FETCH]
    allowHeaders: ["bad header"]
    maxAge: 1500ms
  route:
  - destination: {host: reviews}
`, want: []string{
			"spec.http[0].corsPolicy.allowOrigins[0].exact: must not be empty",
			"spec.http[0].corsPolicy.allowOrigins[1]: one of exact, prefix or regex is required",
			`spec.http[0].corsPolicy.allowMethods[0]: "FETCH" is not a supported HTTP method`,
			`spec.http[0].corsPolicy.allowHeaders[0]: invalid header name "bad header": must match [-_A-Za-z0-9]+`,
			"spec.http[0].corsPolicy.maxAge: must be a whole number of seconds",
		}},
		{name: "header operations", kind: VirtualService, spec: `
hosts: [reviews]
http:
- headers:
    request:
      set: {":path": /x, x-rate: "50%", x-var: "%REQ(x-a)"}
      remove: [host]
    response:
      set: {":authority": a}
  route:
  - destination: {host: reviews}
    headers:
      response:
        add: {x-bad: "a\u0001"}
`, want: []string{
			`spec.http[0].headers.request.set[:path]: pseudo-headers (":" prefix) cannot be modified`,
			`spec.http[0].headers.request.set[x-rate]: invalid header value "50%": unescaped '%' (write %% for a literal percent)`,
			`spec.http[0].headers.request.set[x-var]: invalid header value "%REQ(x-a)": unterminated %VARIABLE% (write %% for a literal percent)`,
			"spec.http[0].headers.request.remove[0]: the Host header cannot be removed",
			`spec.http[0].headers.response.set[:authority]: pseudo-headers (":" prefix) cannot be modified`,
			`spec.http[0].route[0].headers.response.add[x-bad]: invalid header value "a\x01": control characters are not allowed`,
		}},
		{name: "tls routes", kind: VirtualService, spec: `
hosts: ["*.example.com"]
tls:
- match:
  - sniHosts: [a.example.com, "*.b.example.com"]
    port: 443
  route:
  - destination: {host: a.example.com}
- match:
  - sniHosts: [other.org]
  - destinationSubnets: [10.0.0.0/33]
  route: []
- route:
  - destination: {host: a.example.com}
`, want: []string{
			`spec.tls[1].match[0].sniHosts[0]: SNI host "other.org" is not a subset of any of the VirtualService hosts [*.example.com]`,
			"spec.tls[1].match[1].sniHosts: at least one SNI host is required",
			`spec.tls[1].match[1].destinationSubnets[0]: "10.0.0.0/33" is not a valid CIDR block`,
			"spec.tls[1].route: at least one route destination is required",
			"spec.tls[2].match: at least one match with sniHosts is required",
		}},
		{name: "tcp routes", kind: VirtualService, spec: `
hosts: [mongo]
tcp:
- match:
  - port: 27017
    sourceLabels: {app: "bad value!"}
  route:
  - destination: {host: mongo, port: {number: 27017}}
- match:
  - port: 0
`, want: []string{
			`spec.tcp[0].match[0].sourceLabels[app]: invalid value "bad value!": must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`,
			"spec.tcp[1].route: at least one route destination is required",
		}},
		{name: "delegate", kind: VirtualService, spec: `
gateways: [ingress]
http:
- delegate: {name: other}
  route:
  - destination: {host: reviews}
tcp:
- route:
  - destination: {host: reviews}
`, want: []string{
			"spec.gateways: must be empty in a delegate VirtualService (one without hosts)",
			"spec.tcp: must be empty in a delegate VirtualService (one without hosts)",
			"spec.http[0].delegate: a delegate VirtualService cannot delegate again",
		}},
		{name: "valid delegate", kind: VirtualService, spec: `
http:
- match:
  - uri: {prefix: /reviews}
  route:
  - destination: {host: reviews}
`},
		{name: "root route", kind: VirtualService, spec: `
hosts: [bookinfo.com]
gateways: [ingress]
http:
- match:
  - uri: {prefix: /reviews}
  delegate: {name: reviews-routes, namespace: reviews}
- delegate: {namespace: Bad}
  route:
  - destination: {host: x}
`, want: []string{
			"spec.http[1].route: must not be set together with delegate",
			"spec.http[1].delegate.name: is required",
			`spec.http[1].delegate.namespace: invalid namespace "Bad": must be a DNS-1123 label`,
		}},
		{name: "exportTo", kind: VirtualService, spec: `
hosts: [reviews]
exportTo: [".", "*", "~", Bad, "."]
http:
- route:
  - destination: {host: reviews}
`, want: []string{
			`spec.exportTo[2]: "~" is only allowed in ServiceEntry`,
			`spec.exportTo[3]: invalid entry "Bad": want ".", "*" or a namespace name`,
			`spec.exportTo[4]: duplicate entry "."`,
			`spec.exportTo: "*" cannot be combined with other entries`,
		}},
	})
}

func TestValidateDestinationRule(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: DestinationRule, spec: `
host: reviews.default.svc.cluster.local
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie: {name: user, ttl: 0s}
      maglev: {tableSize: 65537}
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
    http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, idleTimeout: 5m}
  outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}
  tls: {mode: ISTIO_MUTUAL}
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: LEAST_REQUEST}
  - port: {number: 443}
    tls: {mode: SIMPLE, credentialName: client-cred}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
- name: all
`},
		{name: "host required", kind: DestinationRule, spec: `
subsets:
- name: v1
  labels: {version: v1}
`, want: []string{"spec.host: is required"}},
		{name: "subsets", kind: DestinationRule, spec: `
host: reviews
subsets:
- name: v1
  labels: {version: v1}
- name: v1
  labels: {version: v2}
- name: V_2
  labels: {"bad key": v}
- labels: {version: v3}
`, want: []string{
			`spec.subsets[1].name: duplicate subset name "v1"`,
			`spec.subsets[2].name: invalid subset name "V_2": must be a DNS-1123 label`,
			`spec.subsets[2].labels[bad key]: invalid key "bad key": name part must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`,
			"spec.subsets[3].name: is required",
		}},
		{name: "empty traffic policy", kind: DestinationRule, spec: `
host: reviews
trafficPolicy: {}
`, want: []string{"spec.trafficPolicy: at least one field is required"}},
		{name: "consistent hash", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  loadBalancer:
    consistentHash:
      minimumRingSize: 1024
      ringHash: {minimumRingSize: 1024}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        maglev: {tableSize: 100}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {path: /}
        maglev: {tableSize: 5000011}
`, want: []string{
			"spec.trafficPolicy.loadBalancer.consistentHash: one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
			"spec.trafficPolicy.loadBalancer.consistentHash: minimumRingSize and ringHash/maglev are mutually exclusive",
			"spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 100 is not a prime number",
			"spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.httpCookie.name: is required",
			"spec.subsets[1].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: must be less than 5000011",
		}},
		{name: "connection pool", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  connectionPool:
    tcp: {maxConnections: -1, connectTimeout: 0s}
    http: {http2MaxRequests: -5, h2UpgradePolicy: UPGRADE, useClientProtocol: true}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    connectionPool: {}
`, want: []string{
			"spec.trafficPolicy.connectionPool.http.http2MaxRequests: must not be negative, got -5",
			"spec.trafficPolicy.connectionPool.http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE",
			"spec.trafficPolicy.connectionPool.tcp.maxConnections: must not be negative, got -1",
			"spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be at least 1ms, got 0s",
			"spec.subsets[0].trafficPolicy.connectionPool: at least one of tcp or http is required",
		}},
		{name: "outlier detection", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  outlierDetection:
    consecutiveErrors: -1
    consecutiveLocalOriginFailures: 3
    interval: 0s
    baseEjectionTime: 100us
    maxEjectionPercent: 150
    minHealthPercent: -1
`, want: []string{
			"spec.trafficPolicy.outlierDetection.consecutiveErrors: must not be negative, got -1",
			"spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: requires splitExternalLocalOriginErrors: true",
			"spec.trafficPolicy.outlierDetection.interval: duration must be at least 1ms, got 0s",
			"spec.trafficPolicy.outlierDetection.baseEjectionTime: duration must be at least 1ms, got 100µs",
			"spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be in the range 0..100, got 150",
			"spec.trafficPolicy.outlierDetection.minHealthPercent: must be in the range 0..100, got -1",
		}},
		{name: "tls", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  tls: {mode: MUTUAL}
subsets:
- name: v1
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
- name: v2
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: cred, caCertificates: /ca.pem}
- name: v3
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}
`, want: []string{
			"spec.trafficPolicy.tls.clientCertificate: is required when mode is MUTUAL (or set credentialName)",
			"spec.trafficPolicy.tls.privateKey: is required when mode is MUTUAL (or set credentialName)",
			"spec.subsets[0].trafficPolicy.tls.clientCertificate: must not be set when mode is ISTIO_MUTUAL",
			"spec.subsets[0].trafficPolicy.tls.privateKey: must not be set when mode is ISTIO_MUTUAL",
			"spec.subsets[1].trafficPolicy.tls.caCertificates: must not be set when credentialName is set",
		}},
		{name: "port level settings", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: RANDOM}
  - port: {number: 80}
    loadBalancer: {simple: RANDOM}
  - port: {number: 0}
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 81}
  - loadBalancer: {simple: RANDOM}
`, want: []string{
			"spec.trafficPolicy.portLevelSettings[1].port.number: duplicate port 80",
			"spec.trafficPolicy.portLevelSettings[2].port.number: port number 0 must be in the range 1..65535",
			"spec.trafficPolicy.portLevelSettings[3]: at least one of loadBalancer, connectionPool, outlierDetection or tls is required",
			"spec.trafficPolicy.portLevelSettings[4].port: is required",
		}},
		{name: "locality", kind: DestinationRule, spec: `
host: reviews
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      distribute:
      - from: us-west/zone1/*
        to: {"us-west/zone1/*": 80, "us-west/zone2/*": 10}
  outlierDetection: {consecutive5xxErrors: 1}
subsets:
- name: v1
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover:
        - {from: us-east, to: us-east}
`, want: []string{
			"spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights must sum to 100, got 90",
			"spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failover[0]: from and to must be different regions",
		}},
		{name: "workload selector", kind: DestinationRule, spec: `
host: reviews
workloadSelector:
  matchLabels: {app: "*"}
exportTo: [other]
trafficPolicy:
  tls: {mode: ISTIO_MUTUAL}
`, want: []string{
			"spec.exportTo: a DestinationRule with a workloadSelector can only be exported to its own namespace",
			"spec.workloadSelector.matchLabels[app]: wildcards are not supported in selectors",
		}},
	})
}

func TestValidateGateway(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: Gateway, spec: `
selector: {istio: ingressgateway}
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["*"]
  tls: {httpsRedirect: true}
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [bookinfo/bookinfo.com, "./*.example.com", "*/api.example.com"]
  tls: {mode: SIMPLE, credentialName: bookinfo-cert}
- port: {number: 8443, name: https-files, protocol: HTTPS}
  hosts: [files.example.com]
  tls: {mode: MUTUAL, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem, caCertificates: /etc/ca.pem}
- port: {number: 15443, name: tls, protocol: TLS}
  hosts: ["*.local"]
  tls: {mode: AUTO_PASSTHROUGH}
- port: {number: 9000, name: tcp, protocol: tcp}
  hosts: ["*"]
`},
		{name: "no servers", kind: Gateway, spec: `
selector: {istio: ingressgateway}
`, want: []string{"spec.servers: at least one server is required"}},
		{name: "server basics", kind: Gateway, spec: `
servers:
- port: {number: 0, protocol: HTTPX}
- hosts: [example.com]
- port: {number: 80, name: http, protocol: HTTP}
  hosts: [example.com]
- port: {number: 81, name: http, protocol: HTTP}
  hosts: [example.org]
`, want: []string{
			"spec.servers[0].hosts: at least one host is required",
			`spec.servers[0].port.protocol: unsupported protocol "HTTPX" (want one of HTTP, HTTPS, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, MYSQL, REDIS)`,
			"spec.servers[0].port.number: port number 0 must be in the range 1..65535",
			"spec.servers[0].port.name: is required",
			"spec.servers[1].port: is required",
			`spec.servers[3].port.name: duplicate port name "http" (also used by servers[2])`,
		}},
		{name: "hosts", kind: Gateway, spec: `
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["bad_ns/a.com", "*foo.com", reviews, "ns/", 10.0.0.1]
`, want: []string{
			`spec.servers[0].hosts[0]: host "bad_ns/a.com": invalid namespace "bad_ns" (want *, ., ~ or a namespace name)`,
			`spec.servers[0].hosts[1]: partial wildcard "*foo.com" not allowed`,
			`spec.servers[0].hosts[2]: short name "reviews" not allowed: use a fully qualified name`,
			`spec.servers[0].hosts[3]: host "ns/": namespace and dnsName cannot be empty`,
		}},
		{name: "tls requirements", kind: Gateway, spec: `
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [a.com]
- port: {number: 444, name: https-2, protocol: HTTPS}
  hosts: [a.com]
  tls: {mode: SIMPLE}
- port: {number: 445, name: https-3, protocol: HTTPS}
  hosts: [a.com]
  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}
- port: {number: 446, name: https-4, protocol: HTTPS}
  hosts: [a.com]
  tls: {mode: ISTIO_MUTUAL, credentialName: c}
- port: {number: 447, name: https-5, protocol: HTTPS}
  hosts: [a.com]
  tls: {mode: SIMPLE, credentialName: c, caCrl: /crl.pem}
`, want: []string{
			"spec.servers[0].tls: is required for HTTPS and TLS servers",
			"spec.servers[1].tls.serverCertificate: is required when mode is SIMPLE (or set credentialName)",
			"spec.servers[1].tls.privateKey: is required when mode is SIMPLE (or set credentialName)",
			"spec.servers[2].tls.caCertificates: is required when mode is MUTUAL (or set credentialName)",
			"spec.servers[3].tls.credentialName: must not be set when mode is ISTIO_MUTUAL",
			"spec.servers[4].tls.caCrl: must not be set when credentialName is set (put the CRL in the credential)",
		}},
		{name: "tls on plain ports", kind: Gateway, spec: `
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: [a.com]
  tls: {mode: PASSTHROUGH}
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [a.com]
  tls: {httpsRedirect: true, mode: PASSTHROUGH}
- port: {number: 9000, name: tcp, protocol: TCP}
  hosts: [a.com]
  tls: {mode: AUTO_PASSTHROUGH}
`, want: []string{
			"spec.servers[0].tls: plain HTTP servers may only set httpsRedirect; TLS settings belong to HTTPS and TLS servers",
			"spec.servers[1].tls.httpsRedirect: only allowed on HTTP servers",
			"spec.servers[2].tls: TLS settings are only allowed on HTTPS and TLS servers",
		}},
	})
}

func TestValidateServiceEntry(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid dns", kind: ServiceEntry, spec: `
hosts: [api.example.com, www.example.com]
location: MESH_EXTERNAL
ports:
- {number: 443, name: https, protocol: TLS}
- {number: 80, name: http, protocol: HTTP}
resolution: DNS
`},
		{name: "valid static", kind: ServiceEntry, spec: `
hosts: [db.internal]
addresses: [10.1.0.0/16]
ports:
- {number: 5432, name: tcp-pg, protocol: TCP}
resolution: STATIC
endpoints:
- address: 10.1.2.3
  ports: {tcp-pg: 15432}
  labels: {version: v1}
- address: unix:///var/run/pg.sock
`},
		{name: "valid workload selector", kind: ServiceEntry, spec: `
hosts: [preference.default.svc.cluster.local]
ports:
- {number: 8080, name: http, protocol: HTTP}
resolution: STATIC
workloadSelector:
  labels: {app: preference}
`},
		{name: "hosts", kind: ServiceEntry, spec: `
hosts: ["*", foo_bar]
resolution: NONE
`, want: []string{
			`spec.hosts[0]: wildcard host "*" is not allowed in a ServiceEntry`,
			`spec.hosts[1]: domain name "foo_bar" invalid (label "foo_bar" invalid)`,
		}},
		{name: "no hosts", kind: ServiceEntry, spec: `
ports:
- {number: 80, name: http, protocol: HTTP}
`, want: []string{"spec.hosts: at least one host is required"}},
		{name: "ports", kind: ServiceEntry, spec: `
hosts: [a.example.com]
ports:
- {number: 80, name: http, protocol: HTTP}
- {number: 80, name: http, protocol: HTTP}
- {number: 70000, name: Bad_Name, protocol: QUIC}
- {number: 81, protocol: HTTP, targetPort: 70000}
resolution: DNS
`, want: []string{
			"spec.ports[1].number: duplicate port 80",
			`spec.ports[1].name: duplicate port name "http"`,
			"spec.ports[2].number: port number 70000 must be in the range 1..65535",
			`spec.ports[2].name: invalid port name "Bad_Name": must be a DNS-1123 label`,
			`spec.ports[2].protocol: unsupported protocol "QUIC" (want one of HTTP, HTTPS, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, MYSQL, REDIS)`,
			"spec.ports[3].name: is required",
			"spec.ports[3].targetPort: port number 70000 must be in the range 1..65535",
		}},
		{name: "static endpoints", kind: ServiceEntry, spec: `
hosts: [db.internal]
ports:
- {number: 5432, name: tcp-pg, protocol: TCP}
resolution: STATIC
endpoints:
- address: db.example.com
- address: 10.0.0.1
  ports: {grpc: 9000}
`, want: []string{
			`spec.endpoints[0].address: "db.example.com" is not a valid IP address`,
			`spec.endpoints[1].ports[grpc]: port name "grpc" is not declared in the ServiceEntry's ports`,
		}},
		{name: "static needs endpoints", kind: ServiceEntry, spec: `
hosts: [db.internal]
ports:
- {number: 5432, name: tcp-pg, protocol: TCP}
resolution: STATIC
`, want: []string{"spec: resolution STATIC requires endpoints or a workloadSelector"}},
		{name: "endpoints and selector", kind: ServiceEntry, spec: `
hosts: [db.internal]
resolution: STATIC
endpoints:
- address: 10.0.0.1
workloadSelector:
  labels: {app: db}
`, want: []string{"spec: endpoints and workloadSelector are mutually exclusive"}},
		{name: "addresses", kind: ServiceEntry, spec: `
hosts: [a.example.com]
addresses: [10.0.0.0/8, 300.1.1.1]
ports:
- {number: 80, name: http, protocol: HTTP}
resolution: DNS
`, want: []string{
			`spec.addresses[1]: "300.1.1.1" is not a valid IP address`,
			"spec.addresses: CIDR addresses are only allowed with resolution NONE or STATIC",
		}},
		{name: "dns hosts", kind: ServiceEntry, spec: `
hosts: ["*.example.com"]
ports:
- {number: 443, name: tls, protocol: TLS}
resolution: DNS_ROUND_ROBIN
`, want: []string{`spec.hosts[0]: host "*.example.com" must be a FQDN (not a wildcard) when resolution is DNS_ROUND_ROBIN and there are no endpoints`}},
		{name: "dns endpoints", kind: ServiceEntry, spec: `
hosts: [a.example.com]
ports:
- {number: 80, name: http, protocol: HTTP}
resolution: DNS
endpoints:
- address: us.a.example.com
  ports: {http: 8080}
- address: "bad_host!"
`, want: []string{`spec.endpoints[1].address: "bad_host!" is not a valid IP address or hostname`}},
		{name: "multiple hosts with tcp", kind: ServiceEntry, spec: `
hosts: [a.example.com, b.example.com]
ports:
- {number: 3306, name: mysql, protocol: MYSQL}
resolution: DNS
`, want: []string{`spec.ports[0].protocol: multiple hosts need HTTP or TLS ports (protocol "MYSQL" cannot tell the hosts apart) unless resolution is NONE`}},
		{name: "none with endpoints", kind: ServiceEntry, spec: `
hosts: [a.example.com]
resolution: NONE
endpoints:
- address: 1.1.1.1
`, want: []string{"spec.endpoints: must be empty when resolution is NONE"}},
	})
}

func TestValidateWorkloadEntry(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid ip", kind: WorkloadEntry, spec: `
address: 10.0.0.7
ports: {http: 8080}
labels: {app: preference, version: v1}
serviceAccount: preference
weight: 10
`},
		{name: "valid hostname", kind: WorkloadEntry, spec: `
address: vm1.example.com
`},
		{name: "valid unix", kind: WorkloadEntry, spec: `
address: unix:///var/run/app.sock
`},
		{name: "cross-network without address", kind: WorkloadEntry, spec: `
network: vpc-2
`},
		{name: "address required", kind: WorkloadEntry, spec: `
labels: {app: x}
`, want: []string{"spec.address: is required"}},
		{name: "bad address", kind: WorkloadEntry, spec: `
address: "not an address"
`, want: []string{`spec.address: "not an address" is not a valid IP address or hostname`}},
		{name: "ports", kind: WorkloadEntry, spec: `
address: 10.0.0.7
ports: {http: 0, Bad_Name: 80, grpc: 70000}
`, want: []string{
			`spec.ports[Bad_Name]: invalid port name "Bad_Name": must be a DNS-1123 label`,
			"spec.ports[grpc]: port number 70000 must be in the range 1..65535",
			"spec.ports[http]: port number 0 must be in the range 1..65535",
		}},
		{name: "unix with ports", kind: WorkloadEntry, spec: `
address: unix://relative.sock
ports: {http: 80}
`, want: []string{
			`spec.address: "relative.sock" is not an absolute path to a file`,
			"spec.ports: must be empty for a unix domain socket address",
		}},
		{name: "labels", kind: WorkloadEntry, spec: `
address: 10.0.0.7
labels: {"-app": x}
`, want: []string{`spec.labels[-app]: invalid key "-app": name part must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`}},
	})
}

func TestValidateWorkloadGroup(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: WorkloadGroup, spec: `
metadata:
  labels: {app: preference}
template:
  ports: {http: 8080}
  serviceAccount: preference
probe:
  httpGet: {path: /ready, port: 8080}
`},
		{name: "template required", kind: WorkloadGroup, spec: `
probe:
  tcpSocket: {port: 0}
`, want: []string{
			"spec.template: is required",
			"spec.probe.tcpSocket.port: port number 0 must be in the range 1..65535",
		}},
	})
}

func TestValidateSidecar(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: Sidecar, spec: `
workloadSelector:
  labels: {app: reviews}
ingress:
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 127.0.0.1:8080
egress:
- port: {number: 3306, protocol: MYSQL, name: mysql}
  hosts: [prod/mysql.prod.svc.cluster.local]
- hosts: ["./*", "istio-system/*", "~/*", "*/*.example.com"]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`},
		{name: "empty", kind: Sidecar, spec: `
workloadSelector:
  labels: {app: reviews}
`, want: []string{"spec: at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool is required"}},
		{name: "egress hosts", kind: Sidecar, spec: `
egress:
- hosts: [foo.com, "bad_ns/a.com", ./reviews, "./*foo.com"]
`, want: []string{
			`spec.egress[0].hosts[0]: host "foo.com" must be of the form namespace/dnsName`,
			`spec.egress[0].hosts[1]: host "bad_ns/a.com": invalid namespace "bad_ns" (want *, ., ~ or a namespace name)`,
			`spec.egress[0].hosts[2]: short name "reviews" not allowed: use a fully qualified name`,
			`spec.egress[0].hosts[3]: partial wildcard "*foo.com" not allowed`,
		}},
		{name: "listeners", kind: Sidecar, spec: `
ingress:
- defaultEndpoint: 127.0.0.1:8080
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 10.0.0.1:8080
egress:
- hosts: ["*/*"]
- port: {number: 80, protocol: HTTP}
  hosts: ["*/*"]
- port: {number: 80, protocol: HTTP}
  hosts: []
`, want: []string{
			"spec.ingress[0].port: is required",
			`spec.ingress[1].defaultEndpoint: invalid endpoint "10.0.0.1:8080": the host must be 127.0.0.1, 0.0.0.0, ::1 or ::`,
			"spec.egress[0].port: only the last egress listener may omit the port",
			"spec.egress[2].port.number: duplicate port 80",
			"spec.egress[2].hosts: at least one host is required",
		}},
	})
}

func TestValidatePeerAuthentication(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid namespace-wide", kind: PeerAuthentication, spec: `
mtls: {mode: STRICT}
`},
		{name: "valid empty", kind: PeerAuthentication, spec: ``},
		{name: "valid port level", kind: PeerAuthentication, spec: `
selector:
  matchLabels: {app: reviews}
mtls: {mode: STRICT}
portLevelMtls:
  8080: {mode: DISABLE}
`},
		{name: "port level needs selector", kind: PeerAuthentication, spec: `
mtls: {mode: STRICT}
portLevelMtls:
  8080: {mode: PERMISSIVE}
  0: {mode: DISABLE}
`, want: []string{
			"spec.portLevelMtls: requires a selector with matchLabels (namespace- and mesh-wide policies cannot set port-level mTLS)",
			"spec.portLevelMtls[0]: port number 0 must be in the range 1..65535",
		}},
	})
}

func TestValidateRequestAuthentication(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid", kind: RequestAuthentication, spec: `
selector:
  matchLabels: {app: productpage}
jwtRules:
- issuer: testing@secure.istio.io
  jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.20/security/tools/jwt/samples/jwks.json
  fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
  outputClaimToHeaders: [{header: x-user, claim: sub}]
  timeout: 5s
- issuer: local
  jwks: '{"keys":[{"kty":"RSA","e":"AQAB","n":"abc"}]}'
`},
		{name: "rules", kind: RequestAuthentication, spec: `
jwtRules:
- jwksUri: ftp://example.com/jwks
  audiences: [""]
- issuer: a
  jwks: '{bad'
- issuer: b
  jwks: '{"keys":[{"e":"AQAB"}]}'
  outputClaimToHeaders: [{header: "bad header", claim: sub}]
`, want: []string{
			"spec.jwtRules[0].issuer: is required",
			"spec.jwtRules[0].audiences[0]: must not be empty",
			`spec.jwtRules[0].jwksUri: invalid URL "ftp://example.com/jwks": scheme must be http or https`,
			"spec.jwtRules[1].jwks: invalid JWKS: invalid character 'b' looking for beginning of object key string",
			`spec.jwtRules[2].jwks: invalid JWKS: keys[0] has no "kty"`,
			`spec.jwtRules[2].outputClaimToHeaders[0].header: invalid header name "bad header": must match [-_A-Za-z0-9]+`,
		}},
		{name: "selector and targetRef", kind: RequestAuthentication, spec: `
selector:
  matchLabels: {app: a}
targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw, namespace: other}
`, want: []string{
			"spec.targetRef.namespace: must not be set: cross-namespace references are not supported",
			"spec: only one of selector, targetRef or targetRefs may be set",
		}},
	})
}

func TestValidateAuthorizationPolicy(t *testing.T) {
	runValidationCases(t, []validationCase{
		{name: "valid allow", kind: AuthorizationPolicy, spec: `
selector:
  matchLabels: {app: httpbin}
action: ALLOW
rules:
- from:
  - source: {principals: [cluster.local/ns/default/sa/sleep], namespaces: [test]}
  - source: {ipBlocks: [10.0.0.0/8, 192.168.1.1], notRequestPrincipals: ["*"]}
  to:
  - operation: {methods: [GET], paths: ["/info*", "/api/{*}/items"], ports: ["8080"]}
  when:
  - key: request.auth.claims[iss]
    values: [https://accounts.google.com]
  - key: request.headers[x-token]
    notValues: [none]
  - key: source.ip
    values: [10.1.0.0/16]
  - key: destination.port
    values: ["443"]
`},
		{name: "valid deny all and allow nothing", kind: AuthorizationPolicy, spec: `
action: DENY
rules: [{}]
`},
		{name: "valid allow nothing", kind: AuthorizationPolicy, spec: ``},
		{name: "valid custom", kind: AuthorizationPolicy, spec: `
action: CUSTOM
provider: {name: ext-authz}
rules:
- to:
  - operation: {paths: [/admin]}
`},
		{name: "custom", kind: AuthorizationPolicy, spec: `
action: CUSTOM
rules:
- from:
  - source: {principals: [a]}
  when:
  - key: request.auth.principal
    values: [x]
`, want: []string{
			"spec.provider.name: is required when action is CUSTOM",
			"spec.rules[0].from[0].source.principals: not supported with action CUSTOM",
			`spec.rules[0].when[0].key: "request.auth.principal" is not supported with action CUSTOM`,
		}},
		{name: "deny without rules", kind: AuthorizationPolicy, spec: `
action: DENY
provider: {name: x}
`, want: []string{
			"spec.rules: a DENY policy without rules never triggers; add an empty rule {} to match every request",
			"spec.provider: only allowed when action is CUSTOM, got DENY",
		}},
		{name: "rules", kind: AuthorizationPolicy, spec: `
rules:
- from:
  - source: {}
  - source: {principals: [""], ipBlocks: [10.0.0.0/40]}
  - {}
  to:
  - operation: {}
  - operation: {ports: [http, "70000"], paths: ["/{foo}/{*}"]}
  when:
  - key: destination.labels[app]
    values: [x]
  - key: request.headers
    values: [x]
  - key: source.ip
    values: [nope]
  - key: source.namespace
  - key: destination.port
    notValues: ["-1"]
  - key: foo.bar
    values: [x]
`, want: []string{
			"spec.rules[0].from[0].source: at least one field is required",
			"spec.rules[0].from[1].source.principals[0]: must not be empty",
			`spec.rules[0].from[1].source.ipBlocks[0]: "10.0.0.0/40" is not a valid CIDR block`,
			"spec.rules[0].from[2].source: is required",
			"spec.rules[0].to[0].operation: at least one field is required",
			`spec.rules[0].to[1].operation.ports[0]: invalid port "http": want a number in the range 0..65535`,
			`spec.rules[0].to[1].operation.ports[1]: invalid port "70000": want a number in the range 0..65535`,
			`spec.rules[0].to[1].operation.paths[0]: invalid or unsupported path template "/{foo}/{*}" (only {*} and {**} segments are supported)`,
			`spec.rules[0].when[0].key: key "destination.labels[app]" is not supported: use the policy's selector`,
			`spec.rules[0].when[1].key: invalid key "request.headers": want request.headers[<name>]`,
			`spec.rules[0].when[2].values[0]: "nope" is not a valid IP address`,
			`spec.rules[0].when[3]: at least one of values or notValues is required for key "source.namespace"`,
			`spec.rules[0].when[4].notValues[0]: invalid port "-1": want a number in the range 0..65535`,
			`spec.rules[0].when[5].key: unknown key "foo.bar" (want request.headers[...], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[...], destination.ip, destination.port, connection.sni or experimental.envoy.filters.*)`,
		}},
	})
}

func TestValidateMetadata(t *testing.T) {
	base := func(t *testing.T, kind string) *Object {
		spec := map[string]string{
			VirtualService: "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}",
			Gateway:        "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]",
		}[kind]
		return specObject(t, kind, spec)
	}
	cases := []struct {
		name   string
		kind   string
		mutate func(o *Object)
		want   string
	}{
		{"valid", VirtualService, func(o *Object) {
			o.Meta.Labels = map[string]string{"app.kubernetes.io/name": "reviews", "empty": ""}
			o.Meta.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}
		}, ""},
		{"name required", VirtualService, func(o *Object) { o.Meta.Name = "" },
			"VirtualService default/(no name): metadata.name: is required"},
		{"name not a subdomain", VirtualService, func(o *Object) { o.Meta.Name = "Reviews_v1" },
			`VirtualService default/Reviews_v1: metadata.name: invalid name "Reviews_v1": must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters)`},
		{"gateway name with dots", Gateway, func(o *Object) { o.Meta.Name = "bookinfo.gateway" },
			`Gateway default/bookinfo.gateway: metadata.name: invalid name "bookinfo.gateway": a Gateway name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters)`},
		{"namespace", VirtualService, func(o *Object) { o.Meta.Namespace = "Prod.ns" },
			`VirtualService Prod.ns/x: metadata.namespace: invalid namespace "Prod.ns": must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters)`},
		{"namespace required", VirtualService, func(o *Object) { o.Meta.Namespace = "" },
			`VirtualService x: metadata.namespace: is required`},
		{"labels", VirtualService, func(o *Object) {
			o.Meta.Labels = map[string]string{"Bad/key": "v", "ok": "spaces are bad"}
		}, `VirtualService default/x: metadata.labels[Bad/key]: invalid key "Bad/key": prefix must be a DNS-1123 subdomain` + "\n" +
			`VirtualService default/x: metadata.labels[ok]: invalid value "spaces are bad": must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric`},
		{"dry-run annotation", VirtualService, func(o *Object) {
			o.Meta.Annotations = map[string]string{"istio.io/dry-run": "true"}
		}, `VirtualService default/x: metadata.annotations[istio.io/dry-run]: only supported on AuthorizationPolicy`},
		{"apiVersion", VirtualService, func(o *Object) { o.APIVersion = "networking.istio.io/v2" },
			`VirtualService default/x: apiVersion: "networking.istio.io/v2" is not served for VirtualService (want one of networking.istio.io/v1alpha3, networking.istio.io/v1beta1, networking.istio.io/v1)`},
		{"unknown kind", VirtualService, func(o *Object) { o.Kind = "EnvoyFilter" },
			`EnvoyFilter default/x: kind: unknown kind "EnvoyFilter" (want one of VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, RequestAuthentication, AuthorizationPolicy, Telemetry)`},
		{"spec type", VirtualService, func(o *Object) { o.Kind = DestinationRule },
			`DestinationRule default/x: spec: has type istio.networking.v1alpha3.VirtualService, want istio.networking.v1alpha3.DestinationRule`},
		{"nil spec", VirtualService, func(o *Object) { o.Spec = nil },
			`VirtualService default/x: spec: is required`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := base(t, tc.kind)
			tc.mutate(o)
			err := Validate(o)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Fatalf("want:\n%s\ngot:\n%s", tc.want, got)
			}
		})
	}
}

func TestValidateDryRunAnnotation(t *testing.T) {
	o := specObject(t, AuthorizationPolicy, "action: DENY\nrules: [{}]")
	o.Meta.Annotations = map[string]string{"istio.io/dry-run": "maybe"}
	want := `AuthorizationPolicy default/x: metadata.annotations[istio.io/dry-run]: invalid value "maybe": must be true or false`
	if err := Validate(o); err == nil || err.Error() != want {
		t.Fatalf("want %q, got %v", want, err)
	}
	o.Meta.Annotations["istio.io/dry-run"] = "true"
	if err := Validate(o); err != nil {
		t.Fatal(err)
	}
}
