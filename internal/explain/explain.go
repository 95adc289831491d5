// Package explain answers "why does the mesh do this to my request": given
// the xDS resources the control plane serves its proxies and the
// description of one request (method, URL, headers, source proxy), it
// walks the request hop by hop, the source proxy's outbound side then the
// inbound side of every destination proxy it may reach, and records each
// decision (listener, virtual host, route, faults, cluster, endpoints,
// TLS, authentication, authorization, timeouts, retries) with the
// configuration object behind it and why.
//
// Decisions are made by the proxy's own packages (route tables, fault,
// jwt_authn, RBAC, clusters) on the resources the proxies hold, so the
// explanation is what the proxies do, not a second implementation of
// Envoy's or Istio's semantics. Only what a request description cannot
// carry is assumed and said so in the trail: the source address, and the
// load balancer's choice among endpoints (each one is explained).
package explain

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// Proxy is one connected proxy as the control plane knows it.
type Proxy struct {
	// ID is the xDS node id, e.g. "sidecar~10.0.0.1~reviews-v1.default".
	ID string
	// Gateway is set for router proxies (ingress/egress gateways).
	Gateway bool
	// Namespace, Workload and Labels describe the proxy's workload (node
	// metadata); Workload "" falls back to the name in the node id.
	Namespace string
	Workload  string
	Labels    map[string]string
	// IPs are the workload's addresses (node metadata INSTANCE_IPS).
	IPs []string
	// Identity is the SPIFFE ID of the workload certificate the proxy
	// holds, "" without one (plaintext both ways).
	Identity string
	// Sync is the xDS state by type ("LDS": "SYNCED", "NACK: ...", ...),
	// when known: a proxy that refused its last configuration still runs
	// an older one, which the explanation says.
	Sync map[string]string
	// Resources are what the control plane last served the proxy.
	Resources Resources
}

// Resources are a proxy's xDS resources.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// ResourcesByType converts what the xDS server returns for a proxy (keyed
// "LDS", "RDS", "CDS", "EDS", "SDS") to Resources; other messages are
// left out.
func ResourcesByType(byType map[string][]types.Resource) Resources {
	var r Resources
	for _, list := range byType {
		for _, m := range list {
			switch v := m.(type) {
			case *listenerv3.Listener:
				r.Listeners = append(r.Listeners, v)
			case *routev3.RouteConfiguration:
				r.Routes = append(r.Routes, v)
			case *clusterv3.Cluster:
				r.Clusters = append(r.Clusters, v)
			case *endpointv3.ClusterLoadAssignment:
				r.Endpoints = append(r.Endpoints, v)
			case *tlsv3.Secret:
				r.Secrets = append(r.Secrets, v)
			}
		}
	}
	return r
}

// Request describes the request to explain.
type Request struct {
	// From names the source proxy: its id, its workload name or app label
	// (when that identifies one connected proxy), or "ingressgateway" for
	// the (one) gateway.
	From string `json:"from"`
	// Method defaults to GET.
	Method string `json:"method,omitempty"`
	// URL is what the application asks for, e.g. http://reviews:9080/r/1.
	URL string `json:"url"`
	// Headers are extra request headers; "host" replaces the URL's
	// authority. A JWT goes in "authorization: Bearer <token>".
	Headers map[string][]string `json:"headers,omitempty"`
}

// Trail is the explanation of one request.
type Trail struct {
	// Summary is one line: the request, its source and what the client
	// gets, e.g. "GET http://reviews:9080/ from customer-v1 → 403 RBAC:
	// denied by AuthorizationPolicy default/deny-post".
	Summary string `json:"summary"`
	// Request echoes the request as the source proxy sees it.
	Request RequestEcho `json:"request"`
	// Outcomes are what the client gets, with the share of requests each
	// applies to (weighted routes, fault percentages and endpoints whose
	// inbound side decides differently split it).
	Outcomes []Outcome `json:"outcomes"`
	// Hops are the proxies the request goes through: the source's
	// outbound side, then the inbound side of each endpoint's proxy.
	Hops []Hop `json:"hops"`
	// Notes are assumptions and caveats that apply to the whole trail.
	Notes []string `json:"notes,omitempty"`
}

// RequestEcho is the request as explained.
type RequestEcho struct {
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Authority string            `json:"authority"`
	Path      string            `json:"path"`
	Headers   map[string]string `json:"headers,omitempty"`
	From      string            `json:"from"` // the source proxy's id
	Workload  string            `json:"workload,omitempty"`
}

// Outcome is one possible result for the client.
type Outcome struct {
	// Percent of requests that get this outcome.
	Percent float64 `json:"percent"`
	// Status is the HTTP status the client gets; 0 when the request
	// reaches the application, which answers.
	Status int `json:"status,omitempty"`
	// Flags and Details are Envoy's response flags and
	// response_code_details, as the proxies' access logs and metrics
	// report them.
	Flags   string `json:"flags,omitempty"`
	Details string `json:"details,omitempty"`
	// Reason says why, naming the configuration object responsible.
	Reason string `json:"reason"`
	// By is the configuration object that decided, e.g.
	// "AuthorizationPolicy default/deny-post".
	By string `json:"by,omitempty"`
	// Fix is a hint when the outcome is a mistake in the configuration.
	Fix string `json:"fix,omitempty"`
	// At names the proxies that decided, when not the source.
	At string `json:"at,omitempty"`
	// Hop is the index in Trail.Hops of (the first) proxy that decided.
	Hop int `json:"hop"`
}

// Hop is what one proxy does with the request.
type Hop struct {
	Proxy    string `json:"proxy"`
	Workload string `json:"workload,omitempty"`
	// Side is "outbound" (the source sidecar), "gateway" or "inbound" (a
	// destination sidecar).
	Side string `json:"side"`
	// Via, for inbound hops, is how the request gets there: the cluster
	// and endpoint of the previous hop.
	Via   string `json:"via,omitempty"`
	Steps []Step `json:"steps"`
}

// Step is one decision.
type Step struct {
	// Kind is what is decided: listener, virtual_host, route, filter,
	// fault, jwt, rbac, cluster, endpoint, tls, filter_chain, timeout,
	// retry, mirror, forward, verdict.
	Kind string `json:"kind"`
	// Name is the xDS resource or filter name, when there is one.
	Name string `json:"name,omitempty"`
	// Decision is what the proxy does.
	Decision string `json:"decision"`
	// Config is the Istio object behind the decision, e.g.
	// "VirtualService default/reviews".
	Config string `json:"config,omitempty"`
	// Why explains the decision.
	Why string `json:"why,omitempty"`
	// Status, Flags and Details are set when this step answers the
	// request itself.
	Status  int    `json:"status,omitempty"`
	Flags   string `json:"flags,omitempty"`
	Details string `json:"details,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Steps are nested decisions: one per weighted cluster, endpoint, ….
	Steps []Step `json:"steps,omitempty"`
}
