package translate

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// gwServer is one HTTP server of a Gateway selecting this proxy.
type gwServer struct {
	gw     *config.Object
	name   string   // "namespace/name"
	hosts  []gwHost // parsed server hosts
	server *networking.Server
}

// gwHost is a server host "namespace/host": VirtualServices of that
// namespace ("*" any) may bind host.
type gwHost struct{ ns, host string }

// buildGatewayListeners gives a router one HTTP listener per bind address
// and port of the Gateways selecting it, with route configuration
// "http.<port>" (Istio's name; "http.<port>.<bind>" for a server with a
// bind address). TLS, HTTPS and TCP servers are not translated yet.
func (b *builder) buildGatewayListeners() {
	type key struct {
		bind string
		port uint32
	}
	groups := map[key][]*gwServer{}
	var keys []key
	for _, o := range precedence(b.in.Gateways, b.proxy.Namespace) {
		gw, ok := o.Spec.(*networking.Gateway)
		if !ok || !hasLabels(b.proxy.Labels, gw.GetSelector()) {
			continue
		}
		for i, s := range gw.GetServers() {
			proto := registry.ParseProtocol(s.GetPort().GetProtocol())
			if !proto.IsHTTP() {
				b.warnf(o, "servers[%d]: protocol %s not translated yet (only plaintext HTTP servers are)", i, s.GetPort().GetProtocol())
				continue
			}
			if s.GetTls() != nil {
				b.warnf(o, "servers[%d].tls: not translated yet (httpsRedirect needs require_tls)", i)
			}
			bind := s.GetBind()
			if bind == "" && len(b.proxy.IPs) > 0 {
				// Outside Kubernetes the gateway's own address, as inbound
				// listeners use: a laptop mesh must not listen on every
				// interface unless asked to.
				bind = b.proxy.IPs[0]
			}
			if bind == "" {
				bind = "0.0.0.0"
			}
			if _, err := netip.ParseAddr(bind); err != nil {
				b.warnf(o, "servers[%d].bind: %q is not an IP address; server skipped", i, bind)
				continue
			}
			srv := &gwServer{gw: o, name: o.Meta.Namespace + "/" + o.Meta.Name, server: s}
			for _, h := range s.GetHosts() {
				ns, host, found := strings.Cut(h, "/")
				if !found {
					ns, host = "*", h
				} else if ns == "." {
					ns = o.Meta.Namespace
				}
				srv.hosts = append(srv.hosts, gwHost{ns, strings.ToLower(host)})
			}
			k := key{bind, s.GetPort().GetNumber()}
			if groups[k] == nil {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], srv)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].port != keys[j].port {
			return keys[i].port < keys[j].port
		}
		return keys[i].bind < keys[j].bind
	})
	for _, k := range keys {
		rds := "http." + strconv.FormatUint(uint64(k.port), 10)
		if k.bind != "0.0.0.0" {
			rds += "." + k.bind
		}
		name := listenerName(k.bind, k.port)
		if !b.claim(netip.AddrPortFrom(netip.MustParseAddr(k.bind), uint16(k.port)).String(), name) {
			continue
		}
		b.res.Routes = append(b.res.Routes, b.gatewayRoute(rds, k.port, groups[k]))
		b.res.Listeners = append(b.res.Listeners, b.httpListener(name, k.bind, k.port, corev3.TrafficDirection_OUTBOUND, rds, true))
	}
}

// gatewayRoute has a virtual host per host that both a server and a
// VirtualService bound to it name; requests for other hosts get 404 (no
// virtual host), as from Istio's gateways.
func (b *builder) gatewayRoute(name string, port uint32, servers []*gwServer) *routev3.RouteConfiguration {
	type vhost struct {
		vh  *routev3.VirtualHost
		vss map[*vsEntry]bool
	}
	byHost := map[string]*vhost{}
	var hosts []string
	for _, vs := range b.vss {
		// The gateways of this port that the VirtualService binds.
		var gws []string
		var matched []string
		for _, srv := range servers {
			if !slices.Contains(vs.gateways, srv.name) {
				continue
			}
			if !slices.Contains(gws, srv.name) {
				gws = append(gws, srv.name)
			}
			for _, h := range vs.hosts {
				for _, sh := range srv.hosts {
					if sh.ns != "*" && sh.ns != vs.obj.Meta.Namespace {
						continue
					}
					// The more specific of the two names is served.
					switch {
					case registry.HostCovers(sh.host, h):
						matched = append(matched, h)
					case registry.HostCovers(h, sh.host):
						matched = append(matched, sh.host)
					}
				}
			}
		}
		if len(matched) == 0 {
			continue
		}
		sort.Strings(gws)
		routes := b.httpRoutes(vs, port, gws)
		for _, h := range matched {
			v := byHost[h]
			if v == nil {
				v = &vhost{vh: &routev3.VirtualHost{Name: h + ":" + strconv.FormatUint(uint64(port), 10), Domains: gatewayDomains(h, port), IncludeRequestAttemptCount: true}, vss: map[*vsEntry]bool{}}
				byHost[h] = v
				hosts = append(hosts, h)
			}
			if v.vss[vs] {
				continue
			}
			// Several VirtualServices for one host: their routes are
			// merged in precedence order (Istio merges gateway routes).
			v.vss[vs] = true
			v.vh.Routes = append(v.vh.Routes, routes...)
		}
	}
	sort.Strings(hosts)
	rc := &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false), MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	for _, h := range hosts {
		if v := byHost[h]; len(v.vh.Routes) > 0 {
			rc.VirtualHosts = append(rc.VirtualHosts, v.vh)
		}
	}
	if len(rc.VirtualHosts) == 0 {
		// Istio answers 404 when nothing is bound, rather than an empty table.
		rc.VirtualHosts = []*routev3.VirtualHost{{Name: "blackhole:" + strconv.FormatUint(uint64(port), 10), Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name:   "blackhole",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
		}}}}
	}
	return rc
}

// gatewayDomains: the host with and without the listener port ("*" alone
// matches everything).
func gatewayDomains(host string, port uint32) []string {
	if host == "*" {
		return []string{"*"}
	}
	return []string{host, host + ":" + strconv.FormatUint(uint64(port), 10)}
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
