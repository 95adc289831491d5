package analyze

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
)

// analyzeSchema runs the config store's validation. The store refuses
// invalid objects, so this matters for -f files (weights not summing to
// 100, bad names, ...) checked before they are applied.
func analyzeSchema(x *index) []Finding {
	var out []Finding
	for _, o := range x.all {
		out = append(out, ValidationFindings(o.Kind, o.Meta.Namespace, o.Meta.Name, config.Validate(o))...)
	}
	return out
}

// ValidationFindings turns a validation or decoding error into IST0106
// findings: one per field of a *config.ValidationError, else one for the
// whole resource. kind, namespace and name identify the resource when the
// error does not.
func ValidationFindings(kind, namespace, name string, err error) []Finding {
	if err == nil {
		return nil
	}
	var ve *config.ValidationError
	if errors.As(err, &ve) && len(ve.Errors) > 0 {
		if ve.Kind != "" {
			kind, namespace, name = ve.Kind, ve.Namespace, ve.Name
		}
		if name == "" {
			name = "(no name)"
		}
		out := make([]Finding, 0, len(ve.Errors))
		for _, fe := range ve.Errors {
			out = append(out, Finding{Code: CodeSchemaValidationError, Level: Error, Kind: kind, Namespace: namespace, Name: name, Path: fe.Field,
				Message: "Schema validation error: " + fe.Reason,
				Fix:     fmt.Sprintf("correct %s: the control plane refuses the whole resource until it is valid", fe.Field)})
		}
		return out
	}
	return []Finding{{Code: CodeSchemaValidationError, Level: Error, Kind: kind, Namespace: namespace, Name: name,
		Message: "Schema validation error: " + err.Error(),
		Fix:     "correct the resource: the control plane refuses it until it is valid"}}
}

// analyzeConflictingVirtualServices reports VirtualServices of one
// namespace that bind the same host to the same gateway. For the mesh,
// a sidecar uses only one VirtualService per host (the oldest), so the
// others are silently ignored (Istio's IST0109). For a Gateway, routes
// are merged, oldest VirtualService first, so the younger one only gets
// requests the older one does not match; a catch-all in the older one
// leaves it nothing.
func analyzeConflictingVirtualServices(x *index) []Finding {
	type key struct{ ns, gateway, host string }
	groups := map[key][]*vsEntry{}
	var keys []key
	for _, vs := range x.vss { // precedence order: the first of a group wins
		ns := vs.obj.Meta.Namespace
		gws := vs.spec.GetGateways()
		if len(gws) == 0 {
			gws = []string{meshGateway}
		}
		seen := map[key]bool{}
		for _, g := range gws {
			for _, h := range vs.spec.GetHosts() {
				k := key{ns, resolveGateway(g, ns), x.resolveHost(h, ns)}
				if seen[k] {
					continue
				}
				seen[k] = true
				if groups[k] == nil {
					keys = append(keys, k)
				}
				groups[k] = append(groups[k], vs)
			}
		}
	}
	var out []Finding
	for _, k := range keys {
		vss := groups[k]
		if len(vss) < 2 {
			continue
		}
		names := make([]string, len(vss))
		for i, vs := range vss {
			names[i] = vs.obj.Meta.Namespace + "/" + vs.obj.Meta.Name
		}
		if k.gateway == meshGateway {
			list := strings.Join(names, ",")
			for _, vs := range vss {
				out = append(out, finding(vs.obj, CodeConflictingMeshGatewayVirtualServiceHosts, Error, hostPath(x, vs, k.host),
					fmt.Sprintf("The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.", list, k.host),
					fmt.Sprintf("merge them into one VirtualService; meanwhile sidecars use %s (the oldest) for this host and ignore the others", names[0])))
			}
			continue
		}
		first := vss[0]
		for _, vs := range vss[1:] {
			msg := fmt.Sprintf("VirtualServices %s bind host %s to gateway %s: their routes are merged, %s's (the oldest) first, so %s gets only the requests %s does not match",
				strings.Join(names, ","), k.host, k.gateway, names[0], vs.obj.Meta.Namespace+"/"+vs.obj.Meta.Name, names[0])
			if i := catchAllRule(first); i >= 0 {
				msg += fmt.Sprintf("; its rule %s matches every request, so none of its routes is used", routeName(first.spec.GetHttp()[i], i))
			}
			out = append(out, finding(vs.obj, CodeConflictingGatewayVirtualServiceHosts, Warning, hostPath(x, vs, k.host), msg,
				"merge them into one VirtualService with the routes in the intended order, or give each its own host"))
		}
	}
	return out
}

// catchAllRule returns the index of the first http rule of vs that takes
// every request (no match, or a match without conditions), or -1.
func catchAllRule(vs *vsEntry) int {
	every := &networking.HTTPMatchRequest{}
	return slices.IndexFunc(vs.spec.GetHttp(), func(r *networking.HTTPRoute) bool {
		return r != nil && (len(r.GetMatch()) == 0 || slices.ContainsFunc(r.GetMatch(), func(m *networking.HTTPMatchRequest) bool { return matchCovers(m, every) }))
	})
}

// hostPath is the path of the host entry of vs that resolves to host.
func hostPath(x *index, vs *vsEntry, host string) string {
	for i, h := range vs.spec.GetHosts() {
		if x.resolveHost(h, vs.obj.Meta.Namespace) == host {
			return fmt.Sprintf("spec.hosts[%d]", i)
		}
	}
	return "spec.hosts"
}
