package rbac

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

const sleepID = "spiffe://cluster.local/ns/default/sa/sleep"

// baseAttrs is an mTLS request from the sleep workload.
func baseAttrs() *Attributes {
	md, _ := structpb.NewStruct(map[string]any{
		"request.auth.principal": "https://issuer/alice",
		"request.auth.claims":    map[string]any{"groups": []any{"dev", "admin"}},
	})
	return &Attributes{
		Request: matcher.Request{
			Method: "GET", Authority: "reviews.default.svc.cluster.local:9080", Path: "/api/v1?x=1", Scheme: "http",
			Headers: header.List{{Name: "x-team", Value: "blue"}},
		},
		DirectRemote: netip.MustParseAddr("10.0.0.7"),
		Remote:       netip.MustParseAddr("203.0.113.9"),
		Destination:  netip.MustParseAddrPort("10.0.1.2:9080"),
		SNI:          "outbound_.9080_._.reviews.default.svc.cluster.local",
		Peer:         &Peer{URISANs: []string{sleepID}, DNSSANs: []string{"sleep.default.svc"}, Subject: "CN=sleep,O=cluster.local"},
		Metadata:     map[string]*structpb.Struct{"istio_authn": md},
	}
}

// TestPermissions checks each permission kind with a principal that
// always matches.
func TestPermissions(t *testing.T) {
	cases := []struct {
		name string
		perm *rbacv3.Permission
		edit func(*Attributes) // applied to baseAttrs; nil: unchanged
		want bool
	}{
		{"any", anyPerm(), nil, true},
		{"header :method", headerPerm(":method", exact("GET")), nil, true},
		{"header :method other", headerPerm(":method", exact("POST")), nil, false},
		{"header :authority ignore case", headerPerm(":authority", &matcherv3.StringMatcher{IgnoreCase: true,
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "REVIEWS."}}), nil, true},
		{"header regular", headerPerm("x-team", exact("blue")), nil, true},
		{"header absent on network", headerPerm(":method", exact("GET")), func(a *Attributes) { a.Request = matcher.Request{} }, false},
		{"url_path ignores the query", pathPerm(exact("/api/v1")), nil, true},
		{"url_path prefix", pathPerm(prefix("/api/")), nil, true},
		{"url_path suffix", pathPerm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/v1"}}), nil, true},
		{"url_path no path", pathPerm(prefix("/")), func(a *Attributes) { a.Request.Path = "" }, false},
		{"destination_ip", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.1.0", 24)}}, nil, true},
		{"destination_ip outside", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.2.0", 24)}}, nil, false},
		{"destination_port", portPerm(9080), nil, true},
		{"destination_port other", portPerm(8080), nil, false},
		{"destination_port_range", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 9000, End: 9081}}}, nil, true},
		{"destination_port_range end exclusive", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 9000, End: 9080}}}, nil, false},
		{"metadata", &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: metaStr("istio_authn", exact("https://issuer/alice"), "request.auth.principal")}}, nil, true},
		{"requested_server_name", &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".svc.cluster.local"}}}}, nil, true},
		{"requested_server_name without SNI", &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exact("")}},
			func(a *Attributes) { a.SNI = "" }, true},
		{"not_rule", notRule(portPerm(8080)), nil, true},
		{"not_rule of a match", notRule(portPerm(9080)), nil, false},
		{"and_rules all", andRules(headerPerm(":method", exact("GET")), portPerm(9080)), nil, true},
		{"and_rules one fails", andRules(headerPerm(":method", exact("GET")), portPerm(8080)), nil, false},
		{"or_rules one", orRules(portPerm(8080), portPerm(9080)), nil, true},
		{"or_rules none", orRules(portPerm(8080), portPerm(8081)), nil, false},
		{"nested not(and(or, not))", notRule(andRules(orRules(portPerm(1), portPerm(9080)), notRule(pathPerm(prefix("/admin"))))), nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": pol(perms(tc.perm), ids(anyID()))}}, "rules")
			if err != nil {
				t.Fatal(err)
			}
			a := baseAttrs()
			if tc.edit != nil {
				tc.edit(a)
			}
			allowed, pol := e.Evaluate(a)
			if allowed != tc.want || (pol == "p") != tc.want {
				t.Errorf("Evaluate = %v, %q; want allowed %v", allowed, pol, tc.want)
			}
		})
	}
}

// TestPrincipals checks each principal kind with a permission that always
// matches.
func TestPrincipals(t *testing.T) {
	ip := func(which string, c string, n uint32) *rbacv3.Principal {
		switch which {
		case "source_ip":
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr(c, n)}}
		case "direct_remote_ip":
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(c, n)}}
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr(c, n)}}
	}
	groups := metaVal("istio_authn", &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact("admin")}}}}}},
		"request.auth.claims", "groups")
	cases := []struct {
		name string
		id   *rbacv3.Principal
		edit func(*Attributes)
		want bool
	}{
		{"any", anyID(), nil, true},
		{"authenticated exact URI SAN", authn(exact(sleepID)), nil, true},
		{"authenticated other identity", authn(exact("spiffe://cluster.local/ns/default/sa/other")), nil, false},
		{"authenticated namespace regex", authn(regex(`.*/ns/default/.*`)), nil, true},
		{"authenticated namespace regex other ns", authn(regex(`.*/ns/foo/.*`)), nil, false},
		{"authenticated any URI SAN", authn(exact("spiffe://other/x")), func(a *Attributes) { a.Peer.URISANs = append(a.Peer.URISANs, "spiffe://other/x") }, true},
		{"authenticated DNS SAN even with URI SANs", authn(exact("sleep.default.svc")), nil, true},
		{"authenticated subject", authn(exact("CN=sleep,O=cluster.local")), nil, true},
		{"authenticated plaintext", authn(exact(sleepID)), func(a *Attributes) { a.Peer = nil }, false},
		{"authenticated without name: mTLS", authn(nil), nil, true},
		{"authenticated without name: plaintext", authn(nil), func(a *Attributes) { a.Peer = nil }, false},
		{"authenticated without client cert: empty subject", authn(exact("")), func(a *Attributes) { a.Peer = NewPeer(nil) }, true},
		{"source_ip is the direct peer", ip("source_ip", "10.0.0.0", 24), nil, true},
		{"source_ip not the XFF client", ip("source_ip", "203.0.113.0", 24), nil, false},
		{"direct_remote_ip", ip("direct_remote_ip", "10.0.0.7", 32), nil, true},
		{"direct_remote_ip other", ip("direct_remote_ip", "10.0.0.8", 32), nil, false},
		{"remote_ip after XFF", ip("remote_ip", "203.0.113.0", 24), nil, true},
		{"remote_ip unknown", ip("remote_ip", "0.0.0.0", 0), func(a *Attributes) { a.Remote = netip.Addr{} }, false},
		{"header", &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: hdr("x-team", exact("blue"))}}, nil, true},
		{"url_path", &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: exact("/api/v1")}}}}, nil, true},
		{"metadata requestPrincipals", &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{
			Metadata: metaStr("istio_authn", exact("https://issuer/alice"), "request.auth.principal")}}, nil, true},
		{"metadata claims list", &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: groups}}, nil, true},
		{"metadata without metadata", &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: groups}}, func(a *Attributes) { a.Metadata = nil }, false},
		{"not_id", notID(authn(exact("spiffe://x"))), nil, true},
		{"and_ids", andIDs(authn(nil), ip("direct_remote_ip", "10.0.0.0", 8)), nil, true},
		{"and_ids one fails", andIDs(authn(nil), ip("direct_remote_ip", "192.168.0.0", 16)), nil, false},
		{"or_ids", orIDs(authn(exact("x")), ip("remote_ip", "203.0.113.9", 32)), nil, true},
		{"nested or(and(not))", orIDs(andIDs(notID(authn(nil)))), nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": pol(perms(anyPerm()), ids(tc.id))}}, "rules")
			if err != nil {
				t.Fatal(err)
			}
			a := baseAttrs()
			if tc.edit != nil {
				tc.edit(a)
			}
			if allowed, _ := e.Evaluate(a); allowed != tc.want {
				t.Errorf("allowed = %v, want %v", allowed, tc.want)
			}
		})
	}
}

func TestActions(t *testing.T) {
	get := pol(perms(headerPerm(":method", exact("GET"))), ids(anyID()))
	port := pol(perms(portPerm(9080)), ids(anyID()))
	post := pol(perms(headerPerm(":method", exact("POST"))), ids(anyID()))
	cases := []struct {
		name       string
		action     rbacv3.RBAC_Action
		policies   map[string]*rbacv3.Policy
		wantAllow  bool
		wantPolicy string
	}{
		{"allow matched", rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"get": get}, true, "get"},
		{"allow unmatched", rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"post": post}, false, ""},
		{"allow no policies denies all", rbacv3.RBAC_ALLOW, nil, false, ""},
		{"deny matched", rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"get": get}, false, "get"},
		{"deny unmatched", rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"post": post}, true, ""},
		{"deny no policies allows all", rbacv3.RBAC_DENY, nil, true, ""},
		{"log matched", rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{"get": get}, true, "get"},
		{"log unmatched", rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{"post": post}, true, ""},
		// Several match: the first by name is reported, whatever the
		// map's iteration order.
		{"first by name", rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"zz-port": port, "b-get": get, "a-post": post, "m": get}, false, "b-get"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // map order varies between compilations
				e, err := NewEngine(&rbacv3.RBAC{Action: tc.action, Policies: tc.policies}, "rules")
				if err != nil {
					t.Fatal(err)
				}
				allowed, pol := e.Evaluate(baseAttrs())
				if allowed != tc.wantAllow || pol != tc.wantPolicy {
					t.Fatalf("Evaluate = %v, %q; want %v, %q", allowed, pol, tc.wantAllow, tc.wantPolicy)
				}
			}
		})
	}
}

func httpFilter(t *testing.T, m *rbachttpv3.RBAC) *Filter {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFilterDecide(t *testing.T) {
	deny := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"ns[foo]/deny-get": pol(perms(headerPerm(":method", exact("GET"))), ids(anyID())),
	}}
	allowPost := &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"allow-post": pol(perms(headerPerm(":method", exact("POST"))), ids(anyID())),
	}}
	logGet := &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{
		"log-get": pol(perms(headerPerm(":method", exact("GET"))), ids(anyID())),
	}}
	cases := []struct {
		name string
		cfg  *rbachttpv3.RBAC
		want Decision
	}{
		{"no rules allows", &rbachttpv3.RBAC{}, Decision{}},
		{"empty rules deny", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}},
			Decision{Deny: true, Details: "rbac_access_denied_matched_policy[none]"}},
		{"deny policy", &rbachttpv3.RBAC{Rules: deny},
			Decision{Deny: true, Details: "rbac_access_denied_matched_policy[ns[foo]/deny-get]", Policy: "ns[foo]/deny-get"}},
		{"allow unmatched", &rbachttpv3.RBAC{Rules: allowPost},
			Decision{Deny: true, Details: "rbac_access_denied_matched_policy[none]"}},
		{"log", &rbachttpv3.RBAC{Rules: logGet}, Decision{Policy: "log-get", Log: true, LogHint: true}},
		// Shadow rules are reported, never enforced.
		{"shadow only", &rbachttpv3.RBAC{ShadowRules: deny},
			Decision{Shadow: true, ShadowAllowed: false, ShadowPolicy: "ns[foo]/deny-get"}},
		{"shadow allows, rules deny", &rbachttpv3.RBAC{Rules: allowPost, ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}},
			Decision{Deny: true, Details: "rbac_access_denied_matched_policy[none]", Shadow: true, ShadowAllowed: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := httpFilter(t, tc.cfg).Decide(baseAttrs())
			got.namespace = ""
			if got != tc.want {
				t.Errorf("Decide = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecisionMetadata(t *testing.T) {
	d := Decision{Shadow: true, ShadowAllowed: false, ShadowPolicy: "p", Log: true, LogHint: true, namespace: HTTPName}
	filter, common := d.Metadata()
	if d.Namespace() != HTTPName {
		t.Errorf("namespace %q", d.Namespace())
	}
	if got := filter.GetFields()[ShadowEngineResultKey].GetStringValue(); got != "denied" {
		t.Errorf("shadow_engine_result %q", got)
	}
	if got := filter.GetFields()[ShadowEffectivePolicyIDKey].GetStringValue(); got != "p" {
		t.Errorf("shadow_effective_policy_id %q", got)
	}
	if !common.GetFields()[AccessLogHintKey].GetBoolValue() {
		t.Error("access_log_hint not true")
	}
	d = Decision{Shadow: true, ShadowAllowed: true}
	filter, common = d.Metadata()
	if _, ok := filter.GetFields()[ShadowEffectivePolicyIDKey]; ok || filter.GetFields()[ShadowEngineResultKey].GetStringValue() != "allowed" || common != nil {
		t.Errorf("allowed shadow without policy: %v %v", filter, common)
	}
	if f, c := (&Decision{}).Metadata(); f != nil || c != nil {
		t.Error("metadata without shadow rules or LOG")
	}
}

func TestPerRoute(t *testing.T) {
	global := httpFilter(t, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}}) // denies everything
	parse := func(m *rbachttpv3.RBACPerRoute) *Filter {
		t.Helper()
		a, _ := anypb.New(m)
		v, err := ParsePerRoute(a)
		if err != nil {
			t.Fatal(err)
		}
		return v.(*Filter)
	}
	if deny, _ := global.Check(baseAttrs()); !deny {
		t.Fatal("global filter allows")
	}
	if deny, _ := parse(&rbachttpv3.RBACPerRoute{}).Check(baseAttrs()); deny {
		t.Error("empty RBACPerRoute does not disable the filter")
	}
	over := parse(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"get": pol(perms(headerPerm(":method", exact("GET"))), ids(anyID())),
	}}}})
	if deny, details := over.Check(baseAttrs()); !deny || details != "rbac_access_denied_matched_policy[get]" {
		t.Errorf("override: %v %q", deny, details)
	}
	a := baseAttrs()
	a.Request.Method = "PUT"
	if deny, _ := over.Check(a); deny {
		t.Error("override denies PUT")
	}
	// Errors name the path inside RBACPerRoute.
	bad, _ := anypb.New(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"p": pol(perms(pathPerm(regex("("))), ids(anyID())),
	}}}})
	if _, err := ParsePerRoute(bad); err == nil || !strings.HasPrefix(err.Error(), `rbac.rules.policies["p"].permissions[0].url_path.path.safe_regex.regex: invalid RE2`) {
		t.Errorf("error = %v", err)
	}
	wrong, _ := anypb.New(&rbachttpv3.RBAC{})
	if _, err := ParsePerRoute(wrong); err == nil {
		t.Error("RBAC accepted as RBACPerRoute")
	}
}

// TestRouteIntegration plugs ParsePerRoute into the router as the
// integrator will, and reads the per-route Filter back.
func TestRouteIntegration(t *testing.T) {
	off, _ := anypb.New(&rbachttpv3.RBACPerRoute{})
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action:               &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
			TypedPerFilterConfig: map[string]*anypb.Any{HTTPName: off},
		}},
	}}}
	tab, err := route.CompileWithOptions(rc, route.Options{FilterConfigParsers: map[string]route.FilterConfigParser{HTTPName: ParsePerRoute}})
	if err != nil {
		t.Fatal(err)
	}
	req := &route.Request{Method: "GET", Authority: "x", Path: "/", Scheme: "http"}
	rt := tab.Select(req, 0)
	f, ok := rt.PerFilterConfig(HTTPName).(*Filter)
	if !ok || f.Engine() != nil || f.Shadow() != nil {
		t.Fatalf("per-route config %#v", rt.PerFilterConfig(HTTPName))
	}
	a := &Attributes{Request: matcher.Request(*req)}
	if deny, _ := f.Check(a); deny {
		t.Error("disabled filter denies")
	}
}

func TestNetworkFilter(t *testing.T) {
	cfg := &rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[allow-sleep]-rule[0]": pol(
			perms(andRules(orRules(portPerm(9080)))),
			ids(andIDs(orIDs(authn(exact(sleepID))))),
		),
		// HTTP rules see no headers on a connection.
		"http-only": pol(perms(headerPerm(":method", exact("GET"))), ids(anyID())),
	}}}
	a, _ := anypb.New(cfg)
	f, err := ParseNetwork(a)
	if err != nil {
		t.Fatal(err)
	}
	conn := baseAttrs()
	conn.Request = matcher.Request{}
	d := f.Decide(conn)
	if d.Deny || d.Policy != "ns[default]-policy[allow-sleep]-rule[0]" || d.Namespace() != NetworkName {
		t.Errorf("sleep: %+v", d)
	}
	conn.Peer = &Peer{URISANs: []string{"spiffe://cluster.local/ns/default/sa/other"}}
	if deny, details := f.Check(conn); !deny || details != "rbac_access_denied_matched_policy[none]" {
		t.Errorf("other: %v %q", deny, details)
	}
}

func TestParseErrors(t *testing.T) {
	okPolicy := func() *rbacv3.Policy { return pol(perms(anyPerm()), ids(anyID())) }
	withPolicy := func(p *rbacv3.Policy) *rbachttpv3.RBAC {
		return &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": p}}}
	}
	cases := []struct {
		name string
		cfg  *rbachttpv3.RBAC
		want string // error prefix
	}{
		{"CEL condition", withPolicy(&rbacv3.Policy{Permissions: perms(anyPerm()), Principals: ids(anyID()), Condition: &exprpb.Expr{}}),
			`rules.policies["p"].condition: field is not supported by amime`},
		{"matcher", &rbachttpv3.RBAC{Matcher: &xdsmatcherv3.Matcher{}}, "matcher: field is not supported by amime"},
		{"shadow_rules_stat_prefix", &rbachttpv3.RBAC{ShadowRulesStatPrefix: "istio_dry_run_allow_"}, "shadow_rules_stat_prefix: field is not supported by amime"},
		{"track_per_rule_stats", &rbachttpv3.RBAC{TrackPerRuleStats: true}, "track_per_rule_stats: field is not supported by amime"},
		{"audit logging", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{AuditLoggingOptions: &rbacv3.RBAC_AuditLoggingOptions{}}},
			"rules.audit_logging_options: field is not supported by amime"},
		{"sourced_metadata", withPolicy(pol(perms(&rbacv3.Permission{Rule: &rbacv3.Permission_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{}}}), ids(anyID()))),
			`rules.policies["p"].permissions[0].sourced_metadata: field is not supported by amime`},
		{"filter_state", withPolicy(pol(perms(anyPerm()), ids(anyID(), &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{}}}))),
			`rules.policies["p"].principals[1].filter_state: field is not supported by amime`},
		{"nested unsupported", withPolicy(pol(perms(notRule(andRules(&rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{}}))), ids(anyID()))),
			`rules.policies["p"].permissions[0].not_rule.and_rules.rules[0].uri_template: field is not supported by amime`},
		{"string matcher custom", withPolicy(pol(perms(anyPerm()), ids(authn(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Custom{}})))),
			`rules.policies["p"].principals[0].authenticated.principal_name.custom: field is not supported by amime`},
		{"no permissions", withPolicy(&rbacv3.Policy{Principals: ids(anyID())}), "RBAC: invalid RBAC.Rules"},
		{"empty and_rules", withPolicy(pol(perms(andRules()), ids(anyID()))), "RBAC: invalid RBAC.Rules"},
		{"bad regex", withPolicy(pol(perms(anyPerm()), ids(authn(regex("a(b"))))),
			`rules.policies["p"].principals[0].authenticated.principal_name.safe_regex.regex: invalid RE2`},
		{"bad CIDR", withPolicy(pol(perms(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0", 8)}}), ids(anyID()))),
			`rules.policies["p"].permissions[0].destination_ip.address_prefix: malformed IP address "10.0.0"`},
		{"unknown pseudo-header", withPolicy(pol(perms(headerPerm(":protocol", exact("websocket"))), ids(anyID()))),
			`rules.policies["p"].permissions[0].header.name: pseudo-header ":protocol" cannot be matched`},
		{"port range inverted", withPolicy(pol(perms(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 90, End: 80}}}), ids(anyID()))),
			`rules.policies["p"].permissions[0].destination_port_range: range start 90 cannot be greater or equal than range end 80`},
		{"shadow path", &rbachttpv3.RBAC{ShadowRules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"s": pol(perms(pathPerm(regex("["))), ids(anyID()))}}},
			`shadow_rules.policies["s"].permissions[0].url_path.path.safe_regex.regex: invalid RE2`},
		{"valid", withPolicy(okPolicy()), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := anypb.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(a)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("error = %v, want prefix %q", err, tc.want)
			}
		})
	}

	netCases := []struct {
		name string
		cfg  *rbacnetv3.RBAC
		want string
	}{
		{"continuous", &rbacnetv3.RBAC{StatPrefix: "tcp.", EnforcementType: rbacnetv3.RBAC_CONTINUOUS}, "enforcement_type: field is not supported by amime"},
		{"delay_deny", &rbacnetv3.RBAC{StatPrefix: "tcp.", DelayDeny: durationpb.New(time.Second)}, "delay_deny: field is not supported by amime"},
		{"stat_prefix required", &rbacnetv3.RBAC{}, "RBAC: invalid RBAC.StatPrefix"},
	}
	for _, tc := range netCases {
		a, _ := anypb.New(tc.cfg)
		if _, err := ParseNetwork(a); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want prefix %q", tc.name, err, tc.want)
		}
	}
	wrong, _ := anypb.New(&rbacnetv3.RBAC{StatPrefix: "x"})
	if _, err := Parse(wrong); err == nil {
		t.Error("network RBAC accepted by the HTTP Parse")
	}
}

// TestIstioShapes evaluates the translations istiod makes of
// AuthorizationPolicy fields, against a peer certificate.
func TestIstioShapes(t *testing.T) {
	peer := NewPeer(testCert(t, sleepID))
	if len(peer.URISANs) != 1 || peer.URISANs[0] != sleepID || peer.Subject != "CN=sleep,O=cluster.local" {
		t.Fatalf("peer %+v", peer)
	}
	e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"ns[default]-policy[p]-rule[0]": istioPolicy()}}, "rules")
	if err != nil {
		t.Fatal(err)
	}
	req := func(method, path string, p *Peer) *Attributes {
		return &Attributes{Request: matcher.Request{Method: method, Path: path, Authority: "a"}, Peer: p}
	}
	cases := []struct {
		name string
		a    *Attributes
		want bool
	}{
		{"GET /api/x from sleep", req("GET", "/api/x?q", peer), true},
		{"HEAD /api/ from sleep", req("HEAD", "/api/", peer), true},
		{"POST from sleep", req("POST", "/api/x", peer), false},
		{"GET /apix from sleep", req("GET", "/apix", peer), false},
		{"GET /api/x plaintext", req("GET", "/api/x", nil), false},
		{"GET /api/x other identity", req("GET", "/api/x", NewPeer(testCert(t, "spiffe://cluster.local/ns/default/sa/other"))), false},
	}
	for _, tc := range cases {
		if allowed, _ := e.Evaluate(tc.a); allowed != tc.want {
			t.Errorf("%s: allowed = %v, want %v", tc.name, allowed, tc.want)
		}
	}
}

func TestEvaluateAllocs(t *testing.T) {
	e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": istioPolicy()}}, "rules")
	if err != nil {
		t.Fatal(err)
	}
	f := &Filter{name: HTTPName, engine: e, shadow: e}
	a := baseAttrs()
	if n := testing.AllocsPerRun(100, func() { f.Decide(a) }); n != 0 {
		t.Errorf("Decide allocates %v times", n)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[other]-rule[0]": pol(perms(pathPerm(prefix("/admin"))), ids(authn(regex(".*/ns/ops/.*")))),
		"ns[default]-policy[p]-rule[0]":     istioPolicy(),
	}}, "rules")
	if err != nil {
		b.Fatal(err)
	}
	a := baseAttrs()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ok, _ := e.Evaluate(a); !ok {
			b.Fatal("denied")
		}
	}
}

func testCert(t *testing.T, id string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sleep", Organization: []string{"cluster.local"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
