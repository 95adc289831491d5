package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbactcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

// Authorization (Istio's AuthorizationPolicy) becomes RBAC filters on the
// inbound side, shaped as istiod's authz builder shapes them: one RBAC
// filter per action, each rule of a policy one RBAC policy named
// "ns[<ns>]-policy[<name>]-rule[<i>]".
//
// Filter instance names are istiod's ("istio.authorization.allow",
// "istio.authorization.deny") plus the same pattern for AUDIT and CUSTOM,
// so that every filter of a chain has its own stable name; the proxy picks
// the implementation by type URL.
const (
	rbacFilterCustom = "istio.authorization.custom"
	rbacFilterAudit  = "istio.authorization.audit"
	rbacFilterDeny   = "istio.authorization.deny"
	rbacFilterAllow  = "istio.authorization.allow"

	// authnMetadataFilter is the dynamic metadata namespace the proxy's
	// jwt_authn fills with request.auth.* for a verified token (Istio's
	// istio_authn).
	authnMetadataFilter = "istio_authn"

	// Istio's stat prefixes for the TCP filter and dry-run shadow rules.
	rbacTCPStatPrefix        = "tcp."
	rbacShadowAllowPrefix    = "istio_dry_run_allow_"
	rbacShadowDenyPrefix     = "istio_dry_run_deny_"
	customPolicyPrefix       = "istio-ext-authz-"
	badCustomPolicySuffix    = "-deny-due-to-bad-CUSTOM-action"
	gatewayNameLabel         = "gateway.networking.k8s.io/gateway-name"
	gatewayAPIGroup          = "gateway.networking.k8s.io"
	dryRunAnnotation         = "istio.io/dry-run"
	principalSpiffePrefix    = "spiffe://"
	requestAuthPrincipalKey  = "request.auth.principal"
	requestAuthAudiencesKey  = "request.auth.audiences"
	requestAuthPresenterKey  = "request.auth.presenter"
	requestAuthClaimsKey     = "request.auth.claims"
	experimentalEnvoyFilters = "experimental.envoy.filters."
)

// errHTTPOnly marks a value that a TCP filter chain cannot evaluate.
var errHTTPOnly = errors.New("HTTP only")

// authzPolicy is one AuthorizationPolicy that applies to the proxy.
type authzPolicy struct {
	obj    *config.Object
	spec   *security.AuthorizationPolicy
	dryRun bool
	// failClosed: the policy could not be bound (targetRef) and is an
	// ALLOW policy; it contributes a policy that matches nothing, so the
	// ALLOW filter exists and denies what no other ALLOW policy allows.
	failClosed bool
}

// authzSets are the applicable policies by action, each in precedence order.
type authzSets struct {
	custom, audit, deny, allow []authzPolicy
}

// securityHTTPFilters returns the HTTP filters to insert, in order, before
// the router of the inbound HTTP connection manager of workload port port
// (the port the application serves, which AuthorizationPolicy
// to.operation.ports and destination.port name). The order is istiod's:
// CUSTOM, jwt_authn, AUDIT, DENY, ALLOW. CUSTOM providers are not
// supported: requests its rules match are denied, as istiod does for an
// unknown provider. nil when no security policy applies.
func (b *builder) securityHTTPFilters(port uint32) []*hcmv3.HttpFilter {
	sets := b.authorizationPolicies()
	var out []*hcmv3.HttpFilter
	add := func(name string, s rbacSet) {
		if s.rules == nil && s.shadow == nil {
			return
		}
		f := &rbachttpv3.RBAC{Rules: s.rules, ShadowRules: s.shadow, ShadowRulesStatPrefix: shadowStatPrefix(s.shadow)}
		out = append(out, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)}})
	}
	if r := b.customDenyRules(sets.custom, port, false); r != nil {
		add(rbacFilterCustom, rbacSet{rules: r})
	}
	if jwt := b.jwtAuthnFilter(); jwt != nil {
		out = append(out, jwt)
	}
	add(rbacFilterAudit, b.rbacRules(sets.audit, rbacv3.RBAC_LOG, port, false))
	add(rbacFilterDeny, b.rbacRules(sets.deny, rbacv3.RBAC_DENY, port, false))
	add(rbacFilterAllow, b.rbacRules(sets.allow, rbacv3.RBAC_ALLOW, port, false))
	return out
}

// securityNetworkFilters returns the envoy.filters.network.rbac filters to
// put before tcp_proxy on the inbound TCP listener of workload port port.
// HTTP-only attributes are handled as Istio does on TCP: an ALLOW rule that
// uses one is dropped (it never matches), a DENY or AUDIT rule loses the
// HTTP-only parts (it matches more). nil when no policy applies.
func (b *builder) securityNetworkFilters(port uint32) []*listenerv3.Filter {
	sets := b.authorizationPolicies()
	var out []*listenerv3.Filter
	add := func(name string, s rbacSet) {
		if s.rules == nil && s.shadow == nil {
			return
		}
		f := &rbactcpv3.RBAC{Rules: s.rules, StatPrefix: rbacTCPStatPrefix, ShadowRules: s.shadow, ShadowRulesStatPrefix: shadowStatPrefix(s.shadow)}
		out = append(out, &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(f)}})
	}
	if r := b.customDenyRules(sets.custom, port, true); r != nil {
		add(rbacFilterCustom, rbacSet{rules: r})
	}
	add(rbacFilterAudit, b.rbacRules(sets.audit, rbacv3.RBAC_LOG, port, true))
	add(rbacFilterDeny, b.rbacRules(sets.deny, rbacv3.RBAC_DENY, port, true))
	add(rbacFilterAllow, b.rbacRules(sets.allow, rbacv3.RBAC_ALLOW, port, true))
	return out
}

func shadowStatPrefix(shadow *rbacv3.RBAC) string {
	if shadow == nil {
		return ""
	}
	switch shadow.GetAction() {
	case rbacv3.RBAC_ALLOW:
		return rbacShadowAllowPrefix
	case rbacv3.RBAC_DENY:
		return rbacShadowDenyPrefix
	}
	return ""
}

// authorizationPolicies picks the AuthorizationPolicies that apply to the
// proxy, by action.
func (b *builder) authorizationPolicies() authzSets {
	var sets authzSets
	for _, o := range precedence(b.in.AuthorizationPolicies, b.proxy.Namespace) {
		ap, ok := o.Spec.(*security.AuthorizationPolicy)
		if !ok {
			continue
		}
		bind := b.policyBinding(o, ap.GetSelector(), ap.GetTargetRef(), ap.GetTargetRefs())
		p := authzPolicy{obj: o, spec: ap}
		if v, ok := o.Meta.Annotations[dryRunAnnotation]; ok {
			p.dryRun, _ = strconv.ParseBool(v)
		}
		if bind == bindNone {
			continue
		}
		if bind == bindUnresolved {
			switch ap.GetAction() {
			case security.AuthorizationPolicy_ALLOW:
				p.failClosed = true
				b.warnf(o, "targetRef: not translated (amime binds policies by selector or Gateway name only); this ALLOW policy is skipped and, to fail closed, requests to workloads of namespace %s are denied unless another ALLOW policy allows them", o.Meta.Namespace)
			case security.AuthorizationPolicy_AUDIT:
				b.warnf(o, "targetRef: not translated (amime binds policies by selector or Gateway name only); AUDIT policy skipped")
				continue
			default:
				b.warnf(o, "targetRef: not translated (amime binds policies by selector or Gateway name only); to fail closed, the %s policy applies to every workload of namespace %s", ap.GetAction(), o.Meta.Namespace)
			}
		}
		switch ap.GetAction() {
		case security.AuthorizationPolicy_ALLOW:
			sets.allow = append(sets.allow, p)
		case security.AuthorizationPolicy_DENY:
			sets.deny = append(sets.deny, p)
		case security.AuthorizationPolicy_AUDIT:
			sets.audit = append(sets.audit, p)
		case security.AuthorizationPolicy_CUSTOM:
			sets.custom = append(sets.custom, p)
		}
	}
	return sets
}

// policyBind says whether a security policy applies to the proxy.
type policyBind int

const (
	bindNone policyBind = iota
	bindApplies
	// bindUnresolved: the policy targets something amime cannot resolve
	// (a Service or ServiceEntry, bound to waypoints in Istio) in the
	// proxy's namespace.
	bindUnresolved
)

// policyBinding decides, as Istio does, whether a security policy applies
// to the proxy: policies of the root namespace apply mesh-wide, others to
// their namespace; a selector narrows them to workloads with its labels.
// A targetRef to a Gateway (gateway.networking.k8s.io) binds the gateway
// proxies of the policy's namespace labelled with its name.
func (b *builder) policyBinding(o *config.Object, sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) policyBind {
	ns := o.Meta.Namespace
	if ref != nil {
		refs = append(slices.Clone(refs), ref)
	}
	if len(refs) > 0 {
		if ns != b.proxy.Namespace {
			return bindNone
		}
		for _, r := range refs {
			if r.GetGroup() != gatewayAPIGroup || r.GetKind() != "Gateway" || (r.GetNamespace() != "" && r.GetNamespace() != ns) {
				return bindUnresolved
			}
		}
		if b.proxy.Type != Router {
			return bindNone
		}
		gw, ok := b.proxy.Labels[gatewayNameLabel]
		for _, r := range refs {
			if ok && r.GetName() == gw {
				return bindApplies
			}
		}
		return bindNone
	}
	if ns != b.mesh.RootNamespace && ns != b.proxy.Namespace {
		return bindNone
	}
	if !hasLabels(b.proxy.Labels, sel.GetMatchLabels()) {
		return bindNone
	}
	return bindApplies
}

// matchNever is Istio's policy for an ALLOW policy without rules: it
// matches no request.
func matchNever() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{permNot(permAny())},
		Principals:  []*rbacv3.Principal{principalNot(principalAny())},
	}
}

func policyName(ns, name string, rule int) string {
	return "ns[" + ns + "]-policy[" + name + "]-rule[" + strconv.Itoa(rule) + "]"
}

// rbacRules builds the enforced and dry-run (shadow) RBAC of one action.
// Both are nil when no policy applies; a dry-run policy
// (istio.io/dry-run: "true") goes to the shadow rules.
func (b *builder) rbacRules(pols []authzPolicy, action rbacv3.RBAC_Action, port uint32, forTCP bool) rbacSet {
	var rules, shadow *rbacv3.RBAC
	for _, p := range pols {
		target := &rules
		if p.dryRun {
			target = &shadow
		}
		if *target == nil {
			*target = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		ns, name := p.obj.Meta.Namespace, p.obj.Meta.Name
		if p.failClosed || len(p.spec.GetRules()) == 0 {
			// No rules: an ALLOW policy allows nothing (Istio's allow-nothing
			// policy); DENY and AUDIT ones match nothing.
			(*target).Policies[policyName(ns, name, 0)] = matchNever()
			continue
		}
		for i, r := range p.spec.GetRules() {
			if pol := b.rbacPolicy(p.obj, i, r, action, port, forTCP); pol != nil {
				(*target).Policies[policyName(ns, name, i)] = pol
			}
		}
	}
	return rbacSet{rules, shadow}
}

// rbacSet is the enforced and the dry-run RBAC of one action.
type rbacSet struct{ rules, shadow *rbacv3.RBAC }

// customDenyRules is what istiod emits for CUSTOM policies whose provider
// it cannot use: a DENY of every request the rules match.
func (b *builder) customDenyRules(pols []authzPolicy, port uint32, forTCP bool) *rbacv3.RBAC {
	if len(pols) == 0 {
		return nil
	}
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
	for _, p := range pols {
		b.warnf(p.obj, "provider %q: not translated (CUSTOM external authorization is not supported); requests its rules match are denied (fail closed)", p.spec.GetProvider().GetName())
		for i, r := range p.spec.GetRules() {
			if pol := b.rbacPolicy(p.obj, i, r, rbacv3.RBAC_DENY, port, forTCP); pol != nil {
				out.Policies[customPolicyPrefix+policyName(p.obj.Meta.Namespace, p.obj.Meta.Name, i)+badCustomPolicySuffix] = pol
			}
		}
	}
	return out
}

// ruleTerm is one attribute constraint of a rule: values ORed, notValues
// negated.
type ruleTerm struct {
	field     string // for warnings, e.g. "rules[0].from[1].source.principals"
	key       string // the attribute (Istio's condition key)
	values    []string
	notValues []string
}

// rbacPolicy translates one rule, following Istio's model: each from
// source is a principal (ANDing its fields and the when conditions that
// are properties of the peer or request), each to operation a permission.
// Values that cannot be translated make an ALLOW rule match nothing (the
// rule is dropped) and are left out of DENY and AUDIT rules (they match
// more): both fail closed. nil when the rule is dropped.
func (b *builder) rbacPolicy(o *config.Object, i int, r *security.Rule, action rbacv3.RBAC_Action, port uint32, forTCP bool) *rbacv3.Policy {
	path := "rules[" + strconv.Itoa(i) + "]"
	if r == nil {
		b.warnf(o, "%s: null rule skipped", path)
		return nil
	}
	var permWhen, princWhen []ruleTerm
	for j, c := range r.GetWhen() {
		t := ruleTerm{field: path + ".when[" + strconv.Itoa(j) + "]", key: c.GetKey(), values: c.GetValues(), notValues: c.GetNotValues()}
		if isPermissionKey(c.GetKey()) {
			permWhen = append(permWhen, t)
		} else {
			princWhen = append(princWhen, t)
		}
	}
	g := ruleGen{b: b, o: o, ns: o.Meta.Namespace, action: action, port: port, forTCP: forTCP}
	pol := &rbacv3.Policy{}
	froms := r.GetFrom()
	if len(froms) == 0 {
		froms = []*security.Rule_From{nil}
	}
	for j, f := range froms {
		var terms []ruleTerm
		if s := f.GetSource(); s != nil {
			sp := path + ".from[" + strconv.Itoa(j) + "].source."
			terms = append(terms,
				ruleTerm{sp + "principals", "source.principal", s.GetPrincipals(), s.GetNotPrincipals()},
				ruleTerm{sp + "requestPrincipals", requestAuthPrincipalKey, s.GetRequestPrincipals(), s.GetNotRequestPrincipals()},
				ruleTerm{sp + "serviceAccounts", "source.serviceAccount", s.GetServiceAccounts(), s.GetNotServiceAccounts()},
				ruleTerm{sp + "namespaces", "source.namespace", s.GetNamespaces(), s.GetNotNamespaces()},
				ruleTerm{sp + "remoteIpBlocks", "remote.ip", s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks()},
				ruleTerm{sp + "ipBlocks", "source.ip", s.GetIpBlocks(), s.GetNotIpBlocks()},
				ruleTerm{sp + "trustDomains", "source.trustDomain", s.GetTrustDomains(), s.GetNotTrustDomains()},
			)
		}
		terms = append(terms, princWhen...)
		p, ok := g.principal(terms)
		if !ok {
			return nil
		}
		pol.Principals = append(pol.Principals, p)
	}
	tos := r.GetTo()
	if len(tos) == 0 {
		tos = []*security.Rule_To{nil}
	}
	for j, t := range tos {
		var terms []ruleTerm
		if op := t.GetOperation(); op != nil {
			tp := path + ".to[" + strconv.Itoa(j) + "].operation."
			terms = append(terms,
				ruleTerm{tp + "hosts", ":authority", op.GetHosts(), op.GetNotHosts()},
				ruleTerm{tp + "methods", ":method", op.GetMethods(), op.GetNotMethods()},
				ruleTerm{tp + "paths", ":path", op.GetPaths(), op.GetNotPaths()},
				ruleTerm{tp + "ports", "destination.port", op.GetPorts(), op.GetNotPorts()},
			)
		}
		terms = append(terms, permWhen...)
		p, ok := g.permission(terms)
		if !ok {
			return nil
		}
		pol.Permissions = append(pol.Permissions, p)
	}
	return pol
}

// isPermissionKey: Istio puts conditions on the destination and the
// connection into permissions, the rest into principals.
func isPermissionKey(key string) bool {
	switch key {
	case "destination.ip", "destination.port", "connection.sni":
		return true
	}
	return strings.HasPrefix(key, experimentalEnvoyFilters)
}

// ruleGen translates the terms of one rule.
type ruleGen struct {
	b      *builder
	o      *config.Object
	ns     string
	action rbacv3.RBAC_Action
	port   uint32
	forTCP bool
}

// failed handles a value that cannot be translated; it reports whether
// the whole rule must be dropped (ALLOW: never match) rather than the
// value left out (DENY, AUDIT: match more).
func (g *ruleGen) failed(t ruleTerm, err error) (dropRule bool) {
	drop := g.action == rbacv3.RBAC_ALLOW
	effect := "the value is left out of this " + g.action.String() + " rule, which matches more (fail closed)"
	if drop {
		effect = "this ALLOW rule is dropped and allows nothing (fail closed)"
	}
	if errors.Is(err, errHTTPOnly) {
		g.b.warnf(g.o, "%s: HTTP-only attribute on TCP port %d: %s", t.field, g.port, effect)
	} else {
		g.b.warnf(g.o, "%s: not translated: %v; %s", t.field, err, effect)
	}
	return drop
}

func (g *ruleGen) principal(terms []ruleTerm) (*rbacv3.Principal, bool) {
	and, ok := conjunction(g, terms, g.principalValue, principalOr, principalNot, principalAny)
	if !ok {
		return nil, false
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: and}}}, true
}

func (g *ruleGen) permission(terms []ruleTerm) (*rbacv3.Permission, bool) {
	and, ok := conjunction(g, terms, g.permissionValue, permOr, permNot, permAny)
	if !ok {
		return nil, false
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}, true
}

// conjunction translates terms into the operands of an AND, for principals
// and permissions alike: per term, the OR of its values and the negated OR
// of its not-values, each left out when no value translated; anything()
// alone when nothing is left, as an empty AND is not valid RBAC. ok is
// false when a value that failed drops the whole rule (see failed).
func conjunction[T any](g *ruleGen, terms []ruleTerm, value func(key, v string) (T, error), or func([]T) T, not func(T) T, anything func() T) (and []T, ok bool) {
	for _, t := range terms {
		for neg, vals := range [2][]string{t.values, t.notValues} {
			var alts []T
			for _, v := range vals {
				x, err := value(t.key, v)
				if err != nil {
					if g.failed(t, err) {
						return nil, false
					}
					continue
				}
				alts = append(alts, x)
			}
			if len(alts) == 0 {
				continue
			}
			x := or(alts)
			if neg == 1 {
				x = not(x)
			}
			and = append(and, x)
		}
	}
	if len(and) == 0 {
		and = []T{anything()}
	}
	return and, true
}

// permissionValue translates one value of an operation field or of a
// condition on the destination or connection.
func (g *ruleGen) permissionValue(key, v string) (*rbacv3.Permission, error) {
	switch {
	case key == ":authority":
		if g.forTCP {
			return nil, errHTTPOnly
		}
		return hostPermission(v), nil
	case key == ":method":
		if g.forTCP {
			return nil, errHTTPOnly
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: singleHeaderMatcher(":method", v)}}, nil
	case key == ":path":
		if g.forTCP {
			return nil, errHTTPOnly
		}
		m, err := pathMatcher(v)
		if err != nil {
			return nil, err
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}, nil
	case key == "destination.port":
		// The proxy's listener port is not the workload's port outside
		// Kubernetes, so ports are decided here, for the filter's port.
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q", v)
		}
		if uint32(n) == g.port {
			return permAny(), nil
		}
		return permNot(permAny()), nil
	case key == "destination.ip":
		cidr, err := cidrRange(v)
		if err != nil {
			return nil, err
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr}}, nil
	case key == "connection.sni":
		return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: globMatcher(v, false)}}, nil
	case strings.HasPrefix(key, experimentalEnvoyFilters):
		// experimental.envoy.filters.a.b[c]: metadata of filter
		// envoy.filters.a.b at key c; "[v]" matches v in a list.
		filter, rest, ok := strings.Cut(strings.TrimPrefix(key, "experimental."), "[")
		if !ok || !strings.HasSuffix(rest, "]") {
			return nil, fmt.Errorf("invalid key %q: want experimental.envoy.filters.<filter>[<key>]", key)
		}
		var vm *matcherv3.ValueMatcher
		if len(v) > 1 && v[0] == '[' && v[len(v)-1] == ']' {
			vm = listOneOf(globMatcher(v[1:len(v)-1], false))
		} else {
			vm = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: globMatcher(v, false)}}
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: metadataMatcher(filter, []string{strings.TrimSuffix(rest, "]")}, vm)}}, nil
	}
	return nil, fmt.Errorf("unknown attribute %q", key)
}

// principalValue translates one value of a source field or of a
// condition on the peer or the request.
func (g *ruleGen) principalValue(key, v string) (*rbacv3.Principal, error) {
	switch {
	case key == "source.principal":
		return authenticated(principalNameMatcher(v)), nil
	case key == "source.namespace":
		return authenticated(regexMatcher(".*/ns/" + globRegex(v) + "/.*")), nil
	case key == "source.serviceAccount":
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = g.ns, v
		}
		return authenticated(regexMatcher("spiffe://.+/ns/" + regexp.QuoteMeta(ns) + "/(.+/|)sa/" + regexp.QuoteMeta(sa) + "(/.+)?")), nil
	case key == "source.trustDomain":
		return nil, errors.New("trust domains are not supported yet")
	case key == "source.ip", key == "remote.ip":
		cidr, err := cidrRange(v)
		if err != nil {
			return nil, err
		}
		if key == "source.ip" {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr}}, nil
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}}, nil
	case key == requestAuthPrincipalKey, key == requestAuthAudiencesKey, key == requestAuthPresenterKey:
		if g.forTCP {
			return nil, errHTTPOnly
		}
		vm := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: globMatcher(v, false)}}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metadataMatcher(authnMetadataFilter, []string{key}, vm)}}, nil
	case strings.HasPrefix(key, requestAuthClaimsKey):
		if g.forTCP {
			return nil, errHTTPOnly
		}
		claims, err := nestedBrackets(strings.TrimPrefix(key, requestAuthClaimsKey))
		if err != nil {
			return nil, err
		}
		// Claims may be lists (groups, scopes): one of the items matches.
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: metadataMatcher(authnMetadataFilter, append([]string{requestAuthClaimsKey}, claims...), listOneOf(globMatcher(v, false)))}}, nil
	case strings.HasPrefix(key, "request.headers"):
		if g.forTCP {
			return nil, errHTTPOnly
		}
		names, err := nestedBrackets(strings.TrimPrefix(key, "request.headers"))
		if err != nil || len(names) != 1 {
			return nil, fmt.Errorf("invalid key %q: want request.headers[<name>]", key)
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: multiValueHeaderMatcher(names[0], v)}}, nil
	}
	return nil, fmt.Errorf("unknown attribute %q", key)
}

// nestedBrackets splits "[a][b]" into a, b.
func nestedBrackets(s string) ([]string, error) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("expecting [<name>], found %q", s)
		}
		end := strings.IndexByte(s, ']')
		if end <= 1 {
			return nil, fmt.Errorf("expecting [<name>], found %q", s)
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	if len(out) == 0 {
		return nil, errors.New("expecting [<name>]")
	}
	return out, nil
}

// globMatcher is Istio's StringMatcher for "exact", "prefix*", "*suffix"
// and "*" (any non-empty value).
func globMatcher(v string, ignoreCase bool) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}, IgnoreCase: ignoreCase}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}, IgnoreCase: ignoreCase}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}, IgnoreCase: ignoreCase}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// globRegex turns a value with "*" wildcards into a regular expression.
func globRegex(v string) string {
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return strings.Join(parts, ".*")
}

// principalNameMatcher matches a peer's URI SAN against an Istio
// principal ("cluster.local/ns/default/sa/productpage"), which Istio
// writes without the spiffe:// scheme; "*" is any authenticated peer.
func principalNameMatcher(v string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		return regexMatcher(regexp.QuoteMeta(principalSpiffePrefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: principalSpiffePrefix + v[:len(v)-1]}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: principalSpiffePrefix + v}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// singleHeaderMatcher is Istio's matcher for a single-valued header such as
// :method: exact, prefix, suffix or presence.
func singleHeaderMatcher(name, v string) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: globMatcher(v, false)}}
}

// multiValueHeaderMatcher is Istio's matcher for request.headers[...]:
// the value may be one of several comma-joined values (RFC 7230), so a
// header sent twice cannot slip past a DENY rule.
func multiValueHeaderMatcher(name, v string) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	re := globRegex(v)
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{
		Regex: "^" + re + "$|^" + re + ",.*|.*," + re + ",.*|.*," + re + "$",
	}}}
}

// hostPermission matches :authority case-insensitively as Istio does, and
// also with a port when the value names none: clients put the port in
// Host for non-default ports, and a DENY on "example.com" must not be
// bypassed by sending "example.com:80".
func hostPermission(v string) *rbacv3.Permission {
	header := func(m *matcherv3.StringMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
			Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m},
		}}}
	}
	switch {
	case v == "*":
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
			Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
		}}}
	case strings.HasSuffix(v, "*") || strings.Contains(v, ":"):
		// A prefix covers the port already; an explicit port is kept as is.
		return header(globMatcher(v, true))
	case strings.HasPrefix(v, "*"):
		return permOr([]*rbacv3.Permission{
			header(globMatcher(v, true)),
			header(regexMatcher("(?i).*" + regexp.QuoteMeta(v[1:]) + ":[0-9]+")),
		})
	}
	return permOr([]*rbacv3.Permission{
		header(globMatcher(v, true)),
		header(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v + ":"}, IgnoreCase: true}),
	})
}

// pathMatcher is Istio's path matcher: exact, "/prefix*", "*suffix", "*"
// (any path), and the {*} / {**} templates, matched here with an
// equivalent regular expression ({*}: one path segment, {**}: any rest).
func pathMatcher(v string) (*matcherv3.StringMatcher, error) {
	if !strings.Contains(v, "{*}") && !strings.Contains(v, "{**}") {
		return globMatcher(v, false), nil
	}
	var re strings.Builder
	rest := v
	sawMulti := false
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			if strings.ContainsAny(rest, "*}") {
				return nil, fmt.Errorf("invalid path template %q", v)
			}
			re.WriteString(regexp.QuoteMeta(rest))
			break
		}
		lit := rest[:i]
		if strings.ContainsAny(lit, "*}") {
			return nil, fmt.Errorf("invalid path template %q", v)
		}
		re.WriteString(regexp.QuoteMeta(lit))
		rest = rest[i:]
		if sawMulti {
			return nil, fmt.Errorf("invalid path template %q: {**} must be the last operator", v)
		}
		switch {
		case strings.HasPrefix(rest, "{**}"):
			re.WriteString(".*")
			rest = rest[4:]
			sawMulti = true
		case strings.HasPrefix(rest, "{*}"):
			re.WriteString("[^/]+")
			rest = rest[3:]
		default:
			return nil, fmt.Errorf("invalid path template %q", v)
		}
	}
	return regexMatcher(re.String()), nil
}

func cidrRange(v string) (*corev3.CidrRange, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("invalid IP or CIDR %q", v)
	}
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}, nil
}

func metadataMatcher(filter string, path []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
	for _, k := range path {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

func listOneOf(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}},
	}}}
}

func permAny() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func permNot(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

func permOr(ps []*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func principalAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func principalNot(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

func principalOr(ps []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}
