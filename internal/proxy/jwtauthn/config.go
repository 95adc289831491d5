package jwtauthn

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/header"
)

// Name is the filter's well-known name, the key Istio uses for it in
// http_filters and typed_per_filter_config, and the dynamic metadata
// namespace the verified payloads are written under.
const Name = "envoy.filters.http.jwt_authn"

// TypeURL is the filter configuration's type.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"

// PerRouteTypeURL is the type of its typed_per_filter_config entries.
const PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"

// Envoy's defaults (JwtProvider.clock_skew_seconds, RemoteJwks.cache_duration,
// JwksAsyncFetch.failed_refetch_duration).
const (
	defaultClockSkew     = 60
	defaultCacheDuration = 10 * time.Minute
	defaultFailedRefetch = time.Second
)

// Config is a compiled JwtAuthentication. It is immutable; a Filter built
// from it owns the remote JWKS state.
type Config struct {
	providers    []*provider // sorted by name; index is provider.index
	rules        []rule
	reqMap       map[string]*verifier
	reqNames     string // sorted, comma-separated, for the per-route error
	bypassCORS   bool
	stripFailure bool
	warnings     []string
}

// Warnings lists configuration Envoy accepts but that cannot verify any
// token (e.g. a local_jwks without a valid key), for the integrator to log.
func (c *Config) Warnings() []string { return c.warnings }

// provider is a compiled JwtProvider.
type provider struct {
	index           int
	name, issuer    string
	audiences       audiences
	forward         bool
	ext             *extractor
	payloadHeader   string // forward_payload_header, lower-case
	padPayload      bool
	payloadInMeta   string
	headerInMeta    string
	clockSkew       uint64
	claimToHeaders  []claimToHeader
	clearRouteCache bool
	local           *keySet       // local_jwks; nil if remote or invalid
	remote          *remoteConfig // remote_jwks
}

type claimToHeader struct {
	header string   // lower-case
	path   []string // claim_name split on "."
}

type remoteConfig struct {
	provider      string
	cluster, uri  string
	timeout       time.Duration
	cacheDuration time.Duration
	failedRefetch time.Duration
	fastListener  bool
}

// audiences is a provider's allowed audience set, sanitized as Envoy's
// CheckAudience does; nil allows any (and no) aud.
type audiences map[string]struct{}

func newAudiences(list []string) audiences {
	if len(list) == 0 {
		return nil
	}
	a := make(audiences, len(list))
	for _, s := range list {
		a[sanitizeAudience(s)] = struct{}{}
	}
	return a
}

// sanitizeAudience drops an http:// or https:// prefix and one trailing
// slash, so "https://api.example.com/" and "api.example.com" are equal.
func sanitizeAudience(s string) string {
	if s == "" {
		return s
	}
	if t, ok := strings.CutPrefix(s, "http://"); ok {
		s = t
	} else if t, ok := strings.CutPrefix(s, "https://"); ok {
		s = t
	}
	return strings.TrimSuffix(s, "/")
}

func (a audiences) allowed(aud []string) bool {
	if a == nil {
		return true
	}
	for _, s := range aud {
		if _, ok := a[sanitizeAudience(s)]; ok {
			return true
		}
	}
	return false
}

// Parse decodes and compiles a JwtAuthentication carried in an Any (the
// filter's typed_config).
func Parse(a *anypb.Any) (*Config, error) {
	m := &jwtv3.JwtAuthentication{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	return Compile(m)
}

// Compile checks a JwtAuthentication against Rules and Envoy's proto
// constraints, and compiles it.
func Compile(m *jwtv3.JwtAuthentication) (*Config, error) {
	if err := Rules().Check(m); err != nil {
		return nil, fmt.Errorf("JwtAuthentication: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("JwtAuthentication: %w", err)
	}
	c := &Config{bypassCORS: m.GetBypassCorsPreflight(), stripFailure: m.GetStripFailureResponse()}
	names := make([]string, 0, len(m.GetProviders()))
	for n := range m.GetProviders() {
		names = append(names, n)
	}
	sort.Strings(names)
	byName := make(map[string]*provider, len(names))
	for i, n := range names {
		p, err := c.compileProvider(i, n, m.GetProviders()[n])
		if err != nil {
			return nil, err
		}
		c.providers = append(c.providers, p)
		byName[n] = p
	}

	reqNames := make([]string, 0, len(m.GetRequirementMap()))
	for n := range m.GetRequirementMap() {
		reqNames = append(reqNames, n)
	}
	sort.Strings(reqNames)
	c.reqNames = strings.Join(reqNames, ",")
	c.reqMap = make(map[string]*verifier, len(reqNames))
	for _, n := range reqNames {
		v, err := c.compileRequirement(m.GetRequirementMap()[n], byName, fmt.Sprintf("requirement_map[%q]", n))
		if err != nil {
			return nil, err
		}
		c.reqMap[n] = v
	}

	for i, r := range m.GetRules() {
		p := fmt.Sprintf("rules[%d]", i)
		mt, err := compileMatch(r.GetMatch(), p+".match")
		if err != nil {
			return nil, err
		}
		cr := rule{match: mt}
		switch rt := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if cr.v, err = c.compileRequirement(rt.Requires, byName, p+".requires"); err != nil {
				return nil, err
			}
		case *jwtv3.RequirementRule_RequirementName:
			v, ok := c.reqMap[rt.RequirementName]
			if !ok {
				return nil, fmt.Errorf("%s.requirement_name: Wrong requirement_name: %s. It should be one of [%s]", p, rt.RequirementName, c.reqNames)
			}
			cr.v = v
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

func (c *Config) compileProvider(index int, name string, m *jwtv3.JwtProvider) (*provider, error) {
	path := fmt.Sprintf("providers[%q]", name)
	p := &provider{
		index:           index,
		name:            name,
		issuer:          m.GetIssuer(),
		audiences:       newAudiences(m.GetAudiences()),
		forward:         m.GetForward(),
		payloadHeader:   header.Lower(m.GetForwardPayloadHeader()),
		padPayload:      m.GetPadForwardPayloadHeader(),
		payloadInMeta:   m.GetPayloadInMetadata(),
		headerInMeta:    m.GetHeaderInMetadata(),
		clockSkew:       uint64(m.GetClockSkewSeconds()),
		clearRouteCache: m.GetClearRouteCache(),
	}
	if p.clockSkew == 0 {
		p.clockSkew = defaultClockSkew
	}
	for _, ch := range m.GetClaimToHeaders() {
		p.claimToHeaders = append(p.claimToHeaders, claimToHeader{
			header: header.Lower(ch.GetHeaderName()),
			path:   strings.Split(ch.GetClaimName(), "."),
		})
	}
	switch src := m.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		var data []byte
		switch {
		case src.LocalJwks.GetFilename() != "":
			b, err := os.ReadFile(src.LocalJwks.GetFilename())
			if err != nil {
				return nil, fmt.Errorf("%s.local_jwks.filename: %w", path, err)
			}
			data = b
		case src.LocalJwks.GetInlineBytes() != nil:
			data = src.LocalJwks.GetInlineBytes()
		default:
			data = []byte(src.LocalJwks.GetInlineString())
		}
		ks, err := parseJWKS(data)
		if err != nil {
			// Envoy accepts the configuration and fails the provider's
			// tokens; istiod relies on that when it cannot fetch a JWKS.
			c.warnings = append(c.warnings, fmt.Sprintf("%s.local_jwks: %v", path, err))
		}
		p.local = ks
	case *jwtv3.JwtProvider_RemoteJwks:
		r := src.RemoteJwks
		p.remote = &remoteConfig{
			provider:      name,
			cluster:       r.GetHttpUri().GetCluster(),
			uri:           r.GetHttpUri().GetUri(),
			timeout:       r.GetHttpUri().GetTimeout().AsDuration(),
			cacheDuration: defaultCacheDuration,
			failedRefetch: defaultFailedRefetch,
		}
		if d := r.GetCacheDuration(); d != nil && d.AsDuration() > 0 {
			p.remote.cacheDuration = d.AsDuration()
		}
		if af := r.GetAsyncFetch(); af != nil {
			p.remote.fastListener = af.GetFastListener()
			if d := af.GetFailedRefetchDuration(); d != nil && d.AsDuration() > 0 {
				p.remote.failedRefetch = d.AsDuration()
			}
		}
	default:
		c.warnings = append(c.warnings, fmt.Sprintf("%s: no local_jwks or remote_jwks: its tokens always fail", path))
	}
	p.ext = newExtractor([]*provider{p}, []*jwtv3.JwtProvider{m})
	return p, nil
}

// findByIssuer picks the provider for a token when the requirement names
// none (allow_missing, allow_missing_or_failed): the first provider with
// the token's issuer, else the first without an issuer.
func (c *Config) findByIssuer(iss string) *provider {
	var anyIssuer *provider
	for _, p := range c.providers {
		if p.issuer == iss {
			return p
		}
		if p.issuer == "" && anyIssuer == nil {
			anyIssuer = p
		}
	}
	return anyIssuer
}

// extractor finds a request's tokens in the locations of a set of
// providers. Each location remembers which issuers named it: a token
// found there with another issuer is StatusUnknownIssuer.
type extractor struct {
	headers  []headerLoc
	params   []paramLoc
	cookies  []paramLoc
	sanitize []string // forward_payload_header and claim_to_headers names
}

type issuers struct {
	all bool // a provider without issuer named the location
	set map[string]struct{}
}

func (s *issuers) add(iss string) {
	if iss == "" {
		s.all = true
		return
	}
	if s.set == nil {
		s.set = map[string]struct{}{}
	}
	s.set[iss] = struct{}{}
}

func (s *issuers) allowed(iss string) bool {
	if s.all {
		return true
	}
	_, ok := s.set[iss]
	return ok
}

type headerLoc struct {
	name, prefix string
	iss          *issuers
}

type paramLoc struct {
	name string
	iss  *issuers
}

func newExtractor(ps []*provider, ms []*jwtv3.JwtProvider) *extractor {
	e := &extractor{}
	addHeader := func(iss, name, prefix string) {
		name = header.Lower(name)
		for i := range e.headers {
			if e.headers[i].name == name && e.headers[i].prefix == prefix {
				e.headers[i].iss.add(iss)
				return
			}
		}
		h := headerLoc{name: name, prefix: prefix, iss: &issuers{}}
		h.iss.add(iss)
		e.headers = append(e.headers, h)
	}
	addParam := func(list *[]paramLoc, iss, name string) {
		for i := range *list {
			if (*list)[i].name == name {
				(*list)[i].iss.add(iss)
				return
			}
		}
		l := paramLoc{name: name, iss: &issuers{}}
		l.iss.add(iss)
		*list = append(*list, l)
	}
	for i, m := range ms {
		iss := ps[i].issuer
		for _, h := range m.GetFromHeaders() {
			addHeader(iss, h.GetName(), h.GetValuePrefix())
		}
		for _, n := range m.GetFromParams() {
			addParam(&e.params, iss, n)
		}
		for _, n := range m.GetFromCookies() {
			addParam(&e.cookies, iss, n)
		}
		if len(m.GetFromHeaders()) == 0 && len(m.GetFromParams()) == 0 && len(m.GetFromCookies()) == 0 {
			// Envoy's default locations (RFC 6750 §2.1 and §2.3).
			addHeader(iss, "authorization", "Bearer ")
			addParam(&e.params, iss, "access_token")
		}
		if ps[i].payloadHeader != "" {
			e.sanitize = append(e.sanitize, ps[i].payloadHeader)
		}
		for _, ch := range ps[i].claimToHeaders {
			e.sanitize = append(e.sanitize, ch.header)
		}
	}
	// Envoy keeps locations in ordered maps; the same order keeps which
	// failure is reported stable.
	sort.SliceStable(e.headers, func(i, j int) bool {
		return e.headers[i].name+e.headers[i].prefix < e.headers[j].name+e.headers[j].prefix
	})
	sort.SliceStable(e.params, func(i, j int) bool { return e.params[i].name < e.params[j].name })
	sort.SliceStable(e.cookies, func(i, j int) bool { return e.cookies[i].name < e.cookies[j].name })
	return e
}

// verifier is a compiled JwtRequirement.
type verifier struct {
	kind     verifierKind
	provider *provider // kindProvider
	audOver  audiences // provider_and_audiences' override; nil: the provider's
	ext      *extractor
	children []*verifier // kindAny, kindAll
	// For kindAny: allow_missing / allow_missing_or_failed among the
	// alternatives, applied to the aggregated status as Envoy does.
	allowMissing, allowFailed bool
}

type verifierKind uint8

const (
	kindAllowAll verifierKind = iota // requirement not set
	kindProvider
	kindAny
	kindAll
	kindAllowMissing
	kindAllowFailed
)

func (c *Config) compileRequirement(m *jwtv3.JwtRequirement, byName map[string]*provider, path string) (*verifier, error) {
	switch rt := m.GetRequiresType().(type) {
	case nil:
		return &verifier{kind: kindAllowAll}, nil
	case *jwtv3.JwtRequirement_ProviderName:
		return c.providerVerifier(rt.ProviderName, nil, byName, path+".provider_name")
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		return c.providerVerifier(rt.ProviderAndAudiences.GetProviderName(), rt.ProviderAndAudiences.GetAudiences(), byName, path+".provider_and_audiences.provider_name")
	case *jwtv3.JwtRequirement_RequiresAll:
		v := &verifier{kind: kindAll}
		for i, r := range rt.RequiresAll.GetRequirements() {
			cv, err := c.compileRequirement(r, byName, fmt.Sprintf("%s.requires_all.requirements[%d]", path, i))
			if err != nil {
				return nil, err
			}
			v.children = append(v.children, cv)
		}
		return v, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		v := &verifier{kind: kindAny}
		for i, r := range rt.RequiresAny.GetRequirements() {
			switch r.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissing:
				v.allowMissing = true
				continue
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				v.allowFailed = true
				continue
			}
			cv, err := c.compileRequirement(r, byName, fmt.Sprintf("%s.requires_any.requirements[%d]", path, i))
			if err != nil {
				return nil, err
			}
			v.children = append(v.children, cv)
		}
		if len(v.children) == 0 {
			// Only allow_missing[_or_failed]: verify whatever token any
			// provider accepts.
			k := kindAllowMissing
			if v.allowFailed {
				k = kindAllowFailed
			}
			v.children = append(v.children, c.allProvidersVerifier(k))
		}
		return v, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return c.allProvidersVerifier(kindAllowMissing), nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return c.allProvidersVerifier(kindAllowFailed), nil
	default:
		return nil, fmt.Errorf("%s: requirement %T is not supported by amime", path, rt)
	}
}

func (c *Config) providerVerifier(name string, aud []string, byName map[string]*provider, path string) (*verifier, error) {
	p, ok := byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: Required provider ['%s'] is not configured", path, name)
	}
	return &verifier{kind: kindProvider, provider: p, audOver: newAudiences(aud), ext: p.ext}, nil
}

func (c *Config) allProvidersVerifier(k verifierKind) *verifier {
	ms := make([]*jwtv3.JwtProvider, 0, len(c.providers))
	for _, p := range c.providers {
		ms = append(ms, p.proto())
	}
	return &verifier{kind: k, ext: newExtractor(c.providers, ms)}
}

// proto rebuilds the location part of the provider's configuration, for
// the merged extractor of allow_missing requirements.
func (p *provider) proto() *jwtv3.JwtProvider {
	m := &jwtv3.JwtProvider{}
	for _, h := range p.ext.headers {
		m.FromHeaders = append(m.FromHeaders, &jwtv3.JwtHeader{Name: h.name, ValuePrefix: h.prefix})
	}
	for _, l := range p.ext.params {
		m.FromParams = append(m.FromParams, l.name)
	}
	for _, l := range p.ext.cookies {
		m.FromCookies = append(m.FromCookies, l.name)
	}
	return m
}

// PerRoute is a compiled PerRouteConfig: the route's typed_per_filter_config
// entry for this filter.
type PerRoute struct {
	Disabled        bool
	RequirementName string
}

// ParsePerRoute parses a typed_per_filter_config entry; it is the
// route.FilterConfigParser the integrator registers under Name (and under
// the filter's name in http_filters).
func ParsePerRoute(a *anypb.Any) (any, error) {
	if a.GetTypeUrl() != PerRouteTypeURL {
		return nil, fmt.Errorf("type %q is not jwt_authn's per-route configuration (%s)", a.GetTypeUrl(), PerRouteTypeURL)
	}
	m := &jwtv3.PerRouteConfig{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	if err := Rules().Check(m); err != nil {
		return nil, fmt.Errorf("PerRouteConfig: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("PerRouteConfig: %w", err)
	}
	return &PerRoute{Disabled: m.GetDisabled(), RequirementName: m.GetRequirementName()}, nil
}

// Rules lists the JwtAuthentication (and PerRouteConfig) fields this
// package implements.
func Rules() fieldcheck.Rules {
	const pkg = "envoy.extensions.filters.http.jwt_authn.v3."
	return fieldcheck.Rules{
		pkg + "JwtAuthentication": {"providers", "rules", "bypass_cors_preflight", "requirement_map", "strip_failure_response"},
		pkg + "JwtProvider": {"issuer", "audiences", "remote_jwks", "local_jwks", "forward", "from_headers", "from_params",
			"from_cookies", "forward_payload_header", "pad_forward_payload_header", "payload_in_metadata",
			"header_in_metadata", "clock_skew_seconds", "claim_to_headers", "clear_route_cache"},
		pkg + "RemoteJwks":                {"http_uri", "cache_duration", "async_fetch"},
		pkg + "JwksAsyncFetch":            {"fast_listener", "failed_refetch_duration"},
		pkg + "JwtHeader":                 {"name", "value_prefix"},
		pkg + "JwtClaimToHeader":          {"header_name", "claim_name"},
		pkg + "RequirementRule":           {"match", "requires", "requirement_name"},
		pkg + "JwtRequirement":            {"provider_name", "provider_and_audiences", "requires_any", "requires_all", "allow_missing_or_failed", "allow_missing"},
		pkg + "ProviderWithAudiences":     {"provider_name", "audiences"},
		pkg + "JwtRequirementOrList":      {"requirements"},
		pkg + "JwtRequirementAndList":     {"requirements"},
		pkg + "PerRouteConfig":            {"disabled", "requirement_name"},
		"envoy.config.core.v3.HttpUri":    {"uri", "cluster", "timeout"},
		"envoy.config.core.v3.DataSource": {"filename", "inline_bytes", "inline_string"},
		"envoy.config.route.v3.RouteMatch": {"prefix", "path", "safe_regex", "path_separated_prefix",
			"case_sensitive", "headers"},
		"envoy.config.route.v3.HeaderMatcher": {"name", "exact_match", "safe_regex_match", "present_match",
			"prefix_match", "suffix_match", "contains_match", "string_match", "invert_match"},
		"envoy.type.matcher.v3.StringMatcher":          {"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"},
		"envoy.type.matcher.v3.RegexMatcher":           {"google_re2", "regex"},
		"envoy.type.matcher.v3.RegexMatcher.GoogleRE2": {fieldcheck.All},
	}
}
