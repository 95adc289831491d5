// Package tlsctx compiles Envoy's TLS transport sockets
// (envoy.transport_sockets.tls: UpstreamTlsContext for clusters,
// DownstreamTlsContext for listener filter chains) into crypto/tls
// configurations, and reads the first bytes of a connection the way Envoy's
// tls_inspector listener filter does.
//
// Certificates and trust anchors come inline, from files (read when the
// configuration is compiled), or by SDS secret name. SDS names resolve
// through Secrets, which the proxy's workload identity agent implements as
// istio-agent does for Envoy: "default" is the workload's SVID and "ROOTCA"
// the mesh trust bundle, both read at every handshake so a rotated
// certificate or bundle applies to new connections without new config.
//
// Verification follows Envoy: without a validation context the peer is not
// verified; with one its chain must verify against the trusted CAs, and its
// subject alternative names must match one of match_typed_subject_alt_names
// (or the deprecated match_subject_alt_names) when any are given. Hostnames
// are never checked implicitly (mesh SVIDs carry none).
package tlsctx

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Name is the transport socket's name.
const Name = "envoy.transport_sockets.tls"

// Type URLs of the two contexts.
const (
	UpstreamTypeURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	DownstreamTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	rawBufferTypeURL  = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// Secrets resolves SDS secrets by name.
type Secrets interface {
	// Certificate returns the current certificate (with its key) of a
	// tls_certificate secret.
	Certificate(name string) (*tls.Certificate, error)
	// Roots returns the current trusted CAs of a validation_context secret.
	Roots(name string) (*x509.CertPool, error)
}

// Rules lists the supported fields of both contexts.
func Rules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":   {"common_tls_context", "sni", "max_session_keys"},
		"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": {"common_tls_context", "require_client_certificate", "require_sni", "disable_stateless_session_resumption", "disable_stateful_session_resumption"},
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": {"tls_params", "tls_certificates", "tls_certificate_sds_secret_configs",
			"validation_context", "validation_context_sds_secret_config", "combined_validation_context", "alpn_protocols"},
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": {"default_validation_context", "validation_context_sds_secret_config"},
		"envoy.extensions.transport_sockets.tls.v3.TlsParameters":                                         {"tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"},
		"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":                                        {"certificate_chain", "private_key"},
		"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig":                                       {"name", "sds_config"},
		"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": {"trusted_ca", "match_typed_subject_alt_names",
			"match_subject_alt_names", "trust_chain_verification", "system_root_certs"},
		"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts": {},
		"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher":                        {"san_type", "matcher"},
		"envoy.type.matcher.v3.StringMatcher":                                                    {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"},
		"envoy.type.matcher.v3.RegexMatcher":                                                     {"google_re2", "regex"},
		"envoy.type.matcher.v3.RegexMatcher.GoogleRE2":                                           {},
		"envoy.config.core.v3.DataSource":                                                        {"filename", "inline_bytes", "inline_string", "environment_variable"},
		"envoy.config.core.v3.ConfigSource":                                                      {"ads", "api_config_source", "resource_api_version", "initial_fetch_timeout"},
		"envoy.config.core.v3.AggregatedConfigSource":                                            {},
		"envoy.config.core.v3.ApiConfigSource":                                                   {fieldcheck.All},
		"envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer":                             {},
		"envoy.config.core.v3.TransportSocket":                                                   {"name", "typed_config"},
		"envoy.config.cluster.v3.Cluster.TransportSocketMatch":                                   {"name", "match", "transport_socket"},
		"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys":                         {},
		"envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider":                           {},
		"envoy.extensions.transport_sockets.tls.v3.CertificateProviderPluginInstance":            {},
	}
}

// common is a compiled CommonTlsContext.
type common struct {
	minVersion, maxVersion uint16
	ciphers                []uint16
	curves                 []tls.CurveID
	alpn                   []string
	// Exactly one certificate source is set (or none).
	certs   []tls.Certificate
	certSDS string
	// Validation: verify is false without a validation context.
	verify      bool
	roots       *x509.CertPool
	systemRoots bool // verify against the host's trust store
	rootsSDS    string
	sans        []sanMatcher
	acceptChain bool // trust_chain_verification ACCEPT_UNTRUSTED
	secrets     Secrets
}

func compileCommon(c *tlsv3.CommonTlsContext, secrets Secrets, defMin uint16) (*common, error) {
	out := &common{minVersion: defMin, maxVersion: tls.VersionTLS13, secrets: secrets, alpn: c.GetAlpnProtocols()}
	if p := c.GetTlsParams(); p != nil {
		var err error
		if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
			if out.minVersion, err = version(v); err != nil {
				return nil, fmt.Errorf("tls_params.tls_minimum_protocol_version: %w", err)
			}
		}
		if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
			if out.maxVersion, err = version(v); err != nil {
				return nil, fmt.Errorf("tls_params.tls_maximum_protocol_version: %w", err)
			}
		}
		if out.minVersion > out.maxVersion {
			return nil, errors.New("tls_params: minimum protocol version is above the maximum")
		}
		for i, name := range p.GetCipherSuites() {
			ids, err := cipherSuites(name)
			if err != nil {
				return nil, fmt.Errorf("tls_params.cipher_suites[%d]: %w", i, err)
			}
			out.ciphers = append(out.ciphers, ids...)
		}
		for i, name := range p.GetEcdhCurves() {
			id, ok := curveIDs[name]
			if !ok {
				return nil, fmt.Errorf("tls_params.ecdh_curves[%d]: %q is not supported (want X25519, P-256, P-384 or P-521)", i, name)
			}
			out.curves = append(out.curves, id)
		}
	}
	if len(c.GetTlsCertificates()) > 0 && len(c.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return nil, errors.New("tls_certificates: cannot be combined with tls_certificate_sds_secret_configs")
	}
	for i, tc := range c.GetTlsCertificates() {
		chain, err := readSource(tc.GetCertificateChain())
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d].certificate_chain: %w", i, err)
		}
		key, err := readSource(tc.GetPrivateKey())
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d].private_key: %w", i, err)
		}
		cert, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		out.certs = append(out.certs, cert)
	}
	switch sds := c.GetTlsCertificateSdsSecretConfigs(); {
	case len(sds) > 1:
		return nil, errors.New("tls_certificate_sds_secret_configs: amime supports one secret")
	case len(sds) == 1:
		if err := checkSDS(sds[0], secrets); err != nil {
			return nil, fmt.Errorf("tls_certificate_sds_secret_configs[0].%w", err)
		}
		out.certSDS = sds[0].GetName()
	}
	var vc *tlsv3.CertificateValidationContext
	var vcPath string
	switch v := c.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc, vcPath = v.ValidationContext, "validation_context"
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		if err := checkSDS(v.ValidationContextSdsSecretConfig, secrets); err != nil {
			return nil, fmt.Errorf("validation_context_sds_secret_config.%w", err)
		}
		out.verify, out.rootsSDS = true, v.ValidationContextSdsSecretConfig.GetName()
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		sds := v.CombinedValidationContext.GetValidationContextSdsSecretConfig()
		if err := checkSDS(sds, secrets); err != nil {
			return nil, fmt.Errorf("combined_validation_context.validation_context_sds_secret_config.%w", err)
		}
		out.verify, out.rootsSDS = true, sds.GetName()
		vc, vcPath = v.CombinedValidationContext.GetDefaultValidationContext(), "combined_validation_context.default_validation_context"
	default:
		return nil, fmt.Errorf("validation context %T is not supported by amime", v)
	}
	if vc != nil {
		if err := out.compileValidation(vc); err != nil {
			return nil, fmt.Errorf("%s.%w", vcPath, err)
		}
	}
	return out, nil
}

func (c *common) compileValidation(vc *tlsv3.CertificateValidationContext) error {
	c.verify = true
	if ca := vc.GetTrustedCa(); ca != nil {
		if c.rootsSDS != "" {
			return errors.New("trusted_ca: cannot be combined with an SDS validation context")
		}
		pemData, err := readSource(ca)
		if err != nil {
			return fmt.Errorf("trusted_ca: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pemData) {
			return errors.New("trusted_ca: no PEM certificate found")
		}
	}
	if vc.GetSystemRootCerts() != nil {
		if c.roots != nil || c.rootsSDS != "" {
			return errors.New("system_root_certs: cannot be combined with trusted_ca or an SDS validation context")
		}
		c.systemRoots = true
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		sm, err := matcher.NewString(m.GetMatcher(), fmt.Sprintf("match_typed_subject_alt_names[%d].matcher", i))
		if err != nil {
			return err
		}
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED {
			return fmt.Errorf("match_typed_subject_alt_names[%d].san_type: must be set", i)
		}
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_OTHER_NAME {
			return fmt.Errorf("match_typed_subject_alt_names[%d].san_type: OTHER_NAME is not supported by amime", i)
		}
		c.sans = append(c.sans, sanMatcher{typ: m.GetSanType(), m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := matcher.NewString(m, fmt.Sprintf("match_subject_alt_names[%d]", i))
		if err != nil {
			return err
		}
		c.sans = append(c.sans, sanMatcher{m: sm})
	}
	c.acceptChain = vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	if c.roots == nil && c.rootsSDS == "" && !c.systemRoots && !c.acceptChain {
		return errors.New("trusted_ca: required to verify the peer (or system_root_certs, or trust_chain_verification ACCEPT_UNTRUSTED)")
	}
	return nil
}

func checkSDS(s *tlsv3.SdsSecretConfig, secrets Secrets) error {
	if s.GetName() == "" {
		return errors.New("name: must not be empty")
	}
	if secrets == nil {
		return fmt.Errorf("name: SDS secret %q: this proxy has no workload identity to serve it (start it with a CA token)", s.GetName())
	}
	return nil
}

func readSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, fmt.Errorf("filename: %w", err)
		}
		return b, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("environment_variable: %s is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	default:
		return nil, errors.New("a data source (filename, inline_bytes, inline_string or environment_variable) is required")
	}
}

func version(v tlsv3.TlsParameters_TlsProtocol) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%v is not a TLS version", v)
}

var curveIDs = map[string]tls.CurveID{
	"X25519": tls.X25519, "P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
}

// cipherSuites maps an Envoy (BoringSSL) cipher name, or an
// equal-preference group "[A|B]", to Go's suites. TLS 1.3 suites are not
// configurable in Envoy either.
func cipherSuites(name string) ([]uint16, error) {
	names := []string{name}
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		names = strings.Split(name[1:len(name)-1], "|")
	}
	var out []uint16
	for _, n := range names {
		id, ok := boringNames[n]
		if !ok {
			return nil, fmt.Errorf("%q is not a supported cipher suite", n)
		}
		out = append(out, id)
	}
	return out, nil
}

var boringNames = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType // unspecified: any type (match_subject_alt_names)
	m   matcher.String
}

func (s sanMatcher) match(c *x509.Certificate) bool {
	any := s.typ == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED
	if any || s.typ == tlsv3.SubjectAltNameMatcher_URI {
		for _, u := range c.URIs {
			if s.m.Match(u.String()) {
				return true
			}
		}
	}
	if any || s.typ == tlsv3.SubjectAltNameMatcher_DNS {
		for _, d := range c.DNSNames {
			if s.m.Match(d) || (s.typ == tlsv3.SubjectAltNameMatcher_DNS && dnsWildcardMatch(d, s.m)) {
				return true
			}
		}
	}
	if any || s.typ == tlsv3.SubjectAltNameMatcher_EMAIL {
		for _, e := range c.EmailAddresses {
			if s.m.Match(e) {
				return true
			}
		}
	}
	if any || s.typ == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
		for _, ip := range c.IPAddresses {
			if s.m.Match(ip.String()) {
				return true
			}
		}
	}
	return false
}

// dnsWildcardMatch: Envoy matches an exact DNS matcher against a wildcard
// SAN such as *.example.com (one label).
func dnsWildcardMatch(san string, m matcher.String) bool {
	if m.Kind != matcher.Exact || !strings.HasPrefix(san, "*.") {
		return false
	}
	_, rest, ok := strings.Cut(m.Value, ".")
	return ok && strings.EqualFold(rest, san[2:])
}

// certificate returns the certificate to present, nil for none.
func (c *common) certificate() (*tls.Certificate, error) {
	if c.certSDS != "" {
		return c.secrets.Certificate(c.certSDS)
	}
	if len(c.certs) > 0 {
		return &c.certs[0], nil
	}
	return nil, nil
}

// verifyPeer checks the peer's chain and SANs as configured.
func (c *common) verifyPeer(cs tls.ConnectionState) error {
	if !c.verify {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if !c.acceptChain {
		roots := c.roots // nil with systemRoots: x509 uses the host's store
		if c.rootsSDS != "" {
			var err error
			if roots, err = c.secrets.Roots(c.rootsSDS); err != nil {
				return fmt.Errorf("tls: trust bundle %q: %w", c.rootsSDS, err)
			}
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("tls: peer certificate: %w", err)
		}
	}
	if len(c.sans) == 0 {
		return nil
	}
	for _, s := range c.sans {
		if s.match(leaf) {
			return nil
		}
	}
	return fmt.Errorf("tls: peer certificate %s matches no configured subject alternative name", PeerPrincipal(cs))
}

func (c *common) base() *tls.Config {
	return &tls.Config{
		MinVersion:       c.minVersion,
		MaxVersion:       c.maxVersion,
		CipherSuites:     c.ciphers,
		CurvePreferences: c.curves,
		NextProtos:       c.alpn,
	}
}

// PeerPrincipal is the peer's identity as Envoy names it for RBAC and
// telemetry: its first URI SAN, else first DNS SAN, else the subject; ""
// without a peer certificate.
func PeerPrincipal(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	c := cs.PeerCertificates[0]
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

// Client is a compiled UpstreamTlsContext.
type Client struct {
	c   *common
	sni string
	cfg *tls.Config
}

// CompileUpstream compiles an UpstreamTlsContext; secrets may be nil when
// the proxy has no workload identity (SDS secrets are then refused).
func CompileUpstream(a *anypb.Any, secrets Secrets) (*Client, error) {
	u := &tlsv3.UpstreamTlsContext{}
	if err := a.UnmarshalTo(u); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if err := Rules().Check(u); err != nil {
		return nil, fmt.Errorf("typed_config.%w", err)
	}
	c, err := compileCommon(u.GetCommonTlsContext(), secrets, tls.VersionTLS12)
	if err != nil {
		return nil, fmt.Errorf("typed_config.common_tls_context.%w", err)
	}
	cl := &Client{c: c, sni: u.GetSni()}
	cfg := c.base()
	cfg.ServerName = u.GetSni()
	// Verification is Envoy's (verifyPeer), not Go's hostname check.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = c.verifyPeer
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cert, err := c.certificate()
		if cert == nil && err == nil {
			return &tls.Certificate{}, nil
		}
		return cert, err
	}
	if n := u.GetMaxSessionKeys(); n == nil || n.GetValue() > 0 {
		size := 1
		if n != nil {
			size = int(n.GetValue())
		}
		cfg.ClientSessionCache = &certSessions{c: c, inner: tls.NewLRUClientSessionCache(size)}
	}
	cl.cfg = cfg
	return cl, nil
}

// SNI is the configured server name.
func (cl *Client) SNI() string { return cl.sni }

// Handshake runs the client handshake over nc, bounded by ctx, offering
// alpn instead of the configured protocols when not nil.
func (cl *Client) Handshake(ctx context.Context, nc net.Conn, alpn []string) (*tls.Conn, error) {
	cfg := cl.cfg
	if alpn != nil {
		cfg = cfg.Clone()
		cfg.NextProtos = alpn
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// Server is a compiled DownstreamTlsContext.
type Server struct {
	c          *common
	requireSNI bool
	cfg        *tls.Config
	// ticketSecret, with the presented certificate, makes the session
	// ticket key.
	ticketSecret [32]byte
}

func (s *Server) ticketKey(cert *tls.Certificate) [32]byte {
	h := sha256.New()
	h.Write(s.ticketSecret[:])
	if len(cert.Certificate) > 0 {
		h.Write(cert.Certificate[0])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// certSessions keys the client session cache by the certificate this side
// presents: after a rotation, new connections make a full handshake with
// the new certificate instead of resuming a session authenticated with
// the old one (Envoy builds a new SSL context per secret update).
type certSessions struct {
	c     *common
	inner tls.ClientSessionCache
}

func (s *certSessions) key(k string) string {
	cert, err := s.c.certificate()
	if err != nil || cert == nil || len(cert.Certificate) == 0 {
		return k
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return hex.EncodeToString(sum[:8]) + "|" + k
}

func (s *certSessions) Get(k string) (*tls.ClientSessionState, bool) { return s.inner.Get(s.key(k)) }
func (s *certSessions) Put(k string, cs *tls.ClientSessionState)     { s.inner.Put(s.key(k), cs) }

// CompileDownstream compiles a DownstreamTlsContext.
func CompileDownstream(a *anypb.Any, secrets Secrets) (*Server, error) {
	d := &tlsv3.DownstreamTlsContext{}
	if err := a.UnmarshalTo(d); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if err := Rules().Check(d); err != nil {
		return nil, fmt.Errorf("typed_config.%w", err)
	}
	c, err := compileCommon(d.GetCommonTlsContext(), secrets, tls.VersionTLS12)
	if err != nil {
		return nil, fmt.Errorf("typed_config.common_tls_context.%w", err)
	}
	if len(c.certs) == 0 && c.certSDS == "" {
		return nil, errors.New("typed_config.common_tls_context.tls_certificates: a server certificate is required")
	}
	s := &Server{c: c, requireSNI: d.GetRequireSni().GetValue()}
	if _, err := rand.Read(s.ticketSecret[:]); err != nil {
		return nil, fmt.Errorf("session ticket secret: %w", err)
	}
	cfg := c.base()
	switch {
	case d.GetRequireClientCertificate().GetValue():
		if !c.verify {
			return nil, errors.New("typed_config.require_client_certificate: needs a validation context")
		}
		cfg.ClientAuth = tls.RequireAnyClientCert
	case c.verify:
		// Envoy asks for a certificate when it can validate one, and
		// verifies it if given.
		cfg.ClientAuth = tls.RequestClientCert
	}
	cfg.SessionTicketsDisabled = d.GetDisableStatelessSessionResumption()
	cfg.GetConfigForClient = s.configFor
	s.cfg = cfg
	return s, nil
}

func (s *Server) configFor(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if s.requireSNI && hello.ServerName == "" {
		return nil, errors.New("tls: client sent no server name and require_sni is set")
	}
	cert, err := s.c.certificate()
	if err != nil {
		return nil, err
	}
	cfg := s.cfg.Clone()
	cfg.GetConfigForClient = nil
	cfg.Certificates = []tls.Certificate{*cert}
	if !cfg.SessionTicketsDisabled {
		// Tickets are sealed with a key bound to the certificate presented:
		// after a rotation a resumed session would present the old one.
		cfg.SetSessionTicketKeys([][32]byte{s.ticketKey(cert)})
	}
	if len(s.c.certs) > 1 {
		cfg.Certificates = s.c.certs
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 && cfg.ClientAuth != tls.RequireAnyClientCert {
			return nil
		}
		return s.c.verifyPeer(cs)
	}
	// Envoy goes on without ALPN when nothing overlaps; Go would fail.
	if len(cfg.NextProtos) > 0 && !overlaps(cfg.NextProtos, hello.SupportedProtos) {
		cfg.NextProtos = nil
	}
	return cfg, nil
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// Conn is a downstream TLS connection with what the proxy reads of its
// peer per request, computed once at the handshake.
type Conn struct {
	*tls.Conn
	// Peer is the peer certificate (nil without one); PeerPrincipal its
	// identity (see PeerPrincipal).
	Peer          *x509.Certificate
	PeerPrincipal string
	// LocalPrincipal is the first URI SAN of the certificate this side
	// presented ("" if none).
	LocalPrincipal string
	SNI            string
}

// Handshake runs the server handshake over nc, bounded by ctx.
func (s *Server) Handshake(ctx context.Context, nc net.Conn) (*Conn, error) {
	tc := tls.Server(nc, s.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	c := &Conn{Conn: tc, PeerPrincipal: PeerPrincipal(cs), SNI: cs.ServerName}
	if len(cs.PeerCertificates) > 0 {
		c.Peer = cs.PeerCertificates[0]
	}
	if cert, err := s.c.certificate(); err == nil && cert != nil {
		leaf := cert.Leaf
		if leaf == nil && len(cert.Certificate) > 0 {
			leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		if leaf != nil && len(leaf.URIs) > 0 {
			c.LocalPrincipal = leaf.URIs[0].String()
		}
	}
	return c, nil
}

// IsRawBuffer reports whether a transport socket is the plaintext one.
func IsRawBuffer(ts *corev3.TransportSocket) bool {
	return ts == nil || ts.GetTypedConfig().GetTypeUrl() == rawBufferTypeURL
}
