// Package rbac implements the decisions of Envoy's role-based access control
// filters, through which Istio's AuthorizationPolicy reaches the proxy:
// envoy.filters.http.rbac (per request) and envoy.filters.network.rbac (per
// connection), both driven by an envoy.config.rbac.v3.RBAC.
//
// An Engine is one compiled RBAC: its action (ALLOW, DENY, LOG) and its
// policies, evaluated in lexicographic order of their names. A policy
// matches when any of its permissions and any of its principals match.
// A Filter holds the enforced engine and the shadow engine of one filter
// configuration; the connection manager (or the listener, for the network
// filter) fills Attributes and calls Decide. Executing the decision is the
// caller's job:
//
//   - HTTP, Decision.Deny: reply 403 with body "RBAC: access denied"
//     (DeniedBody), response_code_details Decision.Details, which is
//     "rbac_access_denied_matched_policy[<policy>]" or "[none]".
//   - Network, Decision.Deny: close the connection, with Decision.Details as
//     its connection termination details. Envoy evaluates once, when the
//     first bytes arrive from the downstream.
//   - Both: Decision.Metadata is the dynamic metadata Envoy emits
//     (shadow_effective_policy_id, shadow_engine_result under the filter's
//     name; access_log_hint under envoy.common for a LOG action).
//
// Implemented: RBAC.action and policies; Policy.permissions and principals;
// every Permission and Principal kind of the classic API except
// sourced_metadata, uri_template, filter_state and the matcher/custom
// extensions; the filters' rules and shadow_rules, the network filter's
// stat_prefix and enforcement_type ONE_TIME_ON_FIRST_BYTE, and RBACPerRoute.
// CEL conditions, the unified matcher API (matcher, shadow_matcher), stat
// prefixes on rules, per-rule stats, audit logging, delay_deny and
// CONTINUOUS enforcement are refused by Rules.
package rbac

import (
	"crypto/x509"
	"net/netip"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Filter names and configuration types.
const (
	HTTPName            = "envoy.filters.http.rbac"
	HTTPTypeURL         = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	HTTPPerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	NetworkName         = "envoy.filters.network.rbac"
	NetworkTypeURL      = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
)

// The HTTP filter's local reply on deny.
const (
	DeniedStatus = 403
	DeniedBody   = "RBAC: access denied"
)

// Dynamic metadata keys and values the filters emit.
const (
	// Under the filter's name (HTTPName or NetworkName).
	ShadowEffectivePolicyIDKey = "shadow_effective_policy_id"
	ShadowEngineResultKey      = "shadow_engine_result"
	EngineResultAllowed        = "allowed"
	EngineResultDenied         = "denied"
	// Under CommonNamespace, for a LOG action.
	CommonNamespace  = "envoy.common"
	AccessLogHintKey = "access_log_hint"
)

// Attributes are what policies are evaluated against: the connection's,
// and for the HTTP filter the request's. The zero value is a connection
// with nothing known, which matches only `any` and negations.
type Attributes struct {
	// Request holds the HTTP request headers (lower-case names) and
	// pseudo-headers; leave it zero for the network filter, where Envoy
	// evaluates header and url_path matchers against no headers. A
	// *route.Request converts: matcher.Request(*req).
	Request matcher.Request

	// DirectRemote is the downstream peer address (direct_remote_ip, and
	// source_ip: amime has no PROXY protocol, so the connection's remote
	// address is the peer's). Remote is the client address after
	// X-Forwarded-For processing (remote_ip); equal to DirectRemote when
	// the HCM does not use XFF.
	DirectRemote, Remote netip.Addr
	// Destination is the local address the connection was accepted on (or
	// its original destination when redirected): destination_ip,
	// destination_port, destination_port_range.
	Destination netip.AddrPort
	// SNI is the requested server name of a TLS connection ("" without).
	SNI string
	// Peer is the downstream TLS identity, computed once per connection
	// with NewPeer; nil for a plaintext connection.
	Peer *Peer
	// Metadata is the stream's dynamic metadata by filter namespace, e.g.
	// "istio_authn", "envoy.filters.http.jwt_authn"; nil when none.
	Metadata map[string]*structpb.Struct
}

// Peer is what principals match in a downstream TLS connection, extracted
// once per connection so that evaluating does not walk the certificate.
type Peer struct {
	URISANs []string
	DNSSANs []string
	Subject string // RFC 2253
}

// NewPeer extracts the peer certificate's identities. cert is nil for a TLS
// connection whose client sent no certificate: Envoy still counts such a
// connection as TLS-authenticated for an `authenticated` principal without
// principal_name, and matches principal_name against an empty subject.
func NewPeer(cert *x509.Certificate) *Peer {
	p := &Peer{}
	if cert == nil {
		return p
	}
	for _, u := range cert.URIs {
		p.URISANs = append(p.URISANs, u.String())
	}
	p.DNSSANs = append(p.DNSSANs, cert.DNSNames...)
	p.Subject = cert.Subject.String()
	return p
}
