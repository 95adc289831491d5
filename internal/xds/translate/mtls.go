package translate

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

// Mutual TLS, as istiod builds it:
//   - Inbound: PeerAuthentication picks each port's mode (workload policy
//     and its port-level setting, else the namespace's, else the mesh's,
//     else PERMISSIVE). STRICT listeners have one filter chain for TLS
//     connections that must present a mesh certificate; PERMISSIVE ones
//     add a plaintext chain, chosen by the tls_inspector; DISABLE ones are
//     plaintext only.
//   - Outbound: a DestinationRule's tls setting wins (DISABLE, SIMPLE,
//     MUTUAL, ISTIO_MUTUAL); without one, auto mTLS: endpoints labelled
//     security.istio.io/tlsMode=istio (those with a sidecar) get mTLS
//     through transport_socket_matches, the others plaintext, unless the
//     destination namespace's (or the mesh's) PeerAuthentication is
//     DISABLE.
//
// Only proxies holding a workload certificate (Proxy.MTLS) get TLS that
// names the SDS secrets "default" and "ROOTCA"; a proxy without one stays
// plaintext, and a STRICT port of such a proxy gets no listener (fail
// closed), with a warning.

const (
	sdsCertName = "default"
	sdsRootName = "ROOTCA"
)

var (
	tlsInspectorFilter = &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}
	rawBufferSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}}
	// istioTLSModeMatch selects endpoints that have a sidecar.
	istioTLSModeMatch = &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}}
)

// meshCipherSuites are Istio's defaults for TLS 1.2 between sidecars:
// forward-secret AEAD suites only.
var meshCipherSuites = []string{
	"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
}

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource}
}

// meshTLSContext is the CommonTlsContext of ISTIO_MUTUAL: the workload's
// certificate and the mesh trust bundle from the proxy's agent; peers
// must present one of sans (any mesh identity when empty).
func meshTLSContext(sans []string, alpn []string) *tlsv3.CommonTlsContext {
	var m []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		m = append(m, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, CipherSuites: meshCipherSuites},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(sdsCertName)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: m},
			ValidationContextSdsSecretConfig: sdsSecret(sdsRootName),
		}},
		AlpnProtocols: alpn,
	}
}

func tlsSocket(ctx *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// peerAuthMode is the effective PeerAuthentication mode of a workload port.
func (b *builder) peerAuthMode(ns string, labels map[string]string, port uint32) (security.PeerAuthentication_MutualTLS_Mode, *config.Object) {
	var mesh, nsLevel, workload *config.Object
	for _, o := range b.in.PeerAuthentications {
		pa, ok := o.Spec.(*security.PeerAuthentication)
		if !ok {
			continue
		}
		sel := pa.GetSelector().GetMatchLabels()
		switch {
		case o.Meta.Namespace == ns && len(sel) > 0:
			if hasLabels(labels, sel) {
				workload = older(workload, o)
			}
		case o.Meta.Namespace == ns:
			nsLevel = older(nsLevel, o)
		case o.Meta.Namespace == b.mesh.RootNamespace && len(sel) == 0:
			mesh = older(mesh, o)
		}
	}
	if workload != nil {
		pa := workload.Spec.(*security.PeerAuthentication)
		if m := pa.GetPortLevelMtls()[port].GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			return m, workload
		}
		if m := pa.GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			return m, workload
		}
	}
	for _, o := range []*config.Object{nsLevel, mesh} {
		if o == nil {
			continue
		}
		if m := o.Spec.(*security.PeerAuthentication).GetMtls().GetMode(); m != security.PeerAuthentication_MutualTLS_UNSET {
			return m, o
		}
	}
	return security.PeerAuthentication_MutualTLS_PERMISSIVE, nil
}

// older keeps the older of two policies at one level, as Istio does.
func older(cur, o *config.Object) *config.Object {
	if cur == nil {
		return o
	}
	a, b := cur.Meta, o.Meta
	if b.CreationTimestamp.Before(a.CreationTimestamp) || (b.CreationTimestamp.Equal(a.CreationTimestamp) && b.Name < a.Name) {
		return o
	}
	return cur
}

// namespaceMTLSDisabled reports whether the namespace (or the mesh) turns
// mTLS off for every workload: auto mTLS then stays plaintext.
func (b *builder) namespaceMTLSDisabled(ns string) bool {
	m, o := b.peerAuthMode(ns, nil, 0)
	return m == security.PeerAuthentication_MutualTLS_DISABLE && o != nil && len(o.Spec.(*security.PeerAuthentication).GetSelector().GetMatchLabels()) == 0
}

// inboundChains turns one inbound listener's single filter chain into
// the chains of the port's mTLS mode. It returns false when the listener
// must not be served.
func (b *builder) inboundChains(l *listenerv3.Listener, targetPort uint32, http bool) bool {
	mode, obj := b.peerAuthMode(b.proxy.Namespace, b.proxy.Labels, targetPort)
	if !b.proxy.MTLS {
		if mode == security.PeerAuthentication_MutualTLS_STRICT {
			b.warnf(obj, "mtls: STRICT for port %d, but proxy %s has no workload certificate (start it with a join token); the port is not served", targetPort, b.proxy.ID)
			return false
		}
		return true
	}
	if mode == security.PeerAuthentication_MutualTLS_DISABLE {
		return true
	}
	plain := l.FilterChains[0]
	alpn := []string{"istio-peer-exchange", "istio"}
	if http {
		alpn = []string{"h2", "http/1.1"}
	}
	tlsChain := &listenerv3.FilterChain{
		Name:             "tls",
		FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
		Filters:          plain.Filters,
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
			CommonTlsContext:         meshTLSContext(nil, alpn),
			RequireClientCertificate: wrapperspb.Bool(true),
		})}},
	}
	l.ListenerFilters = append(l.ListenerFilters, tlsInspectorFilter)
	if mode == security.PeerAuthentication_MutualTLS_STRICT {
		l.FilterChains = []*listenerv3.FilterChain{tlsChain}
		return true
	}
	plain.Name = "plaintext"
	plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	l.FilterChains = []*listenerv3.FilterChain{tlsChain, plain}
	return true
}

// upstreamTLS sets a cluster's transport: the DestinationRule's tls, or
// auto mTLS.
func (b *builder) upstreamTLS(c *clusterv3.Cluster, svc *registry.Service, dr *drEntry, subset *networking.Subset, port registry.Port, eps []*registry.Endpoint) bool {
	if b.proxy.Type == GRPC {
		return true
	}
	tls := effectivePart(dr, subset, port.Number, func(p policyPart) *networking.ClientTLSSettings { return p.GetTls() })
	sni := tls.GetSni()
	if sni == "" && tls.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL {
		sni = fmt.Sprintf("outbound_.%d_.%s_.%s", port.Number, subset.GetName(), svc.Hostname)
	}
	if tls == nil {
		if !b.proxy.MTLS || b.namespaceMTLSDisabled(svc.Namespace) || !anySidecar(eps) {
			return true
		}
		ctx := &tlsv3.UpstreamTlsContext{
			Sni:              fmt.Sprintf("outbound_.%d_.%s_.%s", port.Number, subset.GetName(), svc.Hostname),
			CommonTlsContext: meshTLSContext(b.serviceIdentities(eps), b.upstreamALPN(port)),
		}
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
			{Name: "tlsMode-istio", Match: istioTLSModeMatch, TransportSocket: tlsSocket(ctx)},
			{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: rawBufferSocket},
		}
		return true
	}
	path := dr.obj.Meta.Namespace + "/" + dr.obj.Meta.Name
	switch tls.GetMode() {
	case networking.ClientTLSSettings_DISABLE:
		return true
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		if !b.proxy.MTLS {
			b.warnf(dr.obj, "tls: ISTIO_MUTUAL for %s, but proxy %s has no workload certificate; cluster %s left out", svc.Hostname, b.proxy.ID, c.Name)
			return false
		}
		sans := tls.GetSubjectAltNames()
		if len(sans) == 0 {
			sans = b.serviceIdentities(eps)
		}
		c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: meshTLSContext(sans, b.upstreamALPN(port))})
		return true
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		if tls.GetCredentialName() != "" {
			b.warnf(dr.obj, "tls.credentialName: not translated yet (Kubernetes Secrets); cluster %s left out", c.Name)
			return false
		}
		if sni == "" && !registry.IsWildcard(svc.Hostname) {
			// Istio's default SNI for TLS origination is the host.
			sni = svc.Hostname
		}
		common := &tlsv3.CommonTlsContext{}
		if tls.GetMode() == networking.ClientTLSSettings_MUTUAL {
			if tls.GetClientCertificate() == "" || tls.GetPrivateKey() == "" {
				b.warnf(dr.obj, "tls: MUTUAL needs clientCertificate and privateKey; cluster %s left out", c.Name)
				return false
			}
			common.TlsCertificates = []*tlsv3.TlsCertificate{{
				CertificateChain: fileSource(tls.GetClientCertificate()), PrivateKey: fileSource(tls.GetPrivateKey())}}
		}
		if !tls.GetInsecureSkipVerify().GetValue() {
			vc := &tlsv3.CertificateValidationContext{}
			if ca := tls.GetCaCertificates(); ca != "" {
				vc.TrustedCa = fileSource(ca)
			} else {
				vc.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
			}
			sans := tls.GetSubjectAltNames()
			if len(sans) == 0 && sni != "" {
				sans = []string{sni}
			}
			for _, s := range sans {
				vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
					SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
			}
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		}
		if tls.GetCaCrl() != "" {
			b.warnf(dr.obj, "tls.caCrl: not translated: the proxy checks no CRL")
		}
		c.TransportSocket = tlsSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})
		return true
	}
	b.warnf(dr.obj, "tls.mode: %s is not known; cluster %s (%s) left out", tls.GetMode(), c.Name, path)
	return false
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func anySidecar(eps []*registry.Endpoint) bool {
	for _, e := range eps {
		if e.Sidecar {
			return true
		}
	}
	return false
}

// upstreamALPN is what Istio's client sidecars offer over mTLS.
func (b *builder) upstreamALPN(port registry.Port) []string {
	if port.Protocol.IsHTTP2() {
		return []string{"istio-h2", "istio", "h2"}
	}
	if port.Protocol.IsHTTP() {
		return []string{"istio-http/1.1", "istio", "http/1.1"}
	}
	return []string{"istio-peer-exchange", "istio"}
}

// serviceIdentities are the SPIFFE IDs of a service's endpoints that have
// a sidecar: what its servers may present (Istio's service accounts of a
// service). Empty when any of them has none named (then any mesh identity
// is accepted, as Istio does without known accounts).
func (b *builder) serviceIdentities(eps []*registry.Endpoint) []string {
	seen := map[string]bool{}
	for _, e := range eps {
		if !e.Sidecar {
			continue
		}
		if e.ServiceAccount == "" {
			return nil
		}
		ns := ""
		if e.WorkloadEntry != nil {
			ns = e.WorkloadEntry.Namespace
		}
		if ns == "" {
			return nil
		}
		seen["spiffe://"+b.mesh.TrustDomain+"/ns/"+ns+"/sa/"+e.ServiceAccount] = true
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
