package rbac

import (
	"fmt"
	"net/netip"
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Action is what an engine does when a policy matches.
type Action uint8

// The RBAC actions.
const (
	Allow Action = iota // allow only requests some policy matches
	Deny                // deny requests some policy matches
	Log                 // allow everything; report whether a policy matched
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	case Log:
		return "LOG"
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Engine is a compiled envoy.config.rbac.v3.RBAC. It is immutable and safe
// for concurrent use.
type Engine struct {
	action   Action
	policies []policy // sorted by name: Envoy evaluates them in that order
}

type policy struct {
	name        string
	details     string // response_code_details when this policy denies
	permissions []node // any of
	principals  []node // any of
}

// noneDetails is the response_code_details of a deny no policy caused (an
// ALLOW engine where nothing matched).
const noneDetails = "rbac_access_denied_matched_policy[none]"

// NewEngine compiles r, which must have passed Rules().Check and Validate
// (Parse does both); p is its field path for errors.
func NewEngine(r *rbacv3.RBAC, p string) (*Engine, error) {
	e := &Engine{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.action = Allow
	case rbacv3.RBAC_DENY:
		e.action = Deny
	case rbacv3.RBAC_LOG:
		e.action = Log
	default:
		return nil, fmt.Errorf("%s.action: unknown action %d", p, r.GetAction())
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for name := range r.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		pp := fmt.Sprintf("%s.policies[%q]", p, name)
		pol, err := compilePolicy(r.GetPolicies()[name], pp)
		if err != nil {
			return nil, err
		}
		pol.name = name
		pol.details = "rbac_access_denied_matched_policy[" + name + "]"
		e.policies = append(e.policies, pol)
	}
	return e, nil
}

// Action returns the engine's action.
func (e *Engine) Action() Action { return e.action }

// Evaluate decides for a: whether the engine allows it and the name of the
// first policy (in name order) that matched, "" when none did. A LOG
// engine always allows; a policy name then means access_log_hint is true.
func (e *Engine) Evaluate(a *Attributes) (allowed bool, policy string) {
	i := e.match(a)
	if i >= 0 {
		policy = e.policies[i].name
	}
	return e.allowed(i), policy
}

func (e *Engine) allowed(matched int) bool {
	switch e.action {
	case Allow:
		return matched >= 0
	case Deny:
		return matched < 0
	}
	return true
}

// match returns the index of the first matching policy, -1 if none.
func (e *Engine) match(a *Attributes) int {
	for i := range e.policies {
		p := &e.policies[i]
		if anyMatch(p.permissions, a) && anyMatch(p.principals, a) {
			return i
		}
	}
	return -1
}

func compilePolicy(pol *rbacv3.Policy, p string) (policy, error) {
	var out policy
	if pol == nil {
		return out, fmt.Errorf("%s: policy is empty", p)
	}
	for i, perm := range pol.GetPermissions() {
		n, err := compilePermission(perm, fmt.Sprintf("%s.permissions[%d]", p, i))
		if err != nil {
			return out, err
		}
		out.permissions = append(out.permissions, n)
	}
	for i, id := range pol.GetPrincipals() {
		n, err := compilePrincipal(id, fmt.Sprintf("%s.principals[%d]", p, i))
		if err != nil {
			return out, err
		}
		out.principals = append(out.principals, n)
	}
	// Envoy's proto rules require both; an empty list would match nothing.
	if len(out.permissions) == 0 {
		return out, fmt.Errorf("%s.permissions: at least one permission is required", p)
	}
	if len(out.principals) == 0 {
		return out, fmt.Errorf("%s.principals: at least one principal is required", p)
	}
	return out, nil
}

// kind is what a compiled permission or principal node tests.
type kind uint8

const (
	kindAny kind = iota
	kindAnd
	kindOr
	kindNot
	kindHeader
	kindPath
	kindDestinationIP
	kindDestinationPort
	kindDestinationPortRange
	kindMetadata
	kindServerName
	kindAuthenticated
	kindDirectRemoteIP
	kindRemoteIP
)

// node is a compiled Permission or Principal; the two share their
// evaluation since most kinds occur in both.
type node struct {
	kind     kind
	children []node            // and, or; not has one
	str      *matcher.String   // url_path, requested_server_name, principal_name (nil: any)
	header   *matcher.Header   // header
	meta     *matcher.Metadata // metadata
	prefix   netip.Prefix      // destination_ip, direct_remote_ip, remote_ip
	lo, hi   uint32            // destination_port (lo), destination_port_range [lo, hi)
}

func anyMatch(ns []node, a *Attributes) bool {
	for i := range ns {
		if ns[i].match(a) {
			return true
		}
	}
	return false
}

func (n *node) match(a *Attributes) bool {
	switch n.kind {
	case kindAny:
		return true
	case kindAnd:
		for i := range n.children {
			if !n.children[i].match(a) {
				return false
			}
		}
		return true
	case kindOr:
		return anyMatch(n.children, a)
	case kindNot:
		return !n.children[0].match(a)
	case kindHeader:
		return n.header.Match(&a.Request)
	case kindPath:
		return matcher.MatchPath(n.str, a.Request.Path)
	case kindDestinationIP:
		return matcher.InCIDR(n.prefix, a.Destination.Addr())
	case kindDestinationPort:
		return a.Destination.IsValid() && uint32(a.Destination.Port()) == n.lo
	case kindDestinationPortRange:
		port := uint32(a.Destination.Port())
		return a.Destination.IsValid() && n.lo <= port && port < n.hi
	case kindMetadata:
		return n.meta.Match(a.Metadata)
	case kindServerName:
		return n.str.Match(a.SNI)
	case kindAuthenticated:
		return authenticated(n.str, a.Peer)
	case kindDirectRemoteIP:
		return matcher.InCIDR(n.prefix, a.DirectRemote)
	case kindRemoteIP:
		return matcher.InCIDR(n.prefix, a.Remote)
	}
	return false
}

// authenticated is Envoy's AuthenticatedMatcher: no TLS never matches, no
// principal_name matches any TLS peer; otherwise any URI SAN, then any DNS
// SAN, then the subject may match.
func authenticated(name *matcher.String, p *Peer) bool {
	if p == nil {
		return false
	}
	if name == nil {
		return true
	}
	for _, s := range p.URISANs {
		if name.Match(s) {
			return true
		}
	}
	for _, s := range p.DNSSANs {
		if name.Match(s) {
			return true
		}
	}
	return name.Match(p.Subject)
}

func compilePermission(perm *rbacv3.Permission, p string) (node, error) {
	switch r := perm.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		return compilePermissionSet(kindAnd, r.AndRules.GetRules(), p+".and_rules")
	case *rbacv3.Permission_OrRules:
		return compilePermissionSet(kindOr, r.OrRules.GetRules(), p+".or_rules")
	case *rbacv3.Permission_Any:
		if !r.Any {
			// Envoy's proto rules: any must be true.
			return node{}, fmt.Errorf("%s.any: must be true", p)
		}
		return node{kind: kindAny}, nil
	case *rbacv3.Permission_Header:
		h, err := matcher.NewHeader(r.Header, p+".header")
		return node{kind: kindHeader, header: &h}, err
	case *rbacv3.Permission_UrlPath:
		s, err := matcher.NewPath(r.UrlPath, p+".url_path")
		return node{kind: kindPath, str: &s}, err
	case *rbacv3.Permission_DestinationIp:
		pr, err := matcher.NewCIDR(r.DestinationIp, p+".destination_ip")
		return node{kind: kindDestinationIP, prefix: pr}, err
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return node{}, fmt.Errorf("%s.destination_port: %d is not a port", p, r.DestinationPort)
		}
		return node{kind: kindDestinationPort, lo: r.DestinationPort}, nil
	case *rbacv3.Permission_DestinationPortRange:
		// Envoy's PortRangeMatcher bounds.
		start, end := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		switch {
		case start < 0 || start > 65536:
			return node{}, fmt.Errorf("%s.destination_port_range: range start %d is out of bounds", p, start)
		case end < 0 || end > 65536:
			return node{}, fmt.Errorf("%s.destination_port_range: range end %d is out of bounds", p, end)
		case start >= end:
			return node{}, fmt.Errorf("%s.destination_port_range: range start %d cannot be greater or equal than range end %d", p, start, end)
		}
		return node{kind: kindDestinationPortRange, lo: uint32(start), hi: uint32(end)}, nil
	case *rbacv3.Permission_Metadata:
		m, err := matcher.NewMetadata(r.Metadata, p+".metadata")
		return node{kind: kindMetadata, meta: &m}, err
	case *rbacv3.Permission_NotRule:
		c, err := compilePermission(r.NotRule, p+".not_rule")
		return node{kind: kindNot, children: []node{c}}, err
	case *rbacv3.Permission_RequestedServerName:
		s, err := matcher.NewString(r.RequestedServerName, p+".requested_server_name")
		return node{kind: kindServerName, str: &s}, err
	case nil:
		return node{}, fmt.Errorf("%s: rule is required", p)
	}
	// Rules refuses the others first; this guards direct NewEngine callers.
	return node{}, fmt.Errorf("%s: rule is not supported by amime", p)
}

func compilePermissionSet(k kind, rules []*rbacv3.Permission, p string) (node, error) {
	if len(rules) == 0 {
		return node{}, fmt.Errorf("%s.rules: at least one rule is required", p)
	}
	n := node{kind: k, children: make([]node, 0, len(rules))}
	for i, r := range rules {
		c, err := compilePermission(r, fmt.Sprintf("%s.rules[%d]", p, i))
		if err != nil {
			return node{}, err
		}
		n.children = append(n.children, c)
	}
	return n, nil
}

func compilePrincipal(id *rbacv3.Principal, p string) (node, error) {
	switch r := id.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		return compilePrincipalSet(kindAnd, r.AndIds.GetIds(), p+".and_ids")
	case *rbacv3.Principal_OrIds:
		return compilePrincipalSet(kindOr, r.OrIds.GetIds(), p+".or_ids")
	case *rbacv3.Principal_Any:
		if !r.Any {
			return node{}, fmt.Errorf("%s.any: must be true", p)
		}
		return node{kind: kindAny}, nil
	case *rbacv3.Principal_Authenticated_:
		n := node{kind: kindAuthenticated}
		if pn := r.Authenticated.GetPrincipalName(); pn != nil {
			s, err := matcher.NewString(pn, p+".authenticated.principal_name")
			if err != nil {
				return node{}, err
			}
			n.str = &s
		}
		return n, nil
	case *rbacv3.Principal_SourceIp:
		// The connection's remote address: the direct peer, since amime
		// has no PROXY protocol.
		pr, err := matcher.NewCIDR(r.SourceIp, p+".source_ip")
		return node{kind: kindDirectRemoteIP, prefix: pr}, err
	case *rbacv3.Principal_DirectRemoteIp:
		pr, err := matcher.NewCIDR(r.DirectRemoteIp, p+".direct_remote_ip")
		return node{kind: kindDirectRemoteIP, prefix: pr}, err
	case *rbacv3.Principal_RemoteIp:
		pr, err := matcher.NewCIDR(r.RemoteIp, p+".remote_ip")
		return node{kind: kindRemoteIP, prefix: pr}, err
	case *rbacv3.Principal_Header:
		h, err := matcher.NewHeader(r.Header, p+".header")
		return node{kind: kindHeader, header: &h}, err
	case *rbacv3.Principal_UrlPath:
		s, err := matcher.NewPath(r.UrlPath, p+".url_path")
		return node{kind: kindPath, str: &s}, err
	case *rbacv3.Principal_Metadata:
		m, err := matcher.NewMetadata(r.Metadata, p+".metadata")
		return node{kind: kindMetadata, meta: &m}, err
	case *rbacv3.Principal_NotId:
		c, err := compilePrincipal(r.NotId, p+".not_id")
		return node{kind: kindNot, children: []node{c}}, err
	case nil:
		return node{}, fmt.Errorf("%s: identifier is required", p)
	}
	return node{}, fmt.Errorf("%s: identifier is not supported by amime", p)
}

func compilePrincipalSet(k kind, ids []*rbacv3.Principal, p string) (node, error) {
	if len(ids) == 0 {
		return node{}, fmt.Errorf("%s.ids: at least one principal is required", p)
	}
	n := node{kind: k, children: make([]node, 0, len(ids))}
	for i, id := range ids {
		c, err := compilePrincipal(id, fmt.Sprintf("%s.ids[%d]", p, i))
		if err != nil {
			return node{}, err
		}
		n.children = append(n.children, c)
	}
	return n, nil
}
