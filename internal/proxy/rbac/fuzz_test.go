package rbac

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// FuzzEvaluate builds RBAC configurations and attributes from the fuzz
// input and checks that compiling and evaluating never panic and agree
// with ref, a direct interpretation of the proto written independently of
// the matcher package. A first byte of 0 instead decodes the rest as a
// wire-format filter config: whatever passes Parse's checks must evaluate.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte("\x01istio-shaped policy with nested rules and a peer"))
	f.Add([]byte{0, 0x0a, 0x00})
	seed, _ := proto.Marshal(&rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": istioPolicy()}}})
	f.Add(append([]byte{0}, seed...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 && data[0] == 0 {
			m := &rbachttpv3.RBAC{}
			if proto.Unmarshal(data[1:], m) != nil {
				return
			}
			flt, err := Compile(m)
			if err != nil {
				return
			}
			for i := range 4 {
				g := &gen{data: data, pos: i * 7}
				flt.Decide(g.attributes())
			}
			return
		}
		g := &gen{data: data}
		r := g.rbac()
		if err := Rules().Check(r); err != nil {
			t.Fatalf("generator made an unsupported config: %v", err)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("generator made an invalid config: %v", err)
		}
		e, err := NewEngine(r, "rules")
		if err != nil {
			t.Fatalf("NewEngine: %v\n%v", err, r)
		}
		for range 4 {
			a := g.attributes()
			allowed, policy := e.Evaluate(a)
			wantAllowed, wantPolicy := ref(r, a)
			if allowed != wantAllowed || policy != wantPolicy {
				t.Fatalf("Evaluate = %v, %q; reference %v, %q\nconfig %v\nattributes %+v", allowed, policy, wantAllowed, wantPolicy, r, a)
			}
		}
	})
}

// gen draws choices from fuzz bytes; past the end it keeps returning 0,
// which always picks a leaf, so generation terminates.
type gen struct {
	data []byte
	pos  int
}

func (g *gen) n(k int) int {
	if g.pos >= len(g.data) {
		return 0
	}
	b := g.data[g.pos]
	g.pos++
	return int(b) % k
}

func pick[T any](g *gen, xs ...T) T { return xs[g.n(len(xs))] }

var (
	fuzzStrings = []string{"", "GET", "get", "POST", "/api/v1", "/API", "/admin", "a,b", "blue", sleepID,
		"spiffe://cluster.local/ns/foo/sa/x", "sleep.default.svc", "CN=sleep", "reviews:9080", "x.svc.cluster.local", "7", " 5 "}
	fuzzRegexes = []string{`.*`, `.*/ns/foo/.*`, `GET|POST`, `/api/.*`, `[a-z]+`, `a,b`}
	fuzzHeaders = []string{":method", ":path", ":authority", ":scheme", "host", "x-team", "x-m", "x-missing"}
	fuzzAddrs   = []string{"10.0.0.7", "10.0.1.2", "203.0.113.9", "2001:db8::1", "::ffff:10.0.0.7", "192.168.1.1"}
)

func (g *gen) str() *matcherv3.StringMatcher {
	kind, v := g.n(5), pick(g, fuzzStrings...)
	sm := &matcherv3.StringMatcher{}
	if v == "" && kind != 0 {
		v = "a" // Envoy's proto rules: only exact may be empty
	}
	switch kind {
	case 0:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: v}
	case 1:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: v}
	case 2:
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v}
	case 3:
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: v}
	case 4:
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pick(g, fuzzRegexes...)}}
		return sm
	}
	sm.IgnoreCase = g.n(2) == 1
	return sm
}

func (g *gen) header() *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: pick(g, fuzzHeaders...), InvertMatch: g.n(4) == 0, TreatMissingHeaderAsEmpty: g.n(4) == 0}
	switch g.n(5) {
	case 0:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: g.n(2) == 0}
	case 1:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: int64(g.n(5)), End: int64(g.n(5) + 5)}}
	case 2:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: pick(g, fuzzStrings[1:]...)}
	default:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: g.str()}
	}
	return h
}

func (g *gen) cidr() *corev3.CidrRange {
	a := netip.MustParseAddr(pick(g, fuzzAddrs...)).Unmap()
	return cidr(a.String(), uint32(g.n(a.BitLen()+1)))
}

func (g *gen) metadata() *matcherv3.MetadataMatcher {
	path := pick(g, []string{"request.auth.principal"}, []string{"request.auth.claims", "groups"}, []string{"request.auth.claims"}, []string{"x", "y"})
	var v *matcherv3.ValueMatcher
	switch g.n(5) {
	case 0:
		v = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: g.n(2) == 0}}
	case 1:
		v = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
			MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: g.str()}}}}}}
	case 2:
		v = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}
	default:
		v = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: g.str()}}
	}
	m := metaVal(pick(g, "istio_authn", "other"), v, path...)
	m.Invert = g.n(4) == 0
	return m
}

func (g *gen) permission(depth int) *rbacv3.Permission {
	k := g.n(11)
	if depth > 2 && k < 3 {
		k = 3
	}
	switch k {
	case 0:
		return andRules(g.permissions(depth + 1)...)
	case 1:
		return orRules(g.permissions(depth + 1)...)
	case 2:
		return notRule(g.permission(depth + 1))
	case 3:
		return anyPerm()
	case 4:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: g.header()}}
	case 5:
		return pathPerm(g.str())
	case 6:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: g.cidr()}}
	case 7:
		return portPerm(uint32(pick(g, 9080, 8080, 0)))
	case 8:
		start := int32(pick(g, 0, 8080, 9080))
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: start, End: start + int32(g.n(3)) + 1}}}
	case 9:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: g.metadata()}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: g.str()}}
}

func (g *gen) permissions(depth int) []*rbacv3.Permission {
	out := []*rbacv3.Permission{g.permission(depth)}
	for range g.n(3) {
		out = append(out, g.permission(depth))
	}
	return out
}

func (g *gen) principal(depth int) *rbacv3.Principal {
	k := g.n(12)
	if depth > 2 && k < 3 {
		k = 3
	}
	switch k {
	case 0:
		return andIDs(g.principals(depth + 1)...)
	case 1:
		return orIDs(g.principals(depth + 1)...)
	case 2:
		return notID(g.principal(depth + 1))
	case 3:
		return anyID()
	case 4:
		return authn(g.str())
	case 5:
		return authn(nil)
	case 6:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: g.cidr()}}
	case 7:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: g.cidr()}}
	case 8:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: g.cidr()}}
	case 9:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: g.header()}}
	case 10:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: g.str()}}}}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: g.metadata()}}
}

func (g *gen) principals(depth int) []*rbacv3.Principal {
	out := []*rbacv3.Principal{g.principal(depth)}
	for range g.n(3) {
		out = append(out, g.principal(depth))
	}
	return out
}

func (g *gen) rbac() *rbacv3.RBAC {
	r := &rbacv3.RBAC{Action: rbacv3.RBAC_Action(g.n(3)), Policies: map[string]*rbacv3.Policy{}}
	for range g.n(4) {
		name := pick(g, "a", "b", "c", "ns[x]-policy[y]-rule[0]")
		r.Policies[name] = pol(g.permissions(0), g.principals(0))
	}
	return r
}

func (g *gen) attributes() *Attributes {
	md, _ := structpb.NewStruct(map[string]any{
		"request.auth.principal": pick(g, fuzzStrings...),
		"request.auth.claims":    map[string]any{"groups": []any{pick(g, fuzzStrings...), 1.0, nil}},
	})
	a := &Attributes{
		Request: matcher.Request{
			Method: pick(g, "", "GET", "POST", "get"), Path: pick(g, "", "/api/v1?x=1", "/admin#f", "/API"),
			Authority: pick(g, "", "reviews:9080", "X.svc.cluster.local"), Scheme: pick(g, "", "http", "https"),
		},
		Destination: netip.AddrPortFrom(netip.MustParseAddr(pick(g, fuzzAddrs...)), uint16(pick(g, 9080, 8080, 8081))),
		SNI:         pick(g, fuzzStrings...),
		Metadata:    map[string]*structpb.Struct{pick(g, "istio_authn", "jwt"): md},
	}
	for range g.n(4) {
		a.Request.Headers.Add(pick(g, fuzzHeaders[4:]...), pick(g, fuzzStrings...))
	}
	if g.n(3) > 0 {
		a.DirectRemote = netip.MustParseAddr(pick(g, fuzzAddrs...))
		a.Remote = netip.MustParseAddr(pick(g, fuzzAddrs...))
	}
	if g.n(3) > 0 {
		a.Peer = &Peer{Subject: pick(g, fuzzStrings...)}
		for range g.n(3) {
			a.Peer.URISANs = append(a.Peer.URISANs, pick(g, fuzzStrings...))
		}
		for range g.n(2) {
			a.Peer.DNSSANs = append(a.Peer.DNSSANs, pick(g, fuzzStrings...))
		}
	}
	return a
}

// ref evaluates r directly on the proto, the way Envoy's documentation
// reads, without the matcher package.
func ref(r *rbacv3.RBAC, a *Attributes) (bool, string) {
	names := make([]string, 0, len(r.Policies))
	for n := range r.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	matched := ""
	for _, n := range names {
		p := r.Policies[n]
		if refAnyPerm(p.Permissions, a) && refAnyID(p.Principals, a) {
			matched = n
			break
		}
	}
	switch r.Action {
	case rbacv3.RBAC_ALLOW:
		return matched != "", matched
	case rbacv3.RBAC_DENY:
		return matched == "", matched
	}
	return true, matched
}

func refAnyPerm(ps []*rbacv3.Permission, a *Attributes) bool {
	for _, p := range ps {
		if refPerm(p, a) {
			return true
		}
	}
	return false
}

func refAnyID(ps []*rbacv3.Principal, a *Attributes) bool {
	for _, p := range ps {
		if refID(p, a) {
			return true
		}
	}
	return false
}

func refPerm(p *rbacv3.Permission, a *Attributes) bool {
	switch r := p.Rule.(type) {
	case *rbacv3.Permission_AndRules:
		for _, c := range r.AndRules.Rules {
			if !refPerm(c, a) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		return refAnyPerm(r.OrRules.Rules, a)
	case *rbacv3.Permission_NotRule:
		return !refPerm(r.NotRule, a)
	case *rbacv3.Permission_Any:
		return true
	case *rbacv3.Permission_Header:
		return refHeader(r.Header, a)
	case *rbacv3.Permission_UrlPath:
		return refPath(r.UrlPath, a)
	case *rbacv3.Permission_DestinationIp:
		return refCIDR(r.DestinationIp, a.Destination.Addr())
	case *rbacv3.Permission_DestinationPort:
		return uint32(a.Destination.Port()) == r.DestinationPort
	case *rbacv3.Permission_DestinationPortRange:
		port := int32(a.Destination.Port())
		return r.DestinationPortRange.Start <= port && port < r.DestinationPortRange.End
	case *rbacv3.Permission_Metadata:
		return refMetadata(r.Metadata, a)
	case *rbacv3.Permission_RequestedServerName:
		return refString(r.RequestedServerName, a.SNI)
	}
	panic(fmt.Sprintf("ref: permission %T", p.Rule))
}

func refID(p *rbacv3.Principal, a *Attributes) bool {
	switch r := p.Identifier.(type) {
	case *rbacv3.Principal_AndIds:
		for _, c := range r.AndIds.Ids {
			if !refID(c, a) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		return refAnyID(r.OrIds.Ids, a)
	case *rbacv3.Principal_NotId:
		return !refID(r.NotId, a)
	case *rbacv3.Principal_Any:
		return true
	case *rbacv3.Principal_Authenticated_:
		if a.Peer == nil {
			return false
		}
		pn := r.Authenticated.PrincipalName
		if pn == nil {
			return true
		}
		for _, s := range append(append(append([]string(nil), a.Peer.URISANs...), a.Peer.DNSSANs...), a.Peer.Subject) {
			if refString(pn, s) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_SourceIp:
		return refCIDR(r.SourceIp, a.DirectRemote)
	case *rbacv3.Principal_DirectRemoteIp:
		return refCIDR(r.DirectRemoteIp, a.DirectRemote)
	case *rbacv3.Principal_RemoteIp:
		return refCIDR(r.RemoteIp, a.Remote)
	case *rbacv3.Principal_Header:
		return refHeader(r.Header, a)
	case *rbacv3.Principal_UrlPath:
		return refPath(r.UrlPath, a)
	case *rbacv3.Principal_Metadata:
		return refMetadata(r.Metadata, a)
	}
	panic(fmt.Sprintf("ref: principal %T", p.Identifier))
}

// asciiLower folds only ASCII letters, as Envoy's ignore_case does.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func refString(sm *matcherv3.StringMatcher, v string) bool {
	if re, ok := sm.MatchPattern.(*matcherv3.StringMatcher_SafeRegex); ok {
		return regexp.MustCompile(`^(?:` + re.SafeRegex.Regex + `)$`).MatchString(v)
	}
	if sm.IgnoreCase {
		v = asciiLower(v)
	}
	fold := func(s string) string {
		if sm.IgnoreCase {
			return asciiLower(s)
		}
		return s
	}
	switch m := sm.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == fold(m.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, fold(m.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, fold(m.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, fold(m.Contains))
	}
	panic(fmt.Sprintf("ref: string matcher %T", sm.MatchPattern))
}

func refHeader(h *routev3.HeaderMatcher, a *Attributes) bool {
	var v string
	var ok bool
	switch name := strings.ToLower(h.Name); name {
	case ":method":
		v = a.Request.Method
	case ":path":
		v = a.Request.Path
	case ":authority", "host":
		v = a.Request.Authority
	case ":scheme":
		v = a.Request.Scheme
	default:
		var vals []string
		for _, f := range a.Request.Headers {
			if f.Name == name {
				vals = append(vals, f.Value)
			}
		}
		v, ok = strings.Join(vals, ","), len(vals) > 0
	}
	if strings.HasPrefix(h.Name, ":") || strings.EqualFold(h.Name, "host") {
		ok = v != ""
	}
	if p, isPresent := h.HeaderMatchSpecifier.(*routev3.HeaderMatcher_PresentMatch); isPresent {
		return (ok == p.PresentMatch) != h.InvertMatch
	}
	if !ok && !h.TreatMissingHeaderAsEmpty {
		return false
	}
	var m bool
	switch s := h.HeaderMatchSpecifier.(type) {
	case *routev3.HeaderMatcher_RangeMatch:
		n, err := strconv.ParseInt(strings.Trim(v, " \t\n\v\f\r"), 10, 64)
		m = err == nil && n >= s.RangeMatch.Start && n < s.RangeMatch.End
	case *routev3.HeaderMatcher_PrefixMatch:
		m = strings.HasPrefix(v, s.PrefixMatch)
	case *routev3.HeaderMatcher_StringMatch:
		m = refString(s.StringMatch, v)
	default:
		panic(fmt.Sprintf("ref: header matcher %T", h.HeaderMatchSpecifier))
	}
	return m != h.InvertMatch
}

func refPath(pm *matcherv3.PathMatcher, a *Attributes) bool {
	if a.Request.Path == "" {
		return false
	}
	p := a.Request.Path
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return refString(pm.GetPath(), p)
}

func refCIDR(c *corev3.CidrRange, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	_, n, err := net.ParseCIDR(fmt.Sprintf("%s/%d", c.AddressPrefix, c.PrefixLen.GetValue()))
	if err != nil {
		panic(err)
	}
	ip := net.IP(addr.AsSlice())
	if v4 := ip.To4(); v4 != nil {
		// net.IPNet.Contains would match an IPv4 address against an
		// IPv4-mapped range; Envoy compares versions first.
		if len(n.IP) != net.IPv4len {
			return false
		}
		ip = v4
	} else if len(n.IP) == net.IPv4len {
		return false
	}
	return n.Contains(ip)
}

func refMetadata(mm *matcherv3.MetadataMatcher, a *Attributes) bool {
	var v *structpb.Value
	if s, ok := a.Metadata[mm.Filter]; ok {
		cur := structpb.NewStructValue(s)
		for _, seg := range mm.Path {
			st := cur.GetStructValue()
			if st == nil {
				cur = nil
				break
			}
			if cur = st.Fields[seg.GetKey()]; cur == nil {
				break
			}
		}
		v = cur
	}
	return refValue(mm.Value, v) != mm.Invert
}

func refValue(vm *matcherv3.ValueMatcher, v *structpb.Value) bool {
	switch m := vm.MatchPattern.(type) {
	case *matcherv3.ValueMatcher_PresentMatch:
		return m.PresentMatch && v != nil && v.Kind != nil
	case *matcherv3.ValueMatcher_NullMatch_:
		_, ok := v.GetKind().(*structpb.Value_NullValue)
		return ok
	case *matcherv3.ValueMatcher_StringMatch:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok && refString(m.StringMatch, s.StringValue)
	case *matcherv3.ValueMatcher_ListMatch:
		for _, e := range v.GetListValue().GetValues() {
			if refValue(m.ListMatch.GetOneOf(), e) {
				return true
			}
		}
		return false
	}
	panic(fmt.Sprintf("ref: value matcher %T", vm.MatchPattern))
}
