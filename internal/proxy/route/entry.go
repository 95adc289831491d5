package route

import (
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
)

// entry is one compiled envoy.config.route.v3.Route.
type entry struct {
	name  string
	vh    *virtualHost
	proto *routev3.Route
	match routeMatch
	kind  Kind

	decorator    Decorator
	hasDecorator bool
	tracing      *Tracing // nil: the connection manager's

	// Forward.
	single          *Route // the Route returned when not weighted
	cluster         string
	clusterHeader   matcher.HeaderName
	clusterNotFound int
	weighted        []*Route // one per ClusterWeight, in configuration order
	ends            []uint64 // cumulative weights, parallel to weighted
	total           uint64
	rewrite         pathRewrite
	hostLiteral     string
	hostHeader      matcher.HeaderName
	autoHost        bool
	timeouts        Timeouts
	retry           *routev3.RetryPolicy
	retryC          *Retry
	mirrors         []Mirror
	hashPolicies    []HashPolicy

	// Redirect and direct response.
	redirect *redirect
	status   int
	body     string

	req, resp *mutation
	perFilter map[string]any
}

// clusterWeight is the part of a weighted_clusters entry that differs
// between the clusters of one route.
type clusterWeight struct {
	name        string
	header      matcher.HeaderName
	weight      uint32
	hostLiteral string
	req, resp   *mutation
	perFilter   map[string]any
}

// Route is a matched route as the proxy executes it. For a weighted_clusters
// route there is one Route per cluster (Select returns the chosen one), each
// carrying its ClusterWeight's own header mutations, host rewrite and
// per-filter configuration, like Envoy's WeightedClusterEntry.
type Route struct {
	e  *entry
	wc *clusterWeight
}

func (e *entry) pick(random uint64) *Route {
	if e.weighted == nil {
		return e.single
	}
	v := random % e.total
	for i, end := range e.ends {
		if v < end {
			return e.weighted[i]
		}
	}
	return e.weighted[len(e.weighted)-1] // unreachable: ends[last] == total
}

// String describes the route for logs: virtual host, route name, kind and
// static cluster.
func (r *Route) String() string {
	s := r.e.vh.name + "/" + r.e.name + " " + r.e.kind.String()
	switch {
	case r.wc != nil && r.wc.name != "":
		s += " " + r.wc.name
	case r.e.cluster != "":
		s += " " + r.e.cluster
	}
	return s
}

// Name returns Route.name.
func (r *Route) Name() string { return r.e.name }

// VirtualHost returns the name of the virtual host the route belongs to.
func (r *Route) VirtualHost() string { return r.e.vh.name }

// Kind returns what the proxy does with the request.
func (r *Route) Kind() Kind { return r.e.kind }

// Proto returns the route's configuration, for packages implementing fields
// this one does not interpret (they merge their own fieldcheck rules). It is
// a private copy made at Compile and must not be modified.
func (r *Route) Proto() *routev3.Route { return r.e.proto }

// Decorator is Route.decorator, for tracing.
type Decorator struct {
	Operation string
	Propagate bool // default true
}

// Decorator returns the route's decorator, ok false when none is set (the
// tracer then names the span itself).
func (r *Route) Decorator() (d Decorator, ok bool) { return r.e.decorator, r.e.hasDecorator }

// Tracing is Route.tracing: sampling percentages that replace the
// connection manager's for this route, and custom tags added to (and
// overriding same-named) connection manager tags.
type Tracing struct {
	Sampling tracing.Sampling
	Tags     []tracing.CustomTag
}

// Tracing returns the route's tracing override, nil when it has none.
func (r *Route) Tracing() *Tracing { return r.e.tracing }

// ClusterName returns the upstream cluster for a Forward route: the
// configured cluster, or the first value of cluster_header. An empty result
// means there is no cluster; the proxy must then answer
// ClusterNotFoundStatus (503 unless configured) with response flag NC
// ("no cluster found"), exactly as for a cluster name it does not know:
// that is what Envoy's router does for a missing cluster_header (the "404"
// in cluster_header's documentation predates cluster_not_found_response_code).
func (r *Route) ClusterName(req *Request) string {
	if r.wc != nil {
		if r.wc.name != "" {
			return r.wc.name
		}
		v, _ := r.wc.header.First(req)
		return v
	}
	if r.e.cluster != "" {
		return r.e.cluster
	}
	v, _ := r.e.clusterHeader.First(req)
	return v
}

// ClusterNotFoundStatus is cluster_not_found_response_code as an HTTP status:
// 503 (default), 404 or 500.
func (r *Route) ClusterNotFoundStatus() int { return r.e.clusterNotFound }

// Weight returns the weight of the chosen cluster of a weighted_clusters
// route, 0 otherwise.
func (r *Route) Weight() uint32 {
	if r.wc == nil {
		return 0
	}
	return r.wc.weight
}

// WeightedClusters returns all clusters of a weighted_clusters route, one
// Route each in configuration order (nil for other routes). The slice must
// not be modified.
func (r *Route) WeightedClusters() []*Route { return r.e.weighted }

// RewritePath returns the :path to send upstream and true when the route
// rewrites it. prefix_rewrite replaces the matched prefix (or exact path, or
// for safe_regex/connect routes the whole path) of the full :path, so the
// query string follows; as Envoy documents, trailing slashes are not
// adjusted ("/prefix" rewritten to "/" turns "/prefix/etc" into "//etc").
// regex_rewrite substitutes every match in the path without query string and
// keeps the query. The proxy keeps the original in x-envoy-original-path
// unless it suppresses Envoy headers.
func (r *Route) RewritePath(req *Request) (string, bool) {
	if r.e.kind != Forward {
		return req.Path, false
	}
	return r.e.rewrite.apply(req.Path, &r.e.match)
}

// RewriteHost returns the value the proxy must set as Host/:authority and
// true, from host_rewrite_literal or the first value of host_rewrite_header
// (left intact when that header is absent or empty), falling back to a
// weighted cluster's host_rewrite_literal. Route-level rewrites win over the
// cluster's because Envoy applies them after it. AutoHostRewrite is applied
// by the proxy afterwards, once it knows the upstream host.
func (r *Route) RewriteHost(req *Request) (string, bool) {
	e := r.e
	if e.hostLiteral != "" {
		return e.hostLiteral, true
	}
	if e.hostHeader.Name != "" {
		if v, _ := e.hostHeader.First(req); v != "" {
			return v, true
		}
	}
	if r.wc != nil && r.wc.hostLiteral != "" {
		return r.wc.hostLiteral, true
	}
	return "", false
}

// AutoHostRewrite reports auto_host_rewrite: the proxy sets Host to the
// hostname of the selected upstream host (when it has one).
func (r *Route) AutoHostRewrite() bool { return r.e.autoHost }

// OptionalDuration is a duration that may be unset.
type OptionalDuration struct {
	D   time.Duration
	Set bool
}

// Timeouts are a Forward route's timeouts, truncated to milliseconds as
// Envoy stores them.
type Timeouts struct {
	// Request is RouteAction.timeout: 15s when unset, 0 means disabled.
	Request time.Duration
	// Idle is idle_timeout; unset means the connection manager's stream idle
	// timeout applies, 0 disables it.
	Idle                    OptionalDuration
	MaxStreamDuration       OptionalDuration // max_stream_duration.max_stream_duration
	GrpcTimeoutHeaderMax    OptionalDuration // max_stream_duration.grpc_timeout_header_max
	GrpcTimeoutHeaderOffset OptionalDuration // max_stream_duration.grpc_timeout_header_offset
	MaxGrpcTimeout          OptionalDuration // deprecated max_grpc_timeout, still set by Istio
	GrpcTimeoutOffset       OptionalDuration // deprecated grpc_timeout_offset
}

// Timeouts returns the route's timeouts (zero Timeouts for non-Forward
// routes).
func (r *Route) Timeouts() Timeouts { return r.e.timeouts }

// RetryPolicy returns the effective retry policy: the route's, else its
// virtual host's (not merged: Envoy takes the route-level one whole), else
// nil. It is a private copy and must not be modified.
func (r *Route) RetryPolicy() *routev3.RetryPolicy { return r.e.retry }

// IncludeRequestAttemptCount reports the virtual host's
// include_request_attempt_count (x-envoy-attempt-count on upstream requests).
func (r *Route) IncludeRequestAttemptCount() bool { return r.e.vh.attemptCountInRequest }

// IncludeAttemptCountInResponse reports the virtual host's
// include_attempt_count_in_response.
func (r *Route) IncludeAttemptCountInResponse() bool { return r.e.vh.attemptCountInResponse }

// Status returns the response status of a Redirect (301 default, 302, 303,
// 307, 308) or DirectResponse route, 0 for Forward.
func (r *Route) Status() int {
	switch r.e.kind {
	case Redirect:
		return r.e.redirect.code
	case DirectResponse:
		return r.e.status
	}
	return 0
}

// Body returns the body of a DirectResponse route.
func (r *Route) Body() string { return r.e.body }

// PerFilterConfig returns the most specific typed_per_filter_config entry
// for filter name, as parsed by its FilterConfigParser: weighted cluster,
// then route, virtual host, route configuration; nil when none.
func (r *Route) PerFilterConfig(name string) any {
	if r.wc != nil {
		if v, ok := r.wc.perFilter[name]; ok {
			return v
		}
	}
	for _, m := range [...]map[string]any{r.e.perFilter, r.e.vh.perFilter, r.e.vh.table.perFilter} {
		if v, ok := m[name]; ok {
			return v
		}
	}
	return nil
}

// PerFilterConfigs returns every level's entry for filter name, least
// specific first (route configuration, virtual host, route, weighted
// cluster), for filters that merge them as Envoy's perFilterConfigs allows.
func (r *Route) PerFilterConfigs(name string) []any {
	var out []any
	for _, m := range [...]map[string]any{r.e.vh.table.perFilter, r.e.vh.perFilter, r.e.perFilter} {
		if v, ok := m[name]; ok {
			out = append(out, v)
		}
	}
	if r.wc != nil {
		if v, ok := r.wc.perFilter[name]; ok {
			out = append(out, v)
		}
	}
	return out
}
