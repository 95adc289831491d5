package analyze

import (
	"fmt"
	"github.com/amime-mesh/amime/internal/registry"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
)

// destination is one destination a VirtualService sends traffic to.
type destination struct {
	path string // of the Destination message
	d    *networking.Destination
}

// destinations lists every destination of a VirtualService: http routes,
// mirrors, tcp and tls routes.
func destinations(vs *networking.VirtualService) []destination {
	var out []destination
	for i, r := range vs.GetHttp() {
		p := fmt.Sprintf("spec.http[%d]", i)
		for j, rd := range r.GetRoute() {
			out = append(out, destination{fmt.Sprintf("%s.route[%d].destination", p, j), rd.GetDestination()})
		}
		if r.GetMirror() != nil {
			out = append(out, destination{p + ".mirror", r.GetMirror()})
		}
		for j, m := range r.GetMirrors() {
			out = append(out, destination{fmt.Sprintf("%s.mirrors[%d].destination", p, j), m.GetDestination()})
		}
	}
	for i, r := range vs.GetTcp() {
		for j, rd := range r.GetRoute() {
			out = append(out, destination{fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), rd.GetDestination()})
		}
	}
	for i, r := range vs.GetTls() {
		for j, rd := range r.GetRoute() {
			out = append(out, destination{fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), rd.GetDestination()})
		}
	}
	return out
}

// analyzeDestinationHosts reports destinations whose host no service in
// the registry provides: the proxy has no cluster for it and answers 503
// (NC), or sends it out of the mesh under ALLOW_ANY.
func analyzeDestinationHosts(x *index) []Finding {
	var out []Finding
	for _, vs := range x.vss {
		ns := vs.obj.Meta.Namespace
		for _, d := range destinations(vs.spec) {
			written := d.d.GetHost()
			host := x.resolveHost(written, ns)
			if host == "" || registry.IsWildcard(host) || x.service(host, ns) != nil {
				continue // empty and wildcard hosts are validation's
			}
			out = append(out, finding(vs.obj, CodeReferencedResourceNotFound, Error, d.path+".host",
				fmt.Sprintf("Referenced host not found: %q", written),
				fmt.Sprintf("declare %s with a ServiceEntry (a WorkloadEntry per instance), or route to an existing service", host)))
		}
	}
	return out
}

// analyzeDestinationSubsets reports destinations naming a subset that the
// DestinationRule applying to the host does not define: the cluster does
// not exist and requests get 503 (NC, "no healthy upstream"). Hosts with
// no service are left to analyzeDestinationHosts.
func analyzeDestinationSubsets(x *index) []Finding {
	var out []Finding
	for _, vs := range x.vss {
		ns := vs.obj.Meta.Namespace
		for _, d := range destinations(vs.spec) {
			subset := d.d.GetSubset()
			written := d.d.GetHost()
			host := x.resolveHost(written, ns)
			if subset == "" || host == "" || registry.IsWildcard(host) {
				continue
			}
			// An unknown host is reported once, as such: creating a
			// DestinationRule would not fix it.
			svc := x.service(host, ns)
			if svc == nil {
				continue
			}
			// Clients are assumed in the VirtualService's namespace, the
			// usual case; the service's namespace is the next place looked.
			dr := x.destinationRule(host, ns, svc.Namespace)
			var fix string
			if dr != nil {
				names := make([]string, 0, len(dr.spec.GetSubsets()))
				found := false
				for _, s := range dr.spec.GetSubsets() {
					names = append(names, s.GetName())
					found = found || s.GetName() == subset
				}
				if found {
					continue
				}
				fix = fmt.Sprintf("add subset %s to %s, or route to an existing subset", subset, ref(dr.obj))
				if len(names) > 0 {
					fix += " (" + strings.Join(names, ", ") + ")"
				}
			} else {
				fix = fmt.Sprintf("create a DestinationRule for host %s with subset %s, or remove the subset", host, subset)
			}
			out = append(out, finding(vs.obj, CodeReferencedResourceNotFound, Error, d.path+".subset",
				fmt.Sprintf("Referenced host+subset in destinationrule not found: %q", written+"+"+subset), fix))
		}
	}
	return out
}

// analyzeSubsetWorkloads reports DestinationRule subsets whose labels
// match no endpoint of the host: routing to them gives 503 (UH, "no
// healthy upstream"). Hosts without any endpoint are skipped (DNS
// services, or workloads not registered yet): the subset is not the
// problem there.
func analyzeSubsetWorkloads(x *index) []Finding {
	var out []Finding
	for _, dr := range x.drs {
		if dr.host == "" || registry.IsWildcard(dr.host) {
			continue
		}
		svc := x.reg.Lookup(dr.host, dr.obj.Meta.Namespace)
		if svc == nil {
			continue
		}
		var all []map[string]string
		for _, p := range svc.Ports {
			for _, e := range svc.Endpoints(p.Number, nil) {
				all = append(all, e.Labels)
			}
		}
		if len(all) == 0 {
			continue
		}
		for i, s := range dr.spec.GetSubsets() {
			sel := s.GetLabels()
			if len(sel) == 0 {
				continue
			}
			matched := false
			for _, l := range all {
				if hasLabels(l, sel) {
					matched = true
					break
				}
			}
			if matched {
				continue
			}
			out = append(out, finding(dr.obj, CodeSubsetSelectsNoWorkload, Warning, fmt.Sprintf("spec.subsets[%d].labels", i),
				fmt.Sprintf("Subset %q selects no workload of %s: no endpoint has labels %s", s.GetName(), dr.host, selectorString(sel)),
				fmt.Sprintf("change the labels to match a workload (endpoints have %s), or start a workload with %s",
					presentLabels(all, sel), selectorString(sel))))
		}
	}
	return out
}

// presentLabels lists the distinct values the endpoints have for the
// selector's keys ("version=v1; version=v2"), so the fix shows what exists.
func presentLabels(all []map[string]string, sel map[string]string) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range all {
		sub := map[string]string{}
		for k := range sel {
			if v, ok := l[k]; ok {
				sub[k] = v
			}
		}
		s := selectorString(sub)
		if s == "" {
			s = "none of these labels"
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// ref names an object without its kind's group: "DestinationRule default/reviews".
func ref(o *config.Object) string {
	return o.Kind + " " + o.Meta.Namespace + "/" + o.Meta.Name
}
