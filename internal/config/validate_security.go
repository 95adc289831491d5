package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// ---- PeerAuthentication ----

func validatePeerAuthentication(v *validator, pa *security.PeerAuthentication) {
	p := fpath("spec")
	if pa.Selector != nil {
		v.selector(p.f("selector").f("matchLabels"), pa.Selector.MatchLabels)
	}
	if len(pa.PortLevelMtls) > 0 && len(pa.Selector.GetMatchLabels()) == 0 {
		// Ports only mean something for a given workload.
		v.add(p.f("portLevelMtls"), "requires a selector with matchLabels (namespace- and mesh-wide policies cannot set port-level mTLS)")
	}
	ports := make([]int, 0, len(pa.PortLevelMtls))
	for port := range pa.PortLevelMtls {
		ports = append(ports, int(port))
	}
	slices.Sort(ports)
	for _, port := range ports {
		pp := p.f("portLevelMtls").k(strconv.Itoa(port))
		v.addIf(pp, checkPort(uint32(port)))
		if pa.PortLevelMtls[uint32(port)] == nil {
			v.add(pp, "must not be null")
		}
	}
}

// ---- targeting shared by RequestAuthentication and AuthorizationPolicy ----

func validatePolicyTarget(v *validator, p fpath, sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) {
	set := 0
	if sel != nil {
		set++
		v.selector(p.f("selector").f("matchLabels"), sel.MatchLabels)
	}
	if ref != nil {
		set++
		validateTargetRef(v, p.f("targetRef"), ref)
	}
	if len(refs) > 0 {
		set++
	}
	for i, r := range refs {
		if r == nil {
			v.add(p.f("targetRefs").i(i), "must not be null")
			continue
		}
		validateTargetRef(v, p.f("targetRefs").i(i), r)
	}
	if set > 1 {
		v.add(p, "only one of selector, targetRef or targetRefs may be set")
	}
}

func validateTargetRef(v *validator, p fpath, r *typev1beta1.PolicyTargetReference) {
	if r.Name == "" {
		v.add(p.f("name"), "is required")
	}
	if r.Namespace != "" {
		v.add(p.f("namespace"), "must not be set: cross-namespace references are not supported")
	}
	switch {
	case r.Group == "" && r.Kind == "Service":
	case r.Group == NetworkingGroup && r.Kind == ServiceEntry:
	case r.Group == "gateway.networking.k8s.io" && r.Kind == "Gateway":
	default:
		v.add(p, "unsupported target %s/%s (want Service, networking.istio.io/ServiceEntry or gateway.networking.k8s.io/Gateway)", r.Group, r.Kind)
	}
}

// ---- RequestAuthentication ----

func validateRequestAuthentication(v *validator, ra *security.RequestAuthentication) {
	p := fpath("spec")
	validatePolicyTarget(v, p, ra.Selector, ra.TargetRef, ra.TargetRefs)
	each(v, p, "jwtRules", ra.JwtRules, func(rp fpath, r *security.JWTRule) {
		validateJWTRule(v, rp, r)
	})
}

func validateJWTRule(v *validator, p fpath, r *security.JWTRule) {
	if r.Issuer == "" {
		v.add(p.f("issuer"), "is required")
	}
	for i, a := range r.Audiences {
		if a == "" {
			v.add(p.f("audiences").i(i), "must not be empty")
		}
	}
	if r.JwksUri != "" {
		v.addIf(p.f("jwksUri"), checkJwksURI(r.JwksUri))
	}
	if r.Jwks != "" {
		v.addIf(p.f("jwks"), checkJWKS(r.Jwks))
	}
	for i, h := range r.FromHeaders {
		if h == nil || h.Name == "" {
			v.add(p.f("fromHeaders").i(i).f("name"), "is required")
		}
	}
	for i, q := range r.FromParams {
		if q == "" {
			v.add(p.f("fromParams").i(i), "must not be empty")
		}
	}
	for i, c := range r.FromCookies {
		if c == "" {
			v.add(p.f("fromCookies").i(i), "must not be empty")
		}
	}
	each(v, p, "outputClaimToHeaders", r.OutputClaimToHeaders, func(cp fpath, c *security.ClaimToHeader) {
		if c.Claim == "" {
			v.add(cp.f("claim"), "is required")
		}
		if c.Header == "" {
			v.add(cp.f("header"), "is required")
		} else {
			v.addIf(cp.f("header"), checkHeaderName(c.Header))
		}
	})
	if r.OutputPayloadToHeader != "" {
		v.addIf(p.f("outputPayloadToHeader"), checkHeaderName(r.OutputPayloadToHeader))
	}
	v.duration(p.f("timeout"), r.Timeout)
}

func checkJwksURI(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("invalid URL %q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Sprintf("invalid URL %q: scheme must be http or https", s)
	}
	if u.Hostname() == "" {
		return fmt.Sprintf("invalid URL %q: host is required", s)
	}
	if port := u.Port(); port != "" {
		n, err := strconv.ParseUint(port, 10, 32)
		if err != nil || n == 0 || n > 65535 {
			return fmt.Sprintf("invalid URL %q: bad port %q", s, port)
		}
	}
	return ""
}

// checkJWKS accepts what Envoy's local JWKS accepts: a JSON Web Key Set
// ({"keys": [...]}) or a single JSON Web Key, each key with a "kty".
func checkJWKS(s string) string {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return fmt.Sprintf("invalid JWKS: %v", err)
	}
	if set.Keys == nil {
		var key map[string]any
		if err := json.Unmarshal([]byte(s), &key); err != nil || key["kty"] == nil {
			return "invalid JWKS: want {\"keys\": [...]} or a single JSON Web Key with \"kty\""
		}
		set.Keys = []map[string]any{key}
	}
	if len(set.Keys) == 0 {
		return "invalid JWKS: no keys"
	}
	for i, k := range set.Keys {
		if kty, _ := k["kty"].(string); kty == "" {
			return fmt.Sprintf("invalid JWKS: keys[%d] has no \"kty\"", i)
		}
	}
	return ""
}

// ---- AuthorizationPolicy ----

func validateAuthorizationPolicy(v *validator, ap *security.AuthorizationPolicy) {
	p := fpath("spec")
	validatePolicyTarget(v, p, ap.Selector, ap.TargetRef, ap.TargetRefs)
	provider := ap.GetProvider()
	switch ap.Action {
	case security.AuthorizationPolicy_CUSTOM:
		if len(ap.Rules) == 0 {
			v.add(p.f("rules"), "a CUSTOM policy without rules never triggers; add an empty rule {} to match every request")
		}
		if provider.GetName() == "" {
			v.add(p.f("provider").f("name"), "is required when action is CUSTOM")
		}
	case security.AuthorizationPolicy_DENY:
		if len(ap.Rules) == 0 {
			v.add(p.f("rules"), "a DENY policy without rules never triggers; add an empty rule {} to match every request")
		}
	}
	if provider != nil && ap.Action != security.AuthorizationPolicy_CUSTOM {
		v.add(p.f("provider"), "only allowed when action is CUSTOM, got %s", ap.Action)
	}
	each(v, p, "rules", ap.Rules, func(rp fpath, r *security.Rule) {
		validateRule(v, rp, r, ap.Action == security.AuthorizationPolicy_CUSTOM)
	})
}

func validateRule(v *validator, p fpath, r *security.Rule, custom bool) {
	for j, f := range r.From {
		fp := p.f("from").i(j)
		if f == nil || f.Source == nil {
			v.add(fp.f("source"), "is required")
			continue
		}
		sp := fp.f("source")
		s := f.Source
		lists := []struct {
			name string
			vals []string
		}{
			{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
			{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
			{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
			{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts},
			{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks},
			{"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks},
			{"trustDomains", s.TrustDomains}, {"notTrustDomains", s.NotTrustDomains},
		}
		empty := true
		for _, l := range lists {
			if len(l.vals) > 0 {
				empty = false
			}
			v.nonEmptyValues(sp.f(l.name), l.vals)
		}
		if empty {
			v.add(sp, "at least one field is required")
		}
		for _, l := range lists[8:12] {
			for k, ip := range l.vals {
				if ip != "" {
					v.addIf(sp.f(l.name).i(k), checkIPOrCIDR(ip))
				}
			}
		}
		if custom {
			// ext_authz sees the request before Istio's identity-based matching.
			for _, l := range lists[:6] {
				if len(l.vals) > 0 {
					v.add(sp.f(l.name), "not supported with action CUSTOM")
				}
			}
		}
	}
	for j, t := range r.To {
		tp := p.f("to").i(j)
		if t == nil || t.Operation == nil {
			v.add(tp.f("operation"), "is required")
			continue
		}
		op := tp.f("operation")
		o := t.Operation
		lists := []struct {
			name string
			vals []string
		}{
			{"hosts", o.Hosts}, {"notHosts", o.NotHosts}, {"ports", o.Ports}, {"notPorts", o.NotPorts},
			{"methods", o.Methods}, {"notMethods", o.NotMethods}, {"paths", o.Paths}, {"notPaths", o.NotPaths},
		}
		empty := true
		for _, l := range lists {
			if len(l.vals) > 0 {
				empty = false
			}
			v.nonEmptyValues(op.f(l.name), l.vals)
		}
		if empty {
			v.add(op, "at least one field is required")
		}
		for _, l := range lists[2:4] {
			for k, port := range l.vals {
				if port != "" {
					v.addIf(op.f(l.name).i(k), checkPortString(port))
				}
			}
		}
		for _, l := range lists[6:8] {
			for k, path := range l.vals {
				v.addIf(op.f(l.name).i(k), checkPathTemplate(path))
			}
		}
	}
	for j, c := range r.When {
		cp := p.f("when").i(j)
		if c == nil {
			v.add(cp, "must not be null")
			continue
		}
		if c.Key == "" {
			v.add(cp.f("key"), "is required")
			continue
		}
		if len(c.Values) == 0 && len(c.NotValues) == 0 {
			v.add(cp, "at least one of values or notValues is required for key %q", c.Key)
			continue
		}
		if r := checkConditionKey(c.Key); r != "" {
			v.add(cp.f("key"), "%s", r)
			continue
		}
		checkValues := func(field string, vals []string) {
			vp := cp.f(field)
			v.nonEmptyValues(vp, vals)
			for k, val := range vals {
				if val == "" {
					continue
				}
				switch c.Key {
				case "source.ip", "remote.ip", "destination.ip":
					v.addIf(vp.i(k), checkIPOrCIDR(val))
				case "destination.port":
					v.addIf(vp.i(k), checkPortString(val))
				}
			}
		}
		checkValues("values", c.Values)
		checkValues("notValues", c.NotValues)
		if custom && (c.Key == "source.namespace" || c.Key == "source.principal" || strings.HasPrefix(c.Key, "request.auth.")) {
			v.add(cp.f("key"), "%q is not supported with action CUSTOM", c.Key)
		}
	}
}

func (v *validator) nonEmptyValues(p fpath, vals []string) {
	for i, s := range vals {
		if s == "" {
			v.add(p.i(i), "must not be empty")
		}
	}
}

func checkPortString(s string) string {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > 65535 {
		return fmt.Sprintf("invalid port %q: want a number in the range 0..65535", s)
	}
	return ""
}

// Path templates: only "{*}" and "{**}" are supported, as in istiod.
var unsupportedPathTemplate = regexp.MustCompile(`/{\w+=\*\*?}|{\w*}|/\*\*?|\*\*?/`)

func checkPathTemplate(path string) string {
	if (strings.Contains(path, "{*}") || strings.Contains(path, "{**}")) && unsupportedPathTemplate.MatchString(path) {
		return fmt.Sprintf("invalid or unsupported path template %q (only {*} and {**} segments are supported)", path)
	}
	return ""
}

// checkConditionKey accepts the attribute names Istio documents for
// AuthorizationPolicy conditions.
func checkConditionKey(key string) string {
	mapKey := func(prefix string) string {
		rest := strings.TrimPrefix(key, prefix)
		if len(rest) > 2 && rest[0] == '[' && rest[len(rest)-1] == ']' {
			return ""
		}
		return fmt.Sprintf("invalid key %q: want %s[<name>]", key, prefix)
	}
	switch {
	case strings.HasPrefix(key, "request.headers"):
		return mapKey("request.headers")
	case strings.HasPrefix(key, "request.auth.claims"):
		return mapKey("request.auth.claims")
	case strings.HasPrefix(key, "experimental.envoy.filters."):
		return ""
	}
	switch key {
	case "source.ip", "remote.ip", "source.namespace", "source.principal",
		"request.auth.principal", "request.auth.audiences", "request.auth.presenter",
		"destination.ip", "destination.port", "connection.sni":
		return ""
	case "destination.namespace":
		return fmt.Sprintf("key %q is not supported: the policy's namespace already scopes it", key)
	case "destination.name", "destination.user":
		return fmt.Sprintf("key %q is not supported (v1alpha1 only)", key)
	}
	if strings.HasPrefix(key, "destination.labels") {
		return fmt.Sprintf("key %q is not supported: use the policy's selector", key)
	}
	return fmt.Sprintf("unknown key %q (want request.headers[...], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[...], destination.ip, destination.port, connection.sni or experimental.envoy.filters.*)", key)
}
