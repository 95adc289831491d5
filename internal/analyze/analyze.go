// Package analyze finds mistakes in Istio configuration that the config
// store accepts but that break traffic or do nothing: routes to subsets no
// DestinationRule defines, hosts with no service, shadowed routes, subsets
// and gateway selectors that select nothing, references to unknown
// Gateways, VirtualServices that conflict. It is amime's `istioctl analyze`.
//
// Analyze is a pure function of its Input (objects, registry, gateway
// proxy labels), so the CLI runs it over server state merged with local
// files, and the control plane can run it too. Codes are Istio's where
// Istio has a message for the problem (IST0xxx, same level and wording, so
// habits and tooling carry over) and amime's own (AM0xxx) otherwise.
package analyze

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Level is a finding's severity.
type Level int

// Levels, least severe first.
const (
	Info Level = iota
	Warning
	Error
)

func (l Level) String() string {
	switch l {
	case Error:
		return "Error"
	case Warning:
		return "Warning"
	}
	return "Info"
}

// MarshalText writes the level as its name, for -o json.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level name, case-insensitively.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	*l = v
	return err
}

// ParseLevel reads Error, Warning or Info, case-insensitively.
func ParseLevel(s string) (Level, error) {
	for _, l := range []Level{Error, Warning, Info} {
		if strings.EqualFold(s, l.String()) {
			return l, nil
		}
	}
	return Info, fmt.Errorf("unknown level %q (want Error, Warning or Info)", s)
}

// Codes. Istio's keep Istio's numbers and levels.
const (
	// CodeReferencedResourceNotFound (Error): a host, host+subset,
	// gateway or gateway selector that nothing provides.
	CodeReferencedResourceNotFound = "IST0101"
	// CodeSchemaValidationError (Error): the resource fails validation.
	CodeSchemaValidationError = "IST0106"
	// CodeConflictingMeshGatewayVirtualServiceHosts (Error): two
	// VirtualServices of a namespace bind one host to the mesh.
	CodeConflictingMeshGatewayVirtualServiceHosts = "IST0109"
	// CodeVirtualServiceUnreachableRule (Warning): an http rule no
	// request reaches.
	CodeVirtualServiceUnreachableRule = "IST0130"
	// CodeVirtualServiceIneffectiveMatch (Info): a match an earlier rule
	// already takes.
	CodeVirtualServiceIneffectiveMatch = "IST0131"
	// CodeConflictingGateways (Error): Gateways with the same selector
	// declare the same port and host.
	CodeConflictingGateways = "IST0145"

	// CodeSubsetSelectsNoWorkload (Warning): a DestinationRule subset
	// whose labels match no endpoint of its host; requests get 503 (UH).
	CodeSubsetSelectsNoWorkload = "AM0101"
	// CodeGatewaySelectorUnchecked (Info): gateway proxy labels are not
	// known, so a Gateway's selector could not be checked.
	CodeGatewaySelectorUnchecked = "AM0102"
	// CodeConflictingGatewayVirtualServiceHosts (Warning): two
	// VirtualServices of a namespace bind one host to one Gateway; their
	// routes are merged, oldest first.
	CodeConflictingGatewayVirtualServiceHosts = "AM0103"
)

// Finding is one problem in one resource.
type Finding struct {
	Code  string `json:"code"`
	Level Level  `json:"level"`
	// Kind, Namespace and Name identify the resource. A document that
	// could not be decoded has no Kind; Name then says where it is.
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Path is the field, with the JSON names the user wrote
	// (spec.http[0].route[0].destination.subset).
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
	// Fix says what to change.
	Fix string `json:"fix,omitempty"`
}

// Origin names the resource as istioctl does: "VirtualService default/reviews".
func (f Finding) Origin() string {
	if f.Kind == "" {
		return f.Name
	}
	if f.Namespace == "" {
		return f.Kind + " " + f.Name
	}
	return f.Kind + " " + f.Namespace + "/" + f.Name
}

// String renders the finding as istioctl analyze does, with the field path
// where istioctl puts the file and line:
//
//	Error [IST0101] (VirtualService default/reviews spec.http[0]...) Referenced .... Fix: ...
func (f Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s] (%s", f.Level, f.Code, f.Origin())
	if f.Path != "" {
		b.WriteString(" " + f.Path)
	}
	b.WriteString(") " + f.Message)
	if f.Fix != "" {
		if !strings.HasSuffix(f.Message, ".") {
			b.WriteByte('.')
		}
		b.WriteString(" Fix: " + f.Fix)
	}
	return b.String()
}

// GatewayProxy is a connected gateway (router) proxy.
type GatewayProxy struct {
	ID     string
	Labels map[string]string
}

// Input is what the analyzers read.
type Input struct {
	// Objects is the configuration: every kind, every namespace (a
	// reference may cross namespaces even when only one is reported).
	Objects []*config.Object
	// Registry is the service registry; nil builds it from the
	// ServiceEntries and WorkloadEntries of Objects.
	Registry *registry.Registry
	// GatewayProxies are the connected gateway proxies, valid only when
	// GatewayLabelsKnown: otherwise Gateway selectors are not checked
	// (reported at Info level), since "no match" would be a guess.
	GatewayProxies     []GatewayProxy
	GatewayLabelsKnown bool
	// DomainSuffix expands short hostnames ("reviews" ->
	// "reviews.<ns>.svc.<suffix>"); "" means cluster.local.
	DomainSuffix string
	// RootNamespace holds mesh-wide DestinationRules; "" means istio-system.
	RootNamespace string
}

// analyzer is one check. Each reads the shared index and returns its
// findings in any order; Analyze sorts.
type analyzer func(*index) []Finding

// analyzers run in this order (the output is sorted anyway).
var analyzers = []analyzer{
	analyzeSchema,
	analyzeDestinationHosts,
	analyzeDestinationSubsets,
	analyzeShadowedRoutes,
	analyzeSubsetWorkloads,
	analyzeGatewaySelectors,
	analyzeGatewayReferences,
	analyzeConflictingVirtualServices,
	analyzeConflictingGateways,
}

// Analyze runs every analyzer and returns the findings sorted as istioctl
// sorts them: by level (Error first), code, resource, field, message.
func Analyze(in Input) []Finding {
	x := newIndex(in)
	var out []Finding
	for _, a := range analyzers {
		out = append(out, a(x)...)
	}
	Sort(out)
	return out
}

// Sort orders findings deterministically: level (most severe first), code,
// kind, namespace, name, path, message.
func Sort(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(b.Level, a.Level),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// index holds the objects by kind, each list sorted by Istio precedence
// (oldest first, then namespace and name), with typed specs.
type index struct {
	in     Input
	reg    *registry.Registry
	vss    []*vsEntry
	drs    []*drEntry
	gws    []*gwEntry
	gwKeys map[string]bool // "namespace/name" of every Gateway
	all    []*config.Object
}

type vsEntry struct {
	obj  *config.Object
	spec *networking.VirtualService
}

type drEntry struct {
	obj  *config.Object
	spec *networking.DestinationRule
	host string // resolved FQDN, lower-case
}

type gwEntry struct {
	obj  *config.Object
	spec *networking.Gateway
}

func newIndex(in Input) *index {
	if in.DomainSuffix == "" {
		in.DomainSuffix = "cluster.local"
	}
	if in.RootNamespace == "" {
		in.RootNamespace = "istio-system"
	}
	x := &index{in: in, reg: in.Registry, gwKeys: map[string]bool{}}
	x.all = precedence(in.Objects)
	var ses, wes []*config.Object
	for _, o := range x.all {
		switch s := o.Spec.(type) {
		case *networking.VirtualService:
			x.vss = append(x.vss, &vsEntry{o, s})
		case *networking.DestinationRule:
			x.drs = append(x.drs, &drEntry{o, s, x.resolveHost(s.GetHost(), o.Meta.Namespace)})
		case *networking.Gateway:
			x.gws = append(x.gws, &gwEntry{o, s})
			x.gwKeys[o.Meta.Namespace+"/"+o.Meta.Name] = true
		case *networking.ServiceEntry:
			ses = append(ses, o)
		case *networking.WorkloadEntry:
			wes = append(wes, o)
		}
	}
	if x.reg == nil {
		x.reg = registry.Build(ses, wes, nil)
	}
	return x
}

// precedence orders objects as Istio gives precedence: oldest first, then
// by namespace and name; the kind breaks remaining ties so the order is
// total.
func precedence(in []*config.Object) []*config.Object {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b *config.Object) int {
		return cmp.Or(
			a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp),
			cmp.Compare(a.Meta.Namespace, b.Meta.Namespace),
			cmp.Compare(a.Meta.Name, b.Meta.Name),
			cmp.Compare(a.Kind, b.Kind),
		)
	})
	return out
}

// finding starts a finding about o.
func finding(o *config.Object, code string, level Level, path, msg, fix string) Finding {
	return Finding{Code: code, Level: level, Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name, Path: path, Message: msg, Fix: fix}
}
