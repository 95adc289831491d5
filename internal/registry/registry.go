// Package registry is the service registry outside Kubernetes: it turns
// ServiceEntry and WorkloadEntry objects into services (hostname, ports,
// resolution, visibility) and their endpoints, the model the translator
// reads. A *Registry is an immutable snapshot: the control plane builds a
// new one whenever the objects or the health of a workload change.
//
// Semantics follow Istio's ServiceEntry controller: a ServiceEntry yields
// one service per host, with the same ports; its endpoints are the inline
// `endpoints` or, with `workloadSelector`, the WorkloadEntries of the same
// namespace whose labels contain the selector.
package registry

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
)

// TLSModeLabel marks a workload that runs a sidecar ("istio"), as Istio's
// injector and WorkloadEntry registration set it.
const TLSModeLabel = "security.istio.io/tlsMode"

// Protocol is a service port's protocol, upper-case as Istio spells it.
type Protocol string

// Protocols Istio knows. Unsupported is what an empty or unknown name
// parses to (Istio would sniff it).
const (
	HTTP        Protocol = "HTTP"
	HTTP2       Protocol = "HTTP2"
	GRPC        Protocol = "GRPC"
	GRPCWeb     Protocol = "GRPC-Web"
	HTTPS       Protocol = "HTTPS"
	TLS         Protocol = "TLS"
	TCP         Protocol = "TCP"
	UDP         Protocol = "UDP"
	Mongo       Protocol = "Mongo"
	Redis       Protocol = "Redis"
	MySQL       Protocol = "MySQL"
	Unsupported Protocol = "UnsupportedProtocol"
)

// ParseProtocol reads a protocol name case-insensitively, as Istio does.
func ParseProtocol(s string) Protocol {
	for _, p := range []Protocol{HTTP, HTTP2, GRPC, GRPCWeb, HTTPS, TLS, TCP, UDP, Mongo, Redis, MySQL} {
		if strings.EqualFold(s, string(p)) {
			return p
		}
	}
	return Unsupported
}

// IsHTTP reports whether the port carries plaintext HTTP (any version).
func (p Protocol) IsHTTP() bool {
	return p == HTTP || p == HTTP2 || p == GRPC || p == GRPCWeb
}

// IsHTTP2 reports whether upstream connections must speak HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == HTTP2 || p == GRPC }

// Port is one port of a service.
type Port struct {
	Name     string
	Number   uint32
	Protocol Protocol
	// TargetPort is where endpoints listen when they do not name a port
	// of their own; 0 means Number.
	TargetPort uint32
}

// Service is one hostname of a ServiceEntry.
type Service struct {
	Hostname   string // FQDN, lower-case; may be a wildcard ("*.example.com")
	Namespace  string
	Ports      []Port // sorted by number
	Resolution networking.ServiceEntry_Resolution
	Location   networking.ServiceEntry_Location
	Addresses  []string // VIPs
	// ExportTo lists the namespaces that see the service: "*" all, "."
	// its own, "~" none, or names. Never empty ("*" by default).
	ExportTo        []string
	SubjectAltNames []string
	// Source is the ServiceEntry the service comes from.
	Source config.Key

	endpoints map[uint32][]*Endpoint // by service port number
}

// Endpoint is one instance of a service on one service port.
type Endpoint struct {
	// Address is an IP, or a hostname for DNS resolution.
	Address string
	// Port is where to connect for the service port the endpoint is
	// listed under.
	Port           uint32
	Labels         map[string]string // shared, read-only
	Weight         uint32            // >= 1
	Locality       string            // region/zone/subzone
	ServiceAccount string
	Network        string
	// Healthy is false for a self-registered workload whose heartbeats
	// stopped: it stays listed but receives no traffic.
	Healthy bool
	// Sidecar is true when the workload runs a proxy (TLSModeLabel=istio).
	Sidecar bool
	// WorkloadEntry is the entry the endpoint comes from; nil for a
	// ServiceEntry's inline endpoints.
	WorkloadEntry *config.Key
}

// Port returns the service port with that number.
func (s *Service) Port(number uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == number {
			return p, true
		}
	}
	return Port{}, false
}

// VisibleFrom reports whether a proxy in namespace ns sees the service.
func (s *Service) VisibleFrom(ns string) bool { return Visible(s.ExportTo, s.Namespace, ns) }

// Visible applies Istio's exportTo rules: a config object in namespace
// owner with exportTo (empty means "*") is visible from namespace ns.
func Visible(exportTo []string, owner, ns string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if ns == owner {
				return true
			}
		case "~":
		default:
			if e == ns {
				return true
			}
		}
	}
	return false
}

// Endpoints returns the endpoints of a service port whose labels contain
// subset (nil: all), sorted by address and port. The slice is shared.
func (s *Service) Endpoints(port uint32, subset map[string]string) []*Endpoint {
	all := s.endpoints[port]
	if len(subset) == 0 {
		return all
	}
	var out []*Endpoint
	for _, e := range all {
		if hasLabels(e.Labels, subset) {
			out = append(out, e)
		}
	}
	return out
}

// HealthSource tells whether a WorkloadEntry is alive. Leases implements it.
type HealthSource interface {
	Healthy(workloadEntry config.Key) bool
}

// Registry is an immutable snapshot of services and endpoints.
type Registry struct {
	services []*Service            // sorted by hostname, then namespace
	byHost   map[string][]*Service // in precedence order (oldest first)
	warnings []string
}

// Build makes a snapshot. Objects of other kinds, or with another spec
// type, are ignored. health may be nil (every workload is healthy).
//
// When two ServiceEntries of one namespace declare the same host, the
// older one (creation time, then name) wins, as in Istio; the other is
// reported in Warnings.
func Build(serviceEntries, workloadEntries []*config.Object, health HealthSource) *Registry {
	r := &Registry{byHost: map[string][]*Service{}}
	ses := sortedObjects(serviceEntries)
	wesByNS := map[string][]*config.Object{}
	for _, o := range sortedObjects(workloadEntries) {
		if _, ok := o.Spec.(*networking.WorkloadEntry); ok {
			wesByNS[o.Meta.Namespace] = append(wesByNS[o.Meta.Namespace], o)
		}
	}
	type hostNS struct{ host, ns string }
	seen := map[hostNS]config.Key{}
	for _, o := range ses {
		se, ok := o.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		ports := make([]Port, 0, len(se.GetPorts()))
		for _, p := range se.GetPorts() {
			ports = append(ports, Port{Name: p.GetName(), Number: p.GetNumber(), Protocol: ParseProtocol(p.GetProtocol()), TargetPort: p.GetTargetPort()})
		}
		sort.SliceStable(ports, func(i, j int) bool { return ports[i].Number < ports[j].Number })
		exportTo := se.GetExportTo()
		if len(exportTo) == 0 {
			exportTo = []string{"*"}
		}
		eps := r.endpointsFor(o, se, ports, wesByNS[o.Meta.Namespace], health)
		for _, h := range se.GetHosts() {
			h = strings.ToLower(h)
			k := hostNS{h, o.Meta.Namespace}
			if first, dup := seen[k]; dup {
				r.warnf("%s: host %q is already declared by %s; ignored", o.Key(), h, first)
				continue
			}
			seen[k] = o.Key()
			svc := &Service{
				Hostname: h, Namespace: o.Meta.Namespace, Ports: ports,
				Resolution: se.GetResolution(), Location: se.GetLocation(),
				Addresses: se.GetAddresses(), ExportTo: exportTo, SubjectAltNames: se.GetSubjectAltNames(),
				Source: o.Key(), endpoints: eps,
			}
			r.services = append(r.services, svc)
			r.byHost[h] = append(r.byHost[h], svc)
		}
	}
	sort.SliceStable(r.services, func(i, j int) bool {
		a, b := r.services[i], r.services[j]
		if a.Hostname != b.Hostname {
			return a.Hostname < b.Hostname
		}
		return a.Namespace < b.Namespace
	})
	return r
}

// endpointsFor builds the endpoints of one ServiceEntry, per service port.
func (r *Registry) endpointsFor(o *config.Object, se *networking.ServiceEntry, ports []Port, wes []*config.Object, health HealthSource) map[uint32][]*Endpoint {
	out := map[uint32][]*Endpoint{}
	add := func(we *networking.WorkloadEntry, key *config.Key, where string) {
		addr := we.GetAddress()
		switch {
		case addr == "":
			r.warnf("%s: %s has no address; skipped", o.Key(), where)
			return
		case strings.HasPrefix(addr, "unix://"):
			r.warnf("%s: %s: unix domain socket endpoints are not supported yet; skipped", o.Key(), where)
			return
		}
		if ip, err := netip.ParseAddr(addr); err == nil {
			addr = ip.String()
		} else if se.GetResolution() == networking.ServiceEntry_STATIC {
			r.warnf("%s: %s: address %q is not an IP, which resolution STATIC requires; skipped", o.Key(), where, addr)
			return
		}
		healthy := true
		if key != nil && health != nil {
			healthy = health.Healthy(*key)
		}
		weight := we.GetWeight()
		if weight == 0 {
			weight = 1
		}
		for _, p := range ports {
			port := p.Number
			if p.TargetPort != 0 {
				port = p.TargetPort
			}
			// Istio: the entry's ports map, by service port name, wins.
			if n, ok := we.GetPorts()[p.Name]; ok && p.Name != "" && n != 0 {
				port = n
			}
			out[p.Number] = append(out[p.Number], &Endpoint{
				Address: addr, Port: port, Labels: we.GetLabels(), Weight: weight,
				Locality: we.GetLocality(), ServiceAccount: we.GetServiceAccount(), Network: we.GetNetwork(),
				Healthy: healthy, Sidecar: we.GetLabels()[TLSModeLabel] == "istio", WorkloadEntry: key,
			})
		}
	}
	if sel := se.GetWorkloadSelector(); sel != nil {
		if len(se.GetEndpoints()) > 0 {
			r.warnf("%s: endpoints and workloadSelector are exclusive; endpoints ignored", o.Key())
		}
		for _, w := range wes {
			we := w.Spec.(*networking.WorkloadEntry)
			if hasLabels(we.GetLabels(), sel.GetLabels()) {
				k := w.Key()
				add(we, &k, "WorkloadEntry "+w.Meta.Name)
			}
		}
	} else {
		for i, we := range se.GetEndpoints() {
			add(we, nil, fmt.Sprintf("endpoints[%d]", i))
		}
	}
	for port, eps := range out {
		sort.SliceStable(eps, func(i, j int) bool {
			a, b := eps[i], eps[j]
			if a.Address != b.Address {
				return a.Address < b.Address
			}
			return a.Port < b.Port
		})
		out[port] = eps
	}
	return out
}

func (r *Registry) warnf(format string, args ...any) {
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
}

// Warnings lists what Build ignored, in input order.
func (r *Registry) Warnings() []string {
	if r == nil {
		return nil
	}
	return r.warnings
}

// Services returns every service, sorted by hostname then namespace. The
// slice is shared.
func (r *Registry) Services() []*Service {
	if r == nil {
		return nil
	}
	return r.services
}

// Service returns the service with that hostname in that namespace.
func (r *Registry) Service(hostname, namespace string) *Service {
	if r == nil {
		return nil
	}
	for _, s := range r.byHost[strings.ToLower(hostname)] {
		if s.Namespace == namespace {
			return s
		}
	}
	return nil
}

// Lookup returns the service a proxy in namespace ns reaches by hostname:
// among the visible services with that hostname, the one in ns, else the
// oldest. Nil when none is visible.
func (r *Registry) Lookup(hostname, ns string) *Service {
	if r == nil {
		return nil
	}
	var first *Service
	for _, s := range r.byHost[strings.ToLower(hostname)] {
		if !s.VisibleFrom(ns) {
			continue
		}
		if s.Namespace == ns {
			return s
		}
		if first == nil {
			first = s
		}
	}
	return first
}

// VisibleServices returns the services a proxy in namespace ns sees, one
// per hostname (see Lookup), sorted by hostname.
func (r *Registry) VisibleServices(ns string) []*Service {
	if r == nil {
		return nil
	}
	out := make([]*Service, 0, len(r.services))
	for _, s := range r.services {
		if n := len(out); n > 0 && out[n-1].Hostname == s.Hostname {
			continue
		}
		if len(r.byHost[s.Hostname]) == 1 {
			if s.VisibleFrom(ns) {
				out = append(out, s)
			}
			continue
		}
		if l := r.Lookup(s.Hostname, ns); l != nil {
			out = append(out, l)
		}
	}
	return out
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// sortedObjects orders objects as Istio gives precedence: oldest first,
// then by namespace and name.
func sortedObjects(in []*config.Object) []*config.Object {
	out := slices.Clone(in)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Meta, out[j].Meta
		if !a.CreationTimestamp.Equal(b.CreationTimestamp) {
			return a.CreationTimestamp.Before(b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}
