package explain

import (
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// findVirtualHost searches domains in Envoy's documented order (exact,
// then the longest suffix wildcard, the longest prefix wildcard, then
// "*"): used only to say which virtual host a request that no route
// matched was looked up in, the route table having decided already.
func findVirtualHost(vhs []*routev3.VirtualHost, host string) (*routev3.VirtualHost, string, string) {
	host = strings.ToLower(host)
	var best *routev3.VirtualHost
	bestDomain, bestKind, bestRank, bestLen := "", "", 5, -1
	for _, vh := range vhs {
		for _, d := range vh.GetDomains() {
			rank, kind, ok := domainRank(strings.ToLower(d), host)
			if !ok {
				continue
			}
			if rank < bestRank || (rank == bestRank && len(d) > bestLen) {
				best, bestDomain, bestKind, bestRank, bestLen = vh, d, kind, rank, len(d)
			}
		}
	}
	return best, bestDomain, bestKind
}

// matchDomain says which domain of the virtual host(s) matches host.
func matchDomain(vhs []*routev3.VirtualHost, host string) (string, string) {
	_, d, k := findVirtualHost(vhs, host)
	return d, k
}

func domainRank(d, host string) (int, string, bool) {
	switch {
	case d == host:
		return 0, "exact", true
	case d == "*":
		return 3, "any host", true
	case strings.HasPrefix(d, "*"):
		s := d[1:]
		return 1, "suffix wildcard", strings.HasSuffix(host, s) && len(host) > len(s)
	case strings.HasSuffix(d, "*"):
		p := d[:len(d)-1]
		return 2, "prefix wildcard", strings.HasPrefix(host, p) && len(host) > len(p)
	}
	return 0, "", false
}

// describeMatch renders a RouteMatch the way an operator reads a
// VirtualService match.
func describeMatch(m *routev3.RouteMatch) string {
	var parts []string
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		parts = append(parts, "path prefix "+quote(p.Prefix))
	case *routev3.RouteMatch_Path:
		parts = append(parts, "path "+quote(p.Path))
	case *routev3.RouteMatch_SafeRegex:
		parts = append(parts, "path regex "+quote(p.SafeRegex.GetRegex()))
	case *routev3.RouteMatch_PathSeparatedPrefix:
		parts = append(parts, "path segment prefix "+quote(p.PathSeparatedPrefix))
	case *routev3.RouteMatch_ConnectMatcher_:
		parts = append(parts, "CONNECT")
	}
	if m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue() {
		parts[len(parts)-1] += " (ignoring case)"
	}
	for _, h := range m.GetHeaders() {
		parts = append(parts, describeHeader(h))
	}
	for _, q := range m.GetQueryParameters() {
		s := "query " + q.GetName()
		switch {
		case q.GetPresentMatch():
			s += " present"
		case q.GetStringMatch() != nil:
			s += " " + describeString(q.GetStringMatch())
		}
		parts = append(parts, s)
	}
	if m.GetGrpc() != nil {
		parts = append(parts, "gRPC requests")
	}
	return strings.Join(parts, ", ")
}

func describeHeader(h *routev3.HeaderMatcher) string {
	name := h.GetName()
	switch name {
	case ":method":
		name = "method"
	case ":authority":
		name = "authority"
	case ":scheme":
		name = "scheme"
	}
	var s string
	switch v := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		s = "present"
		if !v.PresentMatch {
			s = "absent"
		}
	case *routev3.HeaderMatcher_StringMatch:
		s = describeString(v.StringMatch)
	case *routev3.HeaderMatcher_ExactMatch:
		s = "= " + quote(v.ExactMatch)
	case *routev3.HeaderMatcher_PrefixMatch:
		s = "prefix " + quote(v.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		s = "suffix " + quote(v.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		s = "contains " + quote(v.ContainsMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		s = "regex " + quote(v.SafeRegexMatch.GetRegex())
	case *routev3.HeaderMatcher_RangeMatch:
		s = fmt.Sprintf("in [%d, %d)", v.RangeMatch.GetStart(), v.RangeMatch.GetEnd())
	}
	if strings.HasPrefix(h.GetName(), ":") {
		name = strings.TrimPrefix(name, ":")
	} else {
		name = "header " + name
	}
	if h.GetInvertMatch() {
		return name + " not " + s
	}
	return name + " " + s
}

func describeString(m *matcherv3.StringMatcher) string {
	var s string
	switch v := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s = "= " + quote(v.Exact)
	case *matcherv3.StringMatcher_Prefix:
		s = "prefix " + quote(v.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		s = "suffix " + quote(v.Suffix)
	case *matcherv3.StringMatcher_Contains:
		s = "contains " + quote(v.Contains)
	case *matcherv3.StringMatcher_SafeRegex:
		s = "regex " + quote(v.SafeRegex.GetRegex())
	}
	if m.GetIgnoreCase() {
		s += " (ignoring case)"
	}
	return s
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
