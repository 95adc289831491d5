package translate

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbactcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

func apObj(ns, name string, ap *security.AuthorizationPolicy) *config.Object {
	return &config.Object{Kind: config.AuthorizationPolicy, Meta: config.Meta{Namespace: ns, Name: name}, Spec: ap}
}

func secBuilder(in Input, p Proxy) *builder {
	p.Mesh = p.Mesh.withDefaults()
	if p.Namespace == "" {
		p.Namespace = "foo"
	}
	return newBuilder(in, &p)
}

func sortedWarnings(b *builder) []string { return b.finish().Warnings }

func httpRBAC(t *testing.T, f *hcmv3.HttpFilter) *rbachttpv3.RBAC {
	t.Helper()
	out := &rbachttpv3.RBAC{}
	if err := f.GetTypedConfig().UnmarshalTo(out); err != nil {
		t.Fatalf("filter %s: %v", f.GetName(), err)
	}
	return out
}

func tcpRBAC(t *testing.T, f *listenerv3.Filter) *rbactcpv3.RBAC {
	t.Helper()
	out := &rbactcpv3.RBAC{}
	if err := f.GetTypedConfig().UnmarshalTo(out); err != nil {
		t.Fatalf("filter %s: %v", f.GetName(), err)
	}
	return out
}

func filterNames[F interface{ GetName() string }](fs []F) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetName()
	}
	return out
}

// findHTTP returns the filter with that name, or nil.
func findHTTP(fs []*hcmv3.HttpFilter, name string) *hcmv3.HttpFilter {
	for _, f := range fs {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

func policyJSON(t *testing.T, s string) *rbacv3.Policy {
	t.Helper()
	p := &rbacv3.Policy{}
	if err := protojson.Unmarshal([]byte(s), p); err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return p
}

func mustJSON(m proto.Message) string {
	return protojson.MarshalOptions{Multiline: false}.Format(m)
}

const (
	anyPerm      = `{"andRules":{"rules":[{"any":true}]}}`
	anyPrincipal = `{"andIds":{"ids":[{"any":true}]}}`
)

// withPrincipals is a policy whose only principal ANDs ids.
func withPrincipals(ids string) string {
	return `{"permissions":[` + anyPerm + `],"principals":[{"andIds":{"ids":[` + ids + `]}}]}`
}

// withPermissions is a policy whose only permission ANDs rules.
func withPermissions(rules string) string {
	return `{"permissions":[{"andRules":{"rules":[` + rules + `]}}],"principals":[` + anyPrincipal + `]}`
}

func TestRuleTranslation(t *testing.T) {
	md := func(path, match string) string {
		return `{"metadata":{"filter":"istio_authn","path":[` + path + `],"value":` + match + `}}`
	}
	for _, tc := range []struct {
		name   string
		rule   *security.Rule
		action security.AuthorizationPolicy_Action
		tcp    bool
		want   string // "" = rule dropped
		warn   string
	}{{
		name: "principals exact, prefix, suffix, any",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{Principals: []string{"cluster.local/ns/a/sa/b", "cluster.local/ns/a/*", "*/sa/b", "*"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[` +
			`{"authenticated":{"principalName":{"exact":"spiffe://cluster.local/ns/a/sa/b"}}},` +
			`{"authenticated":{"principalName":{"prefix":"spiffe://cluster.local/ns/a/"}}},` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":"spiffe://.*/sa/b"}}}},` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":".+"}}}}]}}`),
	}, {
		name: "notPrincipals",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{NotPrincipals: []string{"cluster.local/ns/a/sa/b"}}}}},
		want: withPrincipals(`{"notId":{"orIds":{"ids":[{"authenticated":{"principalName":{"exact":"spiffe://cluster.local/ns/a/sa/b"}}}]}}}`),
	}, {
		name: "namespaces",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{Namespaces: []string{"prod", "team-*"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/prod/.*"}}}},` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/team-.*/.*"}}}}]}}`),
	}, {
		name: "serviceAccounts default to the policy namespace",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{ServiceAccounts: []string{"other/sa1", "sa2"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":"spiffe://.+/ns/other/(.+/|)sa/sa1(/.+)?"}}}},` +
			`{"authenticated":{"principalName":{"safeRegex":{"regex":"spiffe://.+/ns/foo/(.+/|)sa/sa2(/.+)?"}}}}]}}`),
	}, {
		name: "requestPrincipals",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{RequestPrincipals: []string{"https://issuer/sub", "*"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[` +
			md(`{"key":"request.auth.principal"}`, `{"stringMatch":{"exact":"https://issuer/sub"}}`) + `,` +
			md(`{"key":"request.auth.principal"}`, `{"stringMatch":{"safeRegex":{"regex":".+"}}}`) + `]}}`),
	}, {
		name: "ipBlocks and remoteIpBlocks, source order",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{IpBlocks: []string{"10.0.0.1"}, RemoteIpBlocks: []string{"192.168.0.0/16"}, NotIpBlocks: []string{"2001:db8::/32"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[{"remoteIp":{"addressPrefix":"192.168.0.0","prefixLen":16}}]}},` +
			`{"orIds":{"ids":[{"directRemoteIp":{"addressPrefix":"10.0.0.1","prefixLen":32}}]}},` +
			`{"notId":{"orIds":{"ids":[{"directRemoteIp":{"addressPrefix":"2001:db8::","prefixLen":32}}]}}}`),
	}, {
		name: "hosts: case-insensitive, with and without port",
		rule: &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Hosts: []string{"Example.com", "*.example.org", "api.*", "h:8080", "*"}}}}},
		want: withPermissions(`{"orRules":{"rules":[` +
			`{"orRules":{"rules":[{"header":{"name":":authority","stringMatch":{"exact":"Example.com","ignoreCase":true}}},{"header":{"name":":authority","stringMatch":{"prefix":"Example.com:","ignoreCase":true}}}]}},` +
			`{"orRules":{"rules":[{"header":{"name":":authority","stringMatch":{"suffix":".example.org","ignoreCase":true}}},{"header":{"name":":authority","stringMatch":{"safeRegex":{"regex":"(?i).*\\.example\\.org:[0-9]+"}}}}]}},` +
			`{"header":{"name":":authority","stringMatch":{"prefix":"api.","ignoreCase":true}}},` +
			`{"header":{"name":":authority","stringMatch":{"exact":"h:8080","ignoreCase":true}}},` +
			`{"header":{"name":":authority","presentMatch":true}}]}}`),
	}, {
		name: "methods and notMethods",
		rule: &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET", "*"}, NotMethods: []string{"DELETE"}}}}},
		want: withPermissions(`{"orRules":{"rules":[{"header":{"name":":method","stringMatch":{"exact":"GET"}}},{"header":{"name":":method","presentMatch":true}}]}},` +
			`{"notRule":{"orRules":{"rules":[{"header":{"name":":method","stringMatch":{"exact":"DELETE"}}}]}}}`),
	}, {
		name: "paths: exact, prefix, suffix, any, templates",
		rule: &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Paths: []string{"/exact", "/api/*", "*.json", "*", "/foo/{*}/bar/{**}"}}}}},
		want: withPermissions(`{"orRules":{"rules":[` +
			`{"urlPath":{"path":{"exact":"/exact"}}},` +
			`{"urlPath":{"path":{"prefix":"/api/"}}},` +
			`{"urlPath":{"path":{"suffix":".json"}}},` +
			`{"urlPath":{"path":{"safeRegex":{"regex":".+"}}}},` +
			`{"urlPath":{"path":{"safeRegex":{"regex":"/foo/[^/]+/bar/.*"}}}}]}}`),
	}, {
		name: "ports are decided for the workload port",
		rule: &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Ports: []string{"8080", "9090"}, NotPorts: []string{"9090"}}}}},
		want: withPermissions(`{"orRules":{"rules":[{"any":true},{"notRule":{"any":true}}]}},{"notRule":{"orRules":{"rules":[{"notRule":{"any":true}}]}}}`),
	}, {
		name: "when conditions on the peer and request",
		rule: &security.Rule{When: []*security.Condition{
			{Key: "request.headers[X-Env]", Values: []string{"prod", "dev*"}},
			{Key: "source.ip", Values: []string{"10.1.0.0/16"}},
			{Key: "remote.ip", NotValues: []string{"1.2.3.4"}},
			{Key: "source.namespace", Values: []string{"ns1"}},
			{Key: "source.principal", Values: []string{"td/ns/a/sa/b"}},
			{Key: "request.auth.principal", Values: []string{"iss/sub"}},
			{Key: "request.auth.audiences", Values: []string{"aud"}},
			{Key: "request.auth.presenter", Values: []string{"azp*"}},
			{Key: "request.auth.claims[groups]", Values: []string{"admin"}},
			{Key: "request.auth.claims[nested][key]", Values: []string{"*"}},
		}},
		want: withPrincipals(
			`{"orIds":{"ids":[{"header":{"name":"X-Env","safeRegexMatch":{"regex":"^prod$|^prod,.*|.*,prod,.*|.*,prod$"}}},` +
				`{"header":{"name":"X-Env","safeRegexMatch":{"regex":"^dev.*$|^dev.*,.*|.*,dev.*,.*|.*,dev.*$"}}}]}},` +
				`{"orIds":{"ids":[{"directRemoteIp":{"addressPrefix":"10.1.0.0","prefixLen":16}}]}},` +
				`{"notId":{"orIds":{"ids":[{"remoteIp":{"addressPrefix":"1.2.3.4","prefixLen":32}}]}}},` +
				`{"orIds":{"ids":[{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/ns1/.*"}}}}]}},` +
				`{"orIds":{"ids":[{"authenticated":{"principalName":{"exact":"spiffe://td/ns/a/sa/b"}}}]}},` +
				`{"orIds":{"ids":[` + md(`{"key":"request.auth.principal"}`, `{"stringMatch":{"exact":"iss/sub"}}`) + `]}},` +
				`{"orIds":{"ids":[` + md(`{"key":"request.auth.audiences"}`, `{"stringMatch":{"exact":"aud"}}`) + `]}},` +
				`{"orIds":{"ids":[` + md(`{"key":"request.auth.presenter"}`, `{"stringMatch":{"prefix":"azp"}}`) + `]}},` +
				`{"orIds":{"ids":[` + md(`{"key":"request.auth.claims"},{"key":"groups"}`, `{"listMatch":{"oneOf":{"stringMatch":{"exact":"admin"}}}}`) + `]}},` +
				`{"orIds":{"ids":[` + md(`{"key":"request.auth.claims"},{"key":"nested"},{"key":"key"}`, `{"listMatch":{"oneOf":{"stringMatch":{"safeRegex":{"regex":".+"}}}}}`) + `]}}`),
	}, {
		name: "when conditions on the destination and connection",
		rule: &security.Rule{When: []*security.Condition{
			{Key: "destination.ip", Values: []string{"10.0.0.0/8"}},
			{Key: "destination.port", NotValues: []string{"8080"}},
			{Key: "connection.sni", Values: []string{"*.example.com"}},
			{Key: "experimental.envoy.filters.a.b[c]", Values: []string{"v", "[w]"}},
		}},
		want: withPermissions(`{"orRules":{"rules":[{"destinationIp":{"addressPrefix":"10.0.0.0","prefixLen":8}}]}},` +
			`{"notRule":{"orRules":{"rules":[{"any":true}]}}},` +
			`{"orRules":{"rules":[{"requestedServerName":{"suffix":".example.com"}}]}},` +
			`{"orRules":{"rules":[{"metadata":{"filter":"envoy.filters.a.b","path":[{"key":"c"}],"value":{"stringMatch":{"exact":"v"}}}},` +
			`{"metadata":{"filter":"envoy.filters.a.b","path":[{"key":"c"}],"value":{"listMatch":{"oneOf":{"stringMatch":{"exact":"w"}}}}}}]}}`),
	}, {
		name: "several sources and operations: one principal and permission each",
		rule: &security.Rule{
			From: []*security.Rule_From{{Source: &security.Source{Namespaces: []string{"a"}}}, {Source: &security.Source{Namespaces: []string{"b"}}}},
			To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET"}}}, {Operation: &security.Operation{Methods: []string{"POST"}}}},
			When: []*security.Condition{{Key: "source.ip", Values: []string{"10.0.0.1"}}},
		},
		want: `{"permissions":[` +
			`{"andRules":{"rules":[{"orRules":{"rules":[{"header":{"name":":method","stringMatch":{"exact":"GET"}}}]}}]}},` +
			`{"andRules":{"rules":[{"orRules":{"rules":[{"header":{"name":":method","stringMatch":{"exact":"POST"}}}]}}]}}],` +
			`"principals":[` +
			`{"andIds":{"ids":[{"orIds":{"ids":[{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/a/.*"}}}}]}},{"orIds":{"ids":[{"directRemoteIp":{"addressPrefix":"10.0.0.1","prefixLen":32}}]}}]}},` +
			`{"andIds":{"ids":[{"orIds":{"ids":[{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/b/.*"}}}}]}},{"orIds":{"ids":[{"directRemoteIp":{"addressPrefix":"10.0.0.1","prefixLen":32}}]}}]}}]}`,
	}, {
		name: "ALLOW: untranslatable value drops the rule",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{TrustDomains: []string{"td"}, Namespaces: []string{"a"}}}}},
		warn: "rules[0].from[0].source.trustDomains: not translated: trust domains are not supported yet; this ALLOW rule is dropped",
	}, {
		name:   "DENY: untranslatable value is left out",
		action: security.AuthorizationPolicy_DENY,
		rule:   &security.Rule{From: []*security.Rule_From{{Source: &security.Source{TrustDomains: []string{"td"}, Namespaces: []string{"a"}}}}},
		want:   withPrincipals(`{"orIds":{"ids":[{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/a/.*"}}}}]}}`),
		warn:   "rules[0].from[0].source.trustDomains: not translated: trust domains are not supported yet; the value is left out of this DENY rule, which matches more",
	}, {
		name: "TCP: ALLOW rule with HTTP-only fields is dropped",
		tcp:  true,
		rule: &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET"}, Ports: []string{"8080"}}}}},
		warn: "rules[0].to[0].operation.methods: HTTP-only attribute on TCP port 8080: this ALLOW rule is dropped",
	}, {
		name:   "TCP: DENY rule loses its HTTP-only fields",
		tcp:    true,
		action: security.AuthorizationPolicy_DENY,
		rule: &security.Rule{
			From: []*security.Rule_From{{Source: &security.Source{RequestPrincipals: []string{"*"}, Namespaces: []string{"a"}}}},
			To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"POST"}, Paths: []string{"/x"}, Hosts: []string{"h"}, Ports: []string{"8080"}}}},
			When: []*security.Condition{{Key: "request.headers[x]", Values: []string{"y"}}, {Key: "request.auth.claims[iss]", Values: []string{"i"}}},
		},
		want: `{"permissions":[{"andRules":{"rules":[{"orRules":{"rules":[{"any":true}]}}]}}],` +
			`"principals":[{"andIds":{"ids":[{"orIds":{"ids":[{"authenticated":{"principalName":{"safeRegex":{"regex":".*/ns/a/.*"}}}}]}}]}}]}`,
		warn: "rules[0].to[0].operation.methods: HTTP-only attribute on TCP port 8080: the value is left out of this DENY rule",
	}, {
		name: "TCP: ALLOW rule without HTTP-only fields is kept",
		tcp:  true,
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{Principals: []string{"td/ns/a/sa/b"}}}}},
		want: withPrincipals(`{"orIds":{"ids":[{"authenticated":{"principalName":{"exact":"spiffe://td/ns/a/sa/b"}}}]}}`),
	}, {
		name: "invalid IP drops an ALLOW rule",
		rule: &security.Rule{From: []*security.Rule_From{{Source: &security.Source{IpBlocks: []string{"10.0.0.300"}}}}},
		warn: `rules[0].from[0].source.ipBlocks: not translated: invalid IP or CIDR "10.0.0.300"`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ap := &security.AuthorizationPolicy{Action: tc.action, Rules: []*security.Rule{tc.rule}}
			b := secBuilder(Input{AuthorizationPolicies: []*config.Object{apObj("foo", "p", ap)}}, Proxy{})
			var rules *rbacv3.RBAC
			name := rbacFilterAllow
			if tc.action == security.AuthorizationPolicy_DENY {
				name = rbacFilterDeny
			}
			if tc.tcp {
				fs := b.securityNetworkFilters(8080)
				if len(fs) != 1 || fs[0].GetName() != name {
					t.Fatalf("network filters %v, want [%s]", filterNames(fs), name)
				}
				cfg := tcpRBAC(t, fs[0])
				if cfg.GetStatPrefix() != "tcp." {
					t.Errorf("stat_prefix %q, want tcp.", cfg.GetStatPrefix())
				}
				rules = cfg.GetRules()
			} else {
				fs := b.securityHTTPFilters(8080)
				if len(fs) != 1 || fs[0].GetName() != name {
					t.Fatalf("HTTP filters %v, want [%s]", filterNames(fs), name)
				}
				rules = httpRBAC(t, fs[0]).GetRules()
			}
			wantAction := rbacv3.RBAC_ALLOW
			if tc.action == security.AuthorizationPolicy_DENY {
				wantAction = rbacv3.RBAC_DENY
			}
			if rules.GetAction() != wantAction {
				t.Errorf("action %v, want %v", rules.GetAction(), wantAction)
			}
			got, ok := rules.GetPolicies()["ns[foo]-policy[p]-rule[0]"]
			switch {
			case tc.want == "" && ok:
				t.Errorf("rule kept, want dropped: %s", mustJSON(got))
			case tc.want != "" && !ok:
				t.Errorf("rule dropped; policies %v", rules.GetPolicies())
			case tc.want != "":
				if want := policyJSON(t, tc.want); !proto.Equal(got, want) {
					t.Errorf("policy\n got %s\nwant %s", mustJSON(got), mustJSON(want))
				}
			}
			warnings := strings.Join(sortedWarnings(b), "\n")
			if tc.warn == "" && warnings != "" {
				t.Errorf("unexpected warnings:\n%s", warnings)
			}
			if tc.warn != "" && !strings.Contains(warnings, "AuthorizationPolicy foo/p: "+tc.warn) {
				t.Errorf("warnings\n%s\nwant one containing %q", warnings, tc.warn)
			}
		})
	}
}

func TestPolicySelection(t *testing.T) {
	sel := func(kv ...string) *typev1beta1.WorkloadSelector {
		return &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{kv[0]: kv[1]}}
	}
	gwRef := &typev1beta1.PolicyTargetReference{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "edge"}
	svcRef := &typev1beta1.PolicyTargetReference{Kind: "Service", Name: "reviews"}
	allowAll := []*security.Rule{{}}
	sidecar := Proxy{Namespace: "foo", Labels: map[string]string{"app": "web"}}
	gateway := Proxy{Namespace: "foo", Type: Router, Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "edge"}}
	for _, tc := range []struct {
		name       string
		ns         string
		ap         *security.AuthorizationPolicy
		proxy      Proxy
		want       string // the policy's RBAC policy JSON; "" = not applied
		failClosed bool
		warn       string
	}{
		{name: "namespace-wide", ns: "foo", ap: &security.AuthorizationPolicy{Rules: allowAll}, proxy: sidecar, want: "rule"},
		{name: "other namespace", ns: "bar", ap: &security.AuthorizationPolicy{Rules: allowAll}, proxy: sidecar},
		{name: "mesh-wide from the root namespace", ns: "istio-system", ap: &security.AuthorizationPolicy{Rules: allowAll}, proxy: sidecar, want: "rule"},
		{name: "root namespace selector matches in every namespace", ns: "istio-system", ap: &security.AuthorizationPolicy{Selector: sel("app", "web"), Rules: allowAll}, proxy: sidecar, want: "rule"},
		{name: "root namespace selector not matching", ns: "istio-system", ap: &security.AuthorizationPolicy{Selector: sel("app", "db"), Rules: allowAll}, proxy: sidecar},
		{name: "selector matching", ns: "foo", ap: &security.AuthorizationPolicy{Selector: sel("app", "web"), Rules: allowAll}, proxy: sidecar, want: "rule"},
		{name: "selector not matching", ns: "foo", ap: &security.AuthorizationPolicy{Selector: sel("app", "db"), Rules: allowAll}, proxy: sidecar},
		{name: "targetRef to the proxy's Gateway", ns: "foo", ap: &security.AuthorizationPolicy{TargetRef: gwRef, Rules: allowAll}, proxy: gateway, want: "rule"},
		{name: "targetRefs to another Gateway", ns: "foo", ap: &security.AuthorizationPolicy{TargetRefs: []*typev1beta1.PolicyTargetReference{{Group: gwRef.Group, Kind: "Gateway", Name: "other"}}, Rules: allowAll}, proxy: gateway},
		{name: "Gateway targetRef does not bind sidecars", ns: "foo", ap: &security.AuthorizationPolicy{TargetRef: gwRef, Rules: allowAll}, proxy: sidecar},
		{
			name: "ALLOW targetRef to a Service fails closed", ns: "foo",
			ap:    &security.AuthorizationPolicy{TargetRef: svcRef, Rules: allowAll},
			proxy: sidecar, failClosed: true,
			warn: "targetRef: not translated (amime binds policies by selector or Gateway name only); this ALLOW policy is skipped and, to fail closed, requests to workloads of namespace foo are denied unless another ALLOW policy allows them",
		},
		{
			name: "DENY targetRef to a Service widens to the namespace", ns: "foo",
			ap:    &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY, TargetRef: svcRef, Rules: allowAll},
			proxy: sidecar, want: "rule",
			warn: "to fail closed, the DENY policy applies to every workload of namespace foo",
		},
		{name: "Service targetRef in another namespace", ns: "bar", ap: &security.AuthorizationPolicy{TargetRef: svcRef, Rules: allowAll}, proxy: sidecar},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := secBuilder(Input{AuthorizationPolicies: []*config.Object{apObj(tc.ns, "p", tc.ap)}}, tc.proxy)
			fs := b.securityHTTPFilters(80)
			name := policyName(tc.ns, "p", 0)
			var got *rbacv3.Policy
			for _, f := range fs {
				if p, ok := httpRBAC(t, f).GetRules().GetPolicies()[name]; ok {
					got = p
				}
			}
			switch {
			case tc.failClosed:
				if !proto.Equal(got, matchNever()) {
					t.Errorf("policy %s, want one that matches nothing", mustJSON(got))
				}
				if f := findHTTP(fs, rbacFilterAllow); f == nil {
					t.Errorf("no ALLOW filter: access left open")
				}
			case tc.want == "" && got != nil:
				t.Errorf("policy applied: %s", mustJSON(got))
			case tc.want != "" && got == nil:
				t.Errorf("policy not applied; filters %v", filterNames(fs))
			}
			warnings := strings.Join(sortedWarnings(b), "\n")
			if (tc.warn == "") != (warnings == "") || !strings.Contains(warnings, tc.warn) {
				t.Errorf("warnings %q, want %q", warnings, tc.warn)
			}
		})
	}
}

func TestSecurityFilterOrderAndActions(t *testing.T) {
	rule := []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Paths: []string{"/x"}}}}}}
	policies := []*config.Object{
		apObj("foo", "allow", &security.AuthorizationPolicy{Rules: rule}),
		apObj("foo", "deny", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY, Rules: rule}),
		apObj("foo", "audit", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_AUDIT, Rules: rule}),
		apObj("foo", "ext", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_CUSTOM, Rules: rule,
			ActionDetail: &security.AuthorizationPolicy_Provider{Provider: &security.AuthorizationPolicy_ExtensionProvider{Name: "opa"}}}),
	}
	ras := []*config.Object{raObj("foo", "jwt", &security.RequestAuthentication{JwtRules: []*security.JWTRule{{Issuer: "iss", Jwks: testJWKS}}})}
	b := secBuilder(Input{AuthorizationPolicies: policies, RequestAuthentications: ras}, Proxy{})
	fs := b.securityHTTPFilters(80)
	want := []string{rbacFilterCustom, jwtAuthnFilterName, rbacFilterAudit, rbacFilterDeny, rbacFilterAllow}
	if got := filterNames(fs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("filters %v, want %v (istiod's order)", got, want)
	}
	p := policyJSON(t, withPermissions(`{"orRules":{"rules":[{"urlPath":{"path":{"exact":"/x"}}}]}}`))
	for _, tc := range []struct {
		filter string
		action rbacv3.RBAC_Action
		policy string
	}{
		{rbacFilterCustom, rbacv3.RBAC_DENY, "istio-ext-authz-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action"},
		{rbacFilterAudit, rbacv3.RBAC_LOG, "ns[foo]-policy[audit]-rule[0]"},
		{rbacFilterDeny, rbacv3.RBAC_DENY, "ns[foo]-policy[deny]-rule[0]"},
		{rbacFilterAllow, rbacv3.RBAC_ALLOW, "ns[foo]-policy[allow]-rule[0]"},
	} {
		want := &rbacv3.RBAC{Action: tc.action, Policies: map[string]*rbacv3.Policy{tc.policy: p}}
		if got := httpRBAC(t, findHTTP(fs, tc.filter)).GetRules(); !proto.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.filter, mustJSON(got), mustJSON(want))
		}
	}
	if w := strings.Join(sortedWarnings(b), "\n"); !strings.Contains(w, `AuthorizationPolicy foo/ext: provider "opa": not translated`) {
		t.Errorf("warnings %q: want the CUSTOM provider refused", w)
	}

	tcp := b.securityNetworkFilters(80)
	if got := filterNames(tcp); strings.Join(got, ",") != rbacFilterCustom+","+rbacFilterAudit+","+rbacFilterDeny+","+rbacFilterAllow {
		t.Fatalf("network filters %v", got)
	}
	// On TCP the path is HTTP-only: DENY/AUDIT/CUSTOM rules widen to any,
	// the ALLOW rule is dropped.
	widened := policyJSON(t, withPermissions(`{"any":true}`))
	if got := tcpRBAC(t, tcp[2]).GetRules().GetPolicies()["ns[foo]-policy[deny]-rule[0]"]; !proto.Equal(got, widened) {
		t.Errorf("TCP DENY policy %s, want %s", mustJSON(got), mustJSON(widened))
	}
	if got := tcpRBAC(t, tcp[3]).GetRules(); got.GetAction() != rbacv3.RBAC_ALLOW || len(got.GetPolicies()) != 0 {
		t.Errorf("TCP ALLOW rules %s, want ALLOW without policies (deny all)", mustJSON(got))
	}
}

func TestAllowSemantics(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policies []*config.Object
		want     string // JSON of the ALLOW filter's rules; "" = no ALLOW filter
		shadow   string
	}{
		{name: "no policy: no filter (allow)"},
		{name: "only DENY policies: no ALLOW filter", policies: []*config.Object{
			apObj("foo", "d", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY, Rules: []*security.Rule{{}}}),
		}},
		{name: "ALLOW without rules denies everything", policies: []*config.Object{apObj("foo", "nothing", &security.AuthorizationPolicy{})},
			want: `{"action":"ALLOW","policies":{"ns[foo]-policy[nothing]-rule[0]":{"permissions":[{"notRule":{"any":true}}],"principals":[{"notId":{"any":true}}]}}}`},
		{name: "ALLOW with an empty rule allows everything", policies: []*config.Object{apObj("foo", "all", &security.AuthorizationPolicy{Rules: []*security.Rule{{}}})},
			want: `{"action":"ALLOW","policies":{"ns[foo]-policy[all]-rule[0]":` + withPermissions(`{"any":true}`) + `}}`},
		{name: "dry-run goes to shadow rules", policies: []*config.Object{{
			Kind: config.AuthorizationPolicy, Meta: config.Meta{Namespace: "foo", Name: "dry", Annotations: map[string]string{"istio.io/dry-run": "true"}},
			Spec: &security.AuthorizationPolicy{},
		}}, shadow: `{"action":"ALLOW","policies":{"ns[foo]-policy[dry]-rule[0]":{"permissions":[{"notRule":{"any":true}}],"principals":[{"notId":{"any":true}}]}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := secBuilder(Input{AuthorizationPolicies: tc.policies}, Proxy{})
			f := findHTTP(b.securityHTTPFilters(80), rbacFilterAllow)
			if tc.want == "" && tc.shadow == "" {
				if f != nil {
					t.Fatalf("ALLOW filter %s, want none", mustJSON(httpRBAC(t, f)))
				}
				return
			}
			if f == nil {
				t.Fatal("no ALLOW filter")
			}
			cfg := httpRBAC(t, f)
			check := func(what string, got *rbacv3.RBAC, js string) {
				if js == "" {
					if got != nil {
						t.Errorf("%s %s, want none", what, mustJSON(got))
					}
					return
				}
				want := &rbacv3.RBAC{}
				if err := protojson.Unmarshal([]byte(js), want); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, want) {
					t.Errorf("%s\n got %s\nwant %s", what, mustJSON(got), mustJSON(want))
				}
			}
			check("rules", cfg.GetRules(), tc.want)
			check("shadow rules", cfg.GetShadowRules(), tc.shadow)
			if tc.shadow != "" && cfg.GetShadowRulesStatPrefix() != "istio_dry_run_allow_" {
				t.Errorf("shadow stat prefix %q", cfg.GetShadowRulesStatPrefix())
			}
		})
	}
}

func TestPathTemplates(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "/foo/{*}", want: "/foo/[^/]+"},
		{in: "/foo/{**}/", want: "/foo/.*/"},
		{in: "/a.b/{*}/c/{**}", want: `/a\.b/[^/]+/c/.*`},
		{in: "/{**}/foo/{*}", err: "must be the last operator"},
		{in: "/*/baz/{*}", err: "invalid path template"},
	} {
		m, err := pathMatcher(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("pathMatcher(%q) error %v, want %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("pathMatcher(%q): %v", tc.in, err)
		case m.GetSafeRegex().GetRegex() != tc.want:
			t.Errorf("pathMatcher(%q) = %q, want %q", tc.in, m.GetSafeRegex().GetRegex(), tc.want)
		}
	}
}

func BenchmarkSecurityHTTPFilters(b *testing.B) {
	rule := &security.Rule{
		From: []*security.Rule_From{{Source: &security.Source{Principals: []string{"cluster.local/ns/a/sa/b"}, Namespaces: []string{"x", "y"}}}},
		To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"GET"}, Paths: []string{"/api/*"}}}},
		When: []*security.Condition{{Key: "request.auth.claims[groups]", Values: []string{"admin"}}},
	}
	var policies []*config.Object
	for _, name := range []string{"a", "b", "c", "d"} {
		policies = append(policies, apObj("foo", name, &security.AuthorizationPolicy{Rules: []*security.Rule{rule, rule}}))
	}
	in := Input{AuthorizationPolicies: policies}
	b.ReportAllocs()
	for b.Loop() {
		sb := secBuilder(in, Proxy{})
		if len(sb.securityHTTPFilters(80)) != 1 {
			b.Fatal("want one filter")
		}
	}
}
