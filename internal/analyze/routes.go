package analyze

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// analyzeShadowedRoutes reports http rules and matches that no request
// reaches because an earlier rule takes every request they would match:
// the proxy tries rules in order and stops at the first match, so a
// catch-all (a rule without match, or uri prefix "/") placed first hides
// everything after it. Istio's rules (IST0130 for a rule after a rule
// without match, IST0131 for a duplicate match) are extended to matches
// an earlier match covers (prefix "/api" hides prefix "/api/v1" with the
// same other conditions).
func analyzeShadowedRoutes(x *index) []Finding {
	var out []Finding
	for _, vs := range x.vss {
		routes := vs.spec.GetHttp()
		type prior struct {
			m    *networking.HTTPMatchRequest
			rule int
		}
		var seen []prior
		noMatch := -1  // first rule without match
		catchAll := -1 // first rule with a match that takes every request
		for i, r := range routes {
			if r == nil {
				continue
			}
			p := fmt.Sprintf("spec.http[%d]", i)
			if noMatch >= 0 {
				reason := "route without matches defined before"
				if len(r.GetMatch()) == 0 {
					reason = "only the last rule can have no matches"
				}
				out = append(out, finding(vs.obj, CodeVirtualServiceUnreachableRule, Warning, p,
					fmt.Sprintf("VirtualService rule %s not used (%s).", routeName(r, i), reason),
					fmt.Sprintf("rule %s has no match, so it takes every request: give it a match, or move it last", routeName(routes[noMatch], noMatch))))
				continue
			}
			if len(r.GetMatch()) == 0 {
				if catchAll >= 0 {
					out = append(out, finding(vs.obj, CodeVirtualServiceUnreachableRule, Warning, p,
						fmt.Sprintf("VirtualService rule %s not used (rule %s matches every request).", routeName(r, i), routeName(routes[catchAll], catchAll)),
						fmt.Sprintf("remove rule %s, or narrow rule %s's match", routeName(r, i), routeName(routes[catchAll], catchAll))))
					continue
				}
				noMatch = i
				continue
			}
			shadowed, first := 0, -1
			var mine []*networking.HTTPMatchRequest
			for j, m := range r.GetMatch() {
				k := slices.IndexFunc(seen, func(s prior) bool { return matchCovers(s.m, m) })
				if k < 0 {
					mine = append(mine, m)
					continue
				}
				dup := seen[k].rule
				if first < 0 {
					first = dup
				}
				shadowed++
				out = append(out, finding(vs.obj, CodeVirtualServiceIneffectiveMatch, Info, fmt.Sprintf("%s.match[%d]", p, j),
					fmt.Sprintf("VirtualService rule %s match %s is not used (duplicate/overlapping match in rule %s).", routeName(r, i), matchName(m, j), routeName(routes[dup], dup)),
					fmt.Sprintf("move rule %s before rule %s (most specific first), or remove this match", routeName(r, i), routeName(routes[dup], dup))))
			}
			if shadowed == len(r.GetMatch()) {
				out = append(out, finding(vs.obj, CodeVirtualServiceUnreachableRule, Warning, p,
					fmt.Sprintf("VirtualService rule %s not used (all matches used by prior rules).", routeName(r, i)),
					fmt.Sprintf("move rule %s before rule %s (most specific first), or remove it", routeName(r, i), routeName(routes[first], first))))
			}
			// Matches of one rule share its action, so overlaps within a
			// rule are harmless: compare only with earlier rules.
			for _, m := range mine {
				seen = append(seen, prior{m, i})
				if catchAll < 0 && matchCovers(m, &networking.HTTPMatchRequest{}) {
					catchAll = i
				}
			}
		}
	}
	return out
}

// routeName and matchName name a rule as Istio's messages do: its name
// quoted, else "#<index>".
func routeName(r *networking.HTTPRoute, i int) string {
	if n := r.GetName(); n != "" {
		return fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf("#%d", i)
}

func matchName(m *networking.HTTPMatchRequest, j int) string {
	if n := m.GetName(); n != "" {
		return fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf("#%d", j)
}

// matchCovers reports whether every request b matches is also matched by
// a: each condition of a holds whenever b's do. It errs towards false
// (b's extra conditions only narrow it; lists must be equal), so a report
// is always right.
func matchCovers(a, b *networking.HTTPMatchRequest) bool {
	return uriCovers(a, b) &&
		sameOrUnset(a.GetScheme(), b.GetScheme()) &&
		sameOrUnset(a.GetMethod(), b.GetMethod()) &&
		sameOrUnset(a.GetAuthority(), b.GetAuthority()) &&
		stringMatchesCover(a.GetHeaders(), b.GetHeaders()) &&
		stringMatchesCover(a.GetQueryParams(), b.GetQueryParams()) &&
		stringMatchesCover(a.GetWithoutHeaders(), b.GetWithoutHeaders()) &&
		(a.GetPort() == 0 || a.GetPort() == b.GetPort()) &&
		hasLabels(b.GetSourceLabels(), a.GetSourceLabels()) &&
		(len(a.GetGateways()) == 0 || len(b.GetGateways()) > 0 && subset(b.GetGateways(), a.GetGateways())) &&
		(a.GetSourceNamespace() == "" || a.GetSourceNamespace() == b.GetSourceNamespace())
}

func uriCovers(a, b *networking.HTTPMatchRequest) bool {
	au, bu := a.GetUri(), b.GetUri()
	if au == nil || matchesEveryPath(au) {
		return true
	}
	if bu == nil || b.GetIgnoreUriCase() && !a.GetIgnoreUriCase() {
		return false
	}
	norm := func(s string) string {
		if a.GetIgnoreUriCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch {
	case au.GetPrefix() != "":
		q := bu.GetPrefix() + bu.GetExact()
		return (bu.GetPrefix() != "" || bu.GetExact() != "") && strings.HasPrefix(norm(q), norm(au.GetPrefix()))
	case au.GetExact() != "":
		return bu.GetExact() != "" && norm(bu.GetExact()) == norm(au.GetExact())
	}
	return proto.Equal(au, bu)
}

// matchesEveryPath: prefix "" or "/", regex ".*" or "/.*".
func matchesEveryPath(sm *networking.StringMatch) bool {
	switch m := sm.GetMatchType().(type) {
	case *networking.StringMatch_Prefix:
		return m.Prefix == "" || m.Prefix == "/"
	case *networking.StringMatch_Regex:
		return m.Regex == ".*" || m.Regex == "/.*"
	}
	return false
}

func sameOrUnset(a, b *networking.StringMatch) bool { return a == nil || proto.Equal(a, b) }

func stringMatchesCover(a, b map[string]*networking.StringMatch) bool {
	for k, v := range a {
		w, ok := b[k]
		if !ok || !proto.Equal(v, w) {
			return false
		}
	}
	return true
}

// subset reports whether every element of small is in big.
func subset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return true
}
