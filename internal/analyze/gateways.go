package analyze

import (
	"fmt"
	"github.com/amime-mesh/amime/internal/registry"
	"maps"
	"slices"
	"strings"
)

// analyzeGatewaySelectors reports Gateways whose selector matches no
// connected gateway proxy: no listener serves them (Istio reports the
// same against gateway pods). When the control plane does not report
// proxy labels, nothing can be matched; that is said at Info level rather
// than guessed.
func analyzeGatewaySelectors(x *index) []Finding {
	var out []Finding
	for _, gw := range x.gws {
		sel := gw.spec.GetSelector()
		if len(sel) == 0 {
			continue // selects every gateway proxy
		}
		s := selectorString(sel)
		if !x.in.GatewayLabelsKnown {
			out = append(out, finding(gw.obj, CodeGatewaySelectorUnchecked, Info, "spec.selector",
				fmt.Sprintf("Selector %q not checked: the labels of gateway proxies are not available", s),
				fmt.Sprintf("check that a gateway proxy with these labels is connected (amime proxy-status; amime proxy --mode gateway --labels %s)", s)))
			continue
		}
		if slices.ContainsFunc(x.in.GatewayProxies, func(p GatewayProxy) bool { return hasLabels(p.Labels, sel) }) {
			continue
		}
		out = append(out, finding(gw.obj, CodeReferencedResourceNotFound, Error, "spec.selector",
			fmt.Sprintf("Referenced selector not found: %q", s),
			fmt.Sprintf("start a gateway proxy with these labels (amime proxy --mode gateway --labels %s), or change the selector to a connected gateway's labels", s)))
	}
	return out
}

// analyzeGatewayReferences reports VirtualServices bound to a Gateway
// that does not exist ("mesh" is reserved for sidecars): their routes are
// served nowhere.
func analyzeGatewayReferences(x *index) []Finding {
	var out []Finding
	for _, vs := range x.vss {
		ns := vs.obj.Meta.Namespace
		check := func(path, g string) {
			full := resolveGateway(g, ns)
			if full == meshGateway || x.gwKeys[full] {
				return
			}
			fix := fmt.Sprintf("create Gateway %s, or fix the name", full)
			// The usual slip: a Gateway of another namespace named without
			// its namespace.
			if !strings.Contains(g, "/") {
				var other []string
				for k := range x.gwKeys {
					if _, name, _ := strings.Cut(k, "/"); name == g {
						other = append(other, k)
					}
				}
				if len(other) > 0 {
					slices.Sort(other)
					fix = fmt.Sprintf("a Gateway of another namespace is named namespace/name: use %s", strings.Join(other, " or "))
				}
			}
			out = append(out, finding(vs.obj, CodeReferencedResourceNotFound, Error, path,
				fmt.Sprintf("Referenced gateway not found: %q", g), fix))
		}
		for i, g := range vs.spec.GetGateways() {
			check(fmt.Sprintf("spec.gateways[%d]", i), g)
		}
		for i, r := range vs.spec.GetHttp() {
			for j, m := range r.GetMatch() {
				for k, g := range m.GetGateways() {
					check(fmt.Sprintf("spec.http[%d].match[%d].gateways[%d]", i, j, k), g)
				}
			}
		}
	}
	return out
}

// analyzeConflictingGateways reports Gateways that select the same
// workloads (equal selectors) and declare the same port with overlapping
// hosts: which one serves a request is undefined (Istio's IST0145).
func analyzeConflictingGateways(x *index) []Finding {
	type key struct {
		selector string
		port     uint32
	}
	type claim struct {
		gw    *gwEntry
		hosts []string // host part of "ns/host", lower-case
	}
	claims := map[key][]claim{}
	var keys []key
	for _, gw := range x.gws {
		sel := selectorString(gw.spec.GetSelector())
		for _, s := range gw.spec.GetServers() {
			k := key{sel, s.GetPort().GetNumber()}
			var hosts []string
			for _, h := range s.GetHosts() {
				if _, host, ok := strings.Cut(h, "/"); ok {
					h = host
				}
				hosts = append(hosts, strings.ToLower(h))
			}
			if _, ok := claims[k]; !ok {
				keys = append(keys, k)
			}
			claims[k] = append(claims[k], claim{gw, hosts})
		}
	}
	var out []Finding
	for _, k := range keys {
		cs := claims[k]
		// conflicts[gateway] = other gateways and the hosts they share.
		type conflict struct {
			others map[string]bool
			hosts  map[string]bool
		}
		conflicts := map[*gwEntry]*conflict{}
		for i, a := range cs {
			for _, b := range cs[i+1:] {
				if a.gw == b.gw {
					continue
				}
				shared := overlappingHosts(a.hosts, b.hosts)
				if len(shared) == 0 {
					continue
				}
				for _, pair := range [][2]claim{{a, b}, {b, a}} {
					c := conflicts[pair[0].gw]
					if c == nil {
						c = &conflict{others: map[string]bool{}, hosts: map[string]bool{}}
						conflicts[pair[0].gw] = c
					}
					c.others[pair[1].gw.obj.Meta.Namespace+"/"+pair[1].gw.obj.Meta.Name] = true
					for _, h := range shared {
						c.hosts[h] = true
					}
				}
			}
		}
		for _, gw := range x.gws { // precedence order, for stable output
			c := conflicts[gw]
			if c == nil {
				continue
			}
			others := slices.Sorted(maps.Keys(c.others))
			hosts := slices.Sorted(maps.Keys(c.hosts))
			sel := k.selector
			if sel == "" {
				sel = "(all gateways)"
			}
			out = append(out, finding(gw.obj, CodeConflictingGateways, Error, "spec.servers",
				fmt.Sprintf("Conflict with gateways %s (workload selector %s, port %d, hosts %s).", strings.Join(others, ","), sel, k.port, strings.Join(hosts, ",")),
				"serve each host and port from one Gateway (merge the servers), or select different gateway proxies"))
		}
	}
	return out
}

// overlappingHosts returns, for each pair of hosts that overlap, the more
// specific one (the requests both would serve).
func overlappingHosts(a, b []string) []string {
	var out []string
	for _, h := range a {
		for _, g := range b {
			switch {
			case registry.HostCovers(h, g):
				out = append(out, g)
			case registry.HostCovers(g, h):
				out = append(out, h)
			}
		}
	}
	return out
}
