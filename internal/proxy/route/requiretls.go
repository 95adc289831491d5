package route

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// compileRequireTLS sets up VirtualHost.require_tls: the virtual host
// answers requests that did not arrive over TLS with a 301 to the same URL
// over https (Envoy's SslRedirectRoute) before any of its routes match.
func compileRequireTLS(vh *virtualHost, rt routev3.VirtualHost_TlsRequirementType, p string) error {
	switch rt {
	case routev3.VirtualHost_NONE:
		return nil
	case routev3.VirtualHost_EXTERNAL_ONLY, routev3.VirtualHost_ALL:
	default:
		return errf(p, "unknown TLS requirement %d", rt)
	}
	// One prebuilt route per virtual host: redirecting allocates nothing
	// beyond the Location header.
	e := &entry{vh: vh, kind: Redirect, proto: &routev3.Route{}, redirect: &redirect{ssl: true, code: 301}}
	e.single = &Route{e: e}
	vh.tlsRedirect = e.single
	vh.tlsExternalOnly = rt == routev3.VirtualHost_EXTERNAL_ONLY
	return nil
}

// needsTLSRedirect is Envoy's check: the request's x-forwarded-proto (which
// the connection manager has set from the connection when it is the edge)
// is not "https"; EXTERNAL_ONLY spares requests marked x-envoy-internal.
func (vh *virtualHost) needsTLSRedirect(req *Request) bool {
	proto, ok := req.Headers.Get("x-forwarded-proto")
	if !ok {
		proto = req.Scheme
	}
	if proto == "https" {
		return false
	}
	if vh.tlsExternalOnly {
		if v, ok := req.Headers.Get("x-envoy-internal"); ok && v == "true" {
			return false
		}
	}
	return true
}
