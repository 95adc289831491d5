// Package route compiles an Envoy v3 RouteConfiguration
// (envoy.config.route.v3) into an immutable matcher that the proxy consults
// on every request, and exposes what the proxy must execute for the chosen
// route: the cluster, rewrites, timeouts, redirects, direct responses and
// header mutations.
//
// A *Table and the *Route values it returns are read-only after Compile and
// safe for concurrent use; Compile works on a private copy of its input, so
// the caller may reuse or mutate the RouteConfiguration afterwards.
//
// The semantics follow Envoy v1.37 (source/common/router/config_impl.cc,
// header_utility.cc, header_parser.cc, http/utility.cc). In particular:
//
//   - Path matchers (prefix, path, safe_regex, path_separated_prefix) see the
//     path without query string and fragment; case_sensitive applies to all
//     but safe_regex; safe_regex must match the whole path.
//   - Header matchers see the values of a repeated header joined with ","
//     (Envoy before 1.39); ":method", ":authority" (alias "host", as in
//     Envoy's request header map), ":path" (with query) and ":scheme" read
//     the Request fields; other pseudo-headers are rejected at Compile.
//     A matcher other than present_match fails on a missing header even
//     when inverted, unless treat_missing_header_as_empty is set.
//   - Query parameter matchers see the first occurrence and its raw,
//     percent-encoded value, as Envoy's parseQueryString; present_match
//     false matches an absent parameter (Envoy >= 1.34).
//   - grpc matches content-type "application/grpc" or "application/grpc+…"
//     only (not grpc-web), as Envoy's Grpc::Common.
//
// Where this package picks between behaviours Envoy leaves open, the choice
// is documented on the method concerned.
package route

import (
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Request is what matching reads; the proxy fills it from HTTP/1.1 or
// HTTP/2. It is the matcher package's, so that the filters read the same
// value.
type Request = matcher.Request

// Kind is what the proxy does with a matched request.
type Kind uint8

const (
	// Forward proxies the request to an upstream cluster (RouteAction).
	Forward Kind = iota + 1
	// Redirect answers with a 3xx and a Location (RedirectAction).
	Redirect
	// DirectResponse answers with a fixed status and body (DirectResponseAction).
	DirectResponse
)

func (k Kind) String() string {
	switch k {
	case Forward:
		return "forward"
	case Redirect:
		return "redirect"
	case DirectResponse:
		return "direct_response"
	}
	return "unknown"
}

// Table is a compiled RouteConfiguration.
type Table struct {
	name string

	// Virtual host lookup, in Envoy's order: exact, suffix wildcards
	// (longest first), prefix wildcards (longest first), then "*".
	exact       map[string]*virtualHost
	suffixes    []wildcards
	prefixes    []wildcards
	def         *virtualHost
	onlyDefault bool

	ignorePort       bool
	ignorePathParams bool
	mostSpecificWins bool
	validateClusters bool

	req, resp *mutation
	perFilter map[string]any
	clusters  []string
}

// wildcards holds the wildcard domains of one length, without the "*".
type wildcards struct {
	n int
	m map[string]*virtualHost
}

type virtualHost struct {
	name   string
	table  *Table
	routes []*entry

	req, resp              *mutation
	perFilter              map[string]any
	attemptCountInRequest  bool
	attemptCountInResponse bool
	// tlsRedirect answers requests not made over TLS (require_tls); nil
	// when the virtual host takes plaintext requests.
	tlsRedirect     *Route
	tlsExternalOnly bool
}

// Name returns the RouteConfiguration name.
func (t *Table) Name() string { return t.name }

// ValidateClusters reports RouteConfiguration.validate_clusters: when true
// Envoy rejects a configuration naming a cluster it does not know, so the
// proxy must check Clusters against its cluster set before using the table.
func (t *Table) ValidateClusters() bool { return t.validateClusters }

// Clusters returns the cluster names the configuration names statically
// (cluster and weighted_clusters names, not cluster_header), sorted and
// de-duplicated. The slice must not be modified.
func (t *Table) Clusters() []string { return t.clusters }

// Select finds the virtual host for req.Authority and the first route of it
// that matches, in configuration order. It returns nil when none matches; the
// proxy then answers 404 with response flag NR, as Envoy does.
//
// random drives the weighted cluster choice: for a weighted_clusters route
// Select returns the *Route of the cluster whose interval holds
// random % (sum of weights), intervals laid out in configuration order.
//
// A request with an empty Path (HTTP/1.1 CONNECT) is only matched by
// connect_matcher routes, as in Envoy. An empty Authority is looked up as the
// empty host (so only "*" matches it): the proxy rejects requests without a
// host before routing, like Envoy's connection manager.
func (t *Table) Select(req *Request, random uint64) *Route {
	vh := t.virtualHost(req.Authority)
	if vh == nil {
		return nil
	}
	if vh.tlsRedirect != nil && vh.needsTLSRedirect(req) {
		return vh.tlsRedirect
	}
	path := req.Path
	pathless := path == ""
	p := matcher.PathOnly(path)
	if t.ignorePathParams {
		if i := strings.IndexByte(p, ';'); i >= 0 {
			p = p[:i]
		}
	}
	for _, e := range vh.routes {
		if pathless && !e.match.connect {
			continue
		}
		if e.match.matches(req, p) {
			return e.pick(random)
		}
	}
	return nil
}

func (t *Table) virtualHost(host string) *virtualHost {
	if t.onlyDefault {
		return t.def
	}
	if t.ignorePort {
		if i := portStart(host); i >= 0 {
			host = host[:i]
		}
	}
	// Host names are case-insensitive; clients almost always send lower
	// case, so only the rare mixed-case host pays for a copy.
	host = header.Lower(host)
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	// The wildcard must match at least one character, hence n < len(host).
	for _, w := range t.suffixes {
		if w.n < len(host) {
			if vh, ok := w.m[host[len(host)-w.n:]]; ok {
				return vh
			}
		}
	}
	for _, w := range t.prefixes {
		if w.n < len(host) {
			if vh, ok := w.m[host[:w.n]]; ok {
				return vh
			}
		}
	}
	return t.def
}

// portStart returns the index of the ':' that starts the port of host, or
// -1, like Envoy's HeaderUtility::getPortStart: an IPv6 literal is only
// followed by a port after its closing ']'.
func portStart(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return -1
	}
	if j := strings.LastIndexByte(host, ']'); j >= 0 && j > i {
		return -1
	}
	return i
}
