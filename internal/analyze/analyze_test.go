package analyze

import (
	"strings"
	"testing"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

// world is the configuration most cases start from: reviews (v1, v2) and
// ratings in default, an ingress Gateway in istio-system.
const world = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http, number: 9080, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 10.0.0.2, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http, number: 9080, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1, labels: {app: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: ["*.example.com"]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{name: https, number: 443, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`

const reviewsDR = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// objects decodes YAML documents; each is one second younger than the one
// before, so precedence follows document order.
func objects(t *testing.T, docs ...string) []*config.Object {
	t.Helper()
	objs, err := config.Decode([]byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, o := range objs {
		o.Meta.CreationTimestamp = base.Add(time.Duration(i) * time.Second)
	}
	return objs
}

type testCase struct {
	name string
	docs []string
	in   Input // Objects are filled from docs
	want []string
	// invalid marks fixtures that fail validation on purpose; the others
	// must be valid, so that a finding never comes from a typo.
	invalid bool
}

func runCases(t *testing.T, a analyzer, cases []testCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Objects = objects(t, tc.docs...)
			x := newIndex(in)
			if bad := analyzeSchema(x); len(bad) > 0 && !tc.invalid {
				t.Fatalf("fixture does not validate: %v", bad)
			}
			got := a(x)
			Sort(got)
			var lines []string
			for _, f := range got {
				lines = append(lines, f.String())
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestDestinationSubsets(t *testing.T) {
	vs := `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 50}
    mirror: {host: reviews.default.svc.cluster.local, subset: v4}
`
	runCases(t, analyzeDestinationSubsets, []testCase{
		{name: "unknown subset", docs: []string{world, reviewsDR, vs}, want: []string{
			`Error [IST0101] (VirtualService default/reviews spec.http[0].mirror.subset) Referenced host+subset in destinationrule not found: "reviews.default.svc.cluster.local+v4". Fix: add subset v4 to DestinationRule default/reviews, or route to an existing subset (v1, v2)`,
			`Error [IST0101] (VirtualService default/reviews spec.http[0].route[1].destination.subset) Referenced host+subset in destinationrule not found: "reviews+v3". Fix: add subset v3 to DestinationRule default/reviews, or route to an existing subset (v1, v2)`,
		}},
		{name: "no destination rule", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
`}, want: []string{
			`Error [IST0101] (VirtualService default/reviews spec.http[0].route[0].destination.subset) Referenced host+subset in destinationrule not found: "reviews+v1". Fix: create a DestinationRule for host reviews.default.svc.cluster.local with subset v1, or remove the subset`,
		}},
		{name: "unknown host: left to the host check", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: nope, subset: v1}}]}]
`}},
		{name: "rule in the root namespace and a wildcard rule", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  host: "*.default.svc.cluster.local"
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
`}},
		{name: "a rule of the client namespace wins over the service's", docs: []string{world, reviewsDR, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]}]
`}, want: []string{
			`Error [IST0101] (VirtualService shop/reviews spec.http[0].route[0].destination.subset) Referenced host+subset in destinationrule not found: "reviews.default.svc.cluster.local+v1". Fix: add subset v1 to DestinationRule shop/reviews, or route to an existing subset (v3)`,
		}},
		{name: "a rule exported elsewhere does not apply", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.default.svc.cluster.local
  exportTo: ["."]
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
`}, want: []string{
			`Error [IST0101] (VirtualService default/reviews spec.http[0].route[0].destination.subset) Referenced host+subset in destinationrule not found: "reviews+v1". Fix: create a DestinationRule for host reviews.default.svc.cluster.local with subset v1, or remove the subset`,
		}},
	})
}

func TestDestinationHosts(t *testing.T) {
	runCases(t, analyzeDestinationHosts, []testCase{
		{name: "known, wildcard ServiceEntry and unknown hosts", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: api.example.com}}]
  - route: [{destination: {host: reviews}}]
    mirrors: [{destination: {host: shadow}}]
  tcp:
  - route: [{destination: {host: db.default.svc.cluster.local}}]
`}, want: []string{
			`Error [IST0101] (VirtualService default/reviews spec.http[1].mirrors[0].destination.host) Referenced host not found: "shadow". Fix: declare shadow.default.svc.cluster.local with a ServiceEntry (a WorkloadEntry per instance), or route to an existing service`,
			`Error [IST0101] (VirtualService default/reviews spec.tcp[0].route[0].destination.host) Referenced host not found: "db.default.svc.cluster.local". Fix: declare db.default.svc.cluster.local with a ServiceEntry (a WorkloadEntry per instance), or route to an existing service`,
		}},
		{name: "a service not exported to the namespace", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec:
  hosts: [private.other.svc.cluster.local]
  exportTo: ["."]
  ports: [{name: http, number: 80, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: private.other.svc.cluster.local}}]}]
`}, want: []string{
			`Error [IST0101] (VirtualService default/private spec.http[0].route[0].destination.host) Referenced host not found: "private.other.svc.cluster.local". Fix: declare private.other.svc.cluster.local with a ServiceEntry (a WorkloadEntry per instance), or route to an existing service`,
		}},
	})
}

func TestSchema(t *testing.T) {
	runCases(t, analyzeSchema, []testCase{
		{name: "weights not summing to 100", invalid: true, docs: []string{world, reviewsDR, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 40}
`}, want: []string{
			`Error [IST0106] (VirtualService default/reviews spec.http[0].route[1].weight) Schema validation error: weights must sum to 100, got 90. Fix: correct spec.http[0].route[1].weight: the control plane refuses the whole resource until it is valid`,
		}},
	})
}

func TestShadowedRoutes(t *testing.T) {
	vs := func(http string) string {
		return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:` + http
	}
	runCases(t, analyzeShadowedRoutes, []testCase{
		{name: "rules after a rule without match", docs: []string{vs(`
  - route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: last
    route: [{destination: {host: reviews, subset: v2}}]
`)}, want: []string{
			`Warning [IST0130] (VirtualService default/reviews spec.http[1]) VirtualService rule #1 not used (route without matches defined before). Fix: rule #0 has no match, so it takes every request: give it a match, or move it last`,
			`Warning [IST0130] (VirtualService default/reviews spec.http[2]) VirtualService rule "last" not used (only the last rule can have no matches). Fix: rule #0 has no match, so it takes every request: give it a match, or move it last`,
		}},
		{name: "catch-all prefix / first", docs: []string{vs(`
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /api}, name: api}, {headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v2}}]
`)}, want: []string{
			`Warning [IST0130] (VirtualService default/reviews spec.http[1]) VirtualService rule #1 not used (all matches used by prior rules). Fix: move rule #1 before rule #0 (most specific first), or remove it`,
			`Warning [IST0130] (VirtualService default/reviews spec.http[2]) VirtualService rule #2 not used (rule #0 matches every request). Fix: remove rule #2, or narrow rule #0's match`,
			`Info [IST0131] (VirtualService default/reviews spec.http[1].match[0]) VirtualService rule #1 match "api" is not used (duplicate/overlapping match in rule #0). Fix: move rule #1 before rule #0 (most specific first), or remove this match`,
			`Info [IST0131] (VirtualService default/reviews spec.http[1].match[1]) VirtualService rule #1 match #1 is not used (duplicate/overlapping match in rule #0). Fix: move rule #1 before rule #0 (most specific first), or remove this match`,
		}},
		{name: "broader prefix first, duplicates, and matches that only look alike", docs: []string{vs(`
  - match: [{uri: {prefix: /api}, headers: {x-user: {exact: a}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match:
    - {uri: {prefix: /api/v1}, headers: {x-user: {exact: a}}, method: {exact: GET}}
    - {uri: {prefix: /api/v1}}
    - {uri: {exact: /API/v1}, headers: {x-user: {exact: a}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {regex: "/api/.*"}}, {uri: {regex: "/api/.*"}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {regex: "/api/.*"}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
`)}, want: []string{
			`Warning [IST0130] (VirtualService default/reviews spec.http[3]) VirtualService rule #3 not used (all matches used by prior rules). Fix: move rule #3 before rule #2 (most specific first), or remove it`,
			`Info [IST0131] (VirtualService default/reviews spec.http[1].match[0]) VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0). Fix: move rule #1 before rule #0 (most specific first), or remove this match`,
			`Info [IST0131] (VirtualService default/reviews spec.http[3].match[0]) VirtualService rule #3 match #0 is not used (duplicate/overlapping match in rule #2). Fix: move rule #3 before rule #2 (most specific first), or remove this match`,
		}},
		{name: "gateway- and source-scoped catch-alls do not shadow", docs: []string{vs(`
  - match: [{gateways: [istio-system/ingress]}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{sourceLabels: {app: productpage}, uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
`)}},
	})
}

func TestSubsetWorkloads(t *testing.T) {
	runCases(t, analyzeSubsetWorkloads, []testCase{
		{name: "subset selecting nothing", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v3, labels: {version: v3}}
  - {name: all}
  - {name: canary, labels: {version: v2, track: canary}}
`}, want: []string{
			`Warning [AM0101] (DestinationRule default/reviews spec.subsets[1].labels) Subset "v3" selects no workload of reviews.default.svc.cluster.local: no endpoint has labels version=v3. Fix: change the labels to match a workload (endpoints have version=v1; version=v2), or start a workload with version=v3`,
			`Warning [AM0101] (DestinationRule default/reviews spec.subsets[3].labels) Subset "canary" selects no workload of reviews.default.svc.cluster.local: no endpoint has labels track=canary,version=v2. Fix: change the labels to match a workload (endpoints have version=v1; version=v2), or start a workload with track=canary,version=v2`,
		}},
		{name: "hosts without endpoints, unknown hosts and wildcards are skipped", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: default}
spec:
  host: api.example.com
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: unknown, namespace: default}
spec:
  host: unknown
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: default}
spec:
  host: "*.default.svc.cluster.local"
  subsets: [{name: v9, labels: {version: v9}}]
`}},
	})
}

func TestGatewaySelectors(t *testing.T) {
	gw := `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: all, namespace: default}
spec:
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`
	runCases(t, analyzeGatewaySelectors, []testCase{
		{name: "labels unknown", docs: []string{world, gw}, want: []string{
			`Info [AM0102] (Gateway istio-system/ingress spec.selector) Selector "istio=ingressgateway" not checked: the labels of gateway proxies are not available. Fix: check that a gateway proxy with these labels is connected (amime proxy-status; amime proxy --mode gateway --labels istio=ingressgateway)`,
		}},
		{name: "no proxy has the labels", docs: []string{world, gw}, in: Input{GatewayLabelsKnown: true, GatewayProxies: []GatewayProxy{
			{ID: "router~10.0.0.9~egress~default.svc.cluster.local", Labels: map[string]string{"istio": "egressgateway"}},
		}}, want: []string{
			`Error [IST0101] (Gateway istio-system/ingress spec.selector) Referenced selector not found: "istio=ingressgateway". Fix: start a gateway proxy with these labels (amime proxy --mode gateway --labels istio=ingressgateway), or change the selector to a connected gateway's labels`,
		}},
		{name: "a proxy has the labels", docs: []string{world, gw}, in: Input{GatewayLabelsKnown: true, GatewayProxies: []GatewayProxy{
			{ID: "router~10.0.0.9~ingress~default.svc.cluster.local", Labels: map[string]string{"istio": "ingressgateway", "app": "ingress"}},
		}}},
	})
}

func TestGatewayReferences(t *testing.T) {
	runCases(t, analyzeGatewayReferences, []testCase{
		{name: "unknown gateways", docs: []string{world, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.org]
  gateways: [mesh, istio-system/ingress, ingress, shop/web]
  http:
  - match: [{gateways: [missing]}]
    route: [{destination: {host: reviews}}]
`}, want: []string{
			`Error [IST0101] (VirtualService default/reviews spec.gateways[2]) Referenced gateway not found: "ingress". Fix: a Gateway of another namespace is named namespace/name: use istio-system/ingress`,
			`Error [IST0101] (VirtualService default/reviews spec.gateways[3]) Referenced gateway not found: "shop/web". Fix: create Gateway shop/web, or fix the name`,
			`Error [IST0101] (VirtualService default/reviews spec.http[0].match[0].gateways[0]) Referenced gateway not found: "missing". Fix: create Gateway default/missing, or fix the name`,
		}},
	})
}

func TestConflictingVirtualServices(t *testing.T) {
	vs := func(name, hosts, gateways, http string) string {
		return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ` + name + `, namespace: default}
spec:
  hosts: ` + hosts + `
  gateways: ` + gateways + `
  http:` + http
	}
	route := `
  - route: [{destination: {host: reviews}}]
`
	api := `
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: ratings}}]
`
	runCases(t, analyzeConflictingVirtualServices, []testCase{
		{name: "mesh", docs: []string{
			vs("b-reviews", "[reviews]", "[]", route),
			vs("a-reviews", "[reviews.default.svc.cluster.local]", "[mesh]", route),
			`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: other}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
`,
		}, want: []string{
			`Error [IST0109] (VirtualService default/a-reviews spec.hosts[0]) The VirtualServices default/b-reviews,default/a-reviews associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource. Fix: merge them into one VirtualService; meanwhile sidecars use default/b-reviews (the oldest) for this host and ignore the others`,
			`Error [IST0109] (VirtualService default/b-reviews spec.hosts[0]) The VirtualServices default/b-reviews,default/a-reviews associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource. Fix: merge them into one VirtualService; meanwhile sidecars use default/b-reviews (the oldest) for this host and ignore the others`,
		}},
		{name: "gateway", docs: []string{
			vs("site", "[www.example.org, shop.example.org]", "[istio-system/ingress]", api),
			vs("shop", "[shop.example.org]", "[istio-system/ingress]", route),
			vs("catch-all", "[www.example.org]", "[istio-system/ingress, mesh]", route),
			vs("late", "[www.example.org]", "[istio-system/ingress]", api),
			vs("other-gateway", "[www.example.org]", "[web]", route),
		}, want: []string{
			`Warning [AM0103] (VirtualService default/catch-all spec.hosts[0]) VirtualServices default/site,default/catch-all,default/late bind host www.example.org to gateway istio-system/ingress: their routes are merged, default/site's (the oldest) first, so default/catch-all gets only the requests default/site does not match. Fix: merge them into one VirtualService with the routes in the intended order, or give each its own host`,
			`Warning [AM0103] (VirtualService default/late spec.hosts[0]) VirtualServices default/site,default/catch-all,default/late bind host www.example.org to gateway istio-system/ingress: their routes are merged, default/site's (the oldest) first, so default/late gets only the requests default/site does not match. Fix: merge them into one VirtualService with the routes in the intended order, or give each its own host`,
			`Warning [AM0103] (VirtualService default/shop spec.hosts[0]) VirtualServices default/site,default/shop bind host shop.example.org to gateway istio-system/ingress: their routes are merged, default/site's (the oldest) first, so default/shop gets only the requests default/site does not match. Fix: merge them into one VirtualService with the routes in the intended order, or give each its own host`,
		}},
		{name: "gateway with a catch-all first", docs: []string{
			vs("first", "[www.example.org]", "[istio-system/ingress]", route),
			vs("second", "[www.example.org]", "[istio-system/ingress]", api),
		}, want: []string{
			`Warning [AM0103] (VirtualService default/second spec.hosts[0]) VirtualServices default/first,default/second bind host www.example.org to gateway istio-system/ingress: their routes are merged, default/first's (the oldest) first, so default/second gets only the requests default/first does not match; its rule #0 matches every request, so none of its routes is used. Fix: merge them into one VirtualService with the routes in the intended order, or give each its own host`,
		}},
	})
}

func TestConflictingGateways(t *testing.T) {
	gw := func(ns, name, selector, servers string) string {
		return `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  selector: ` + selector + `
  servers: ` + servers
	}
	runCases(t, analyzeConflictingGateways, []testCase{
		{name: "same selector, port and host", docs: []string{
			gw("istio-system", "a", "{istio: ingressgateway}", `[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.example.org"]}]`),
			gw("shop", "b", "{istio: ingressgateway}", `[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["shop/www.example.org", "other.com"]}]`),
			// Another port, another selector, other hosts: no conflict.
			gw("shop", "c", "{istio: ingressgateway}", `[{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["www.example.org"]}]`),
			gw("shop", "d", "{istio: egressgateway}", `[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["www.example.org"]}]`),
			gw("shop", "e", "{istio: ingressgateway}", `[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["example.net"]}]`),
		}, want: []string{
			`Error [IST0145] (Gateway istio-system/a spec.servers) Conflict with gateways shop/b (workload selector istio=ingressgateway, port 80, hosts www.example.org). Fix: serve each host and port from one Gateway (merge the servers), or select different gateway proxies`,
			`Error [IST0145] (Gateway shop/b spec.servers) Conflict with gateways istio-system/a (workload selector istio=ingressgateway, port 80, hosts www.example.org). Fix: serve each host and port from one Gateway (merge the servers), or select different gateway proxies`,
		}},
	})
}

// TestAnalyze checks the whole run: every analyzer, sorted by level, code
// and resource, and a clean configuration yielding nothing.
func TestAnalyze(t *testing.T) {
	clean := `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [www.example.org]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: reviews, port: {number: 9080}}}]}]
`
	proxies := Input{GatewayLabelsKnown: true, GatewayProxies: []GatewayProxy{{ID: "router~1", Labels: map[string]string{"istio": "ingressgateway"}}}}
	if got := Analyze(Input{Objects: objects(t, world, reviewsDR, clean), GatewayLabelsKnown: true, GatewayProxies: proxies.GatewayProxies}); len(got) != 0 {
		t.Errorf("clean configuration: got %v", got)
	}

	broken := `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway, mesh]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /}}]
    route:
    - {destination: {host: ratings}, weight: 50}
    - {destination: {host: reviews, subset: v1}, weight: 40}
`
	got := Analyze(Input{Objects: objects(t, world, reviewsDR, broken)})
	var lines []string
	for _, f := range got {
		lines = append(lines, f.String())
	}
	want := []string{
		`Error [IST0101] (VirtualService default/reviews spec.gateways[0]) Referenced gateway not found: "bookinfo-gateway". Fix: create Gateway default/bookinfo-gateway, or fix the name`,
		`Error [IST0101] (VirtualService default/reviews spec.http[0].route[0].destination.subset) Referenced host+subset in destinationrule not found: "reviews+v3". Fix: add subset v3 to DestinationRule default/reviews, or route to an existing subset (v1, v2)`,
		`Error [IST0106] (VirtualService default/reviews spec.http[1].route[1].weight) Schema validation error: weights must sum to 100, got 90. Fix: correct spec.http[1].route[1].weight: the control plane refuses the whole resource until it is valid`,
		`Warning [IST0130] (VirtualService default/reviews spec.http[1]) VirtualService rule #1 not used (route without matches defined before). Fix: rule #0 has no match, so it takes every request: give it a match, or move it last`,
		`Info [AM0102] (Gateway istio-system/ingress spec.selector) Selector "istio=ingressgateway" not checked: the labels of gateway proxies are not available. Fix: check that a gateway proxy with these labels is connected (amime proxy-status; amime proxy --mode gateway --labels istio=ingressgateway)`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
