package analyze

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/amime-mesh/amime/internal/registry"
)

// meshGateway is the reserved gateway name for sidecars.
const meshGateway = "mesh"

// resolveHost expands a short name relative to the object's namespace, as
// the translator (and Istio's ResolveShortnameToFQDN) does: "reviews" ->
// "reviews.<ns>.svc.<suffix>"; names with a dot, "*" and IPs stay.
func (x *index) resolveHost(h, ns string) string {
	h = strings.ToLower(h)
	if h == "" || h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h
	}
	return h + "." + ns + ".svc." + x.in.DomainSuffix
}

// resolveGateway qualifies a gateway name with the object's namespace, as
// the translator does: "gw" -> "<ns>/gw"; "mesh" stays.
func resolveGateway(g, ns string) string {
	if g == meshGateway || strings.Contains(g, "/") {
		return g
	}
	return ns + "/" + g
}

// service finds the service a client in namespace ns reaches by host: the
// registry's lookup, else a visible wildcard ServiceEntry host covering it
// (*.example.com serves api.example.com).
func (x *index) service(host, ns string) *registry.Service {
	if s := x.reg.Lookup(host, ns); s != nil {
		return s
	}
	for _, s := range x.reg.Services() {
		if registry.IsWildcard(s.Hostname) && registry.HostCovers(s.Hostname, host) && s.VisibleFrom(ns) {
			return s
		}
	}
	return nil
}

// destinationRule finds the rule that applies to host for a client in
// clientNS, as the translator does: the client's namespace first, then the
// service's, then the root namespace; within one, an exact host beats the
// most specific wildcard, and the oldest rule wins a tie.
func (x *index) destinationRule(host, clientNS, svcNS string) *drEntry {
	for _, ns := range []string{clientNS, svcNS, x.in.RootNamespace} {
		var best *drEntry
		for _, dr := range x.drs {
			if dr.obj.Meta.Namespace != ns || !registry.Visible(dr.spec.GetExportTo(), ns, clientNS) || !registry.HostCovers(dr.host, host) {
				continue
			}
			if dr.host == host {
				return dr
			}
			if best == nil || len(dr.host) > len(best.host) {
				best = dr
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// selectorString renders labels as Kubernetes prints a selector:
// "app=x,version=v1", keys sorted.
func selectorString(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
