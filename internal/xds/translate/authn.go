package translate

import (
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"

	"github.com/amime-mesh/amime/internal/config"
)

// jwtAuthnFilterName is the HTTP filter name Istio gives jwt_authn.
const jwtAuthnFilterName = "envoy.filters.http.jwt_authn"

// FailClosedJWKS is the key set a provider gets when its keys are unknown
// (jwksUri not fetched, discovery failed): one RSA public key whose
// private key was never kept, so no token verifies (istiod does the same
// with its fake JWKS).
const FailClosedJWKS = `{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"amime-fail-closed","e":"AQAB",` +
	`"n":"wjG4-qL65RXKu45i05GIuZddskg0HO5RT-fWINaC0xbb65yt7eAlBe_MfQ2SuiKCH3RQdtFHgIMos54xkDy0_ilfolWB88DzQh9LJlh_o1DJEfpQFLN3Q6olTb3FYANCkjcLSob_ohlxOw0_QTfbNN3Tvmtdb9Mwm5mC9sMZ1A5prX65P9uY0SD1qkSH_k8sLykIGOY9JDwZV7aYZ_CK5L8agy3CF1FCT6iGE79NU_7lm9dEwWrCRld4khRpWJHKgRUVhnZv10Ep4h8pPSF582hrF1YAO2q6UQSBKaW-mTFOK64PthaY-E5TBB3hm62Y6x-GAMHQ-5C_27boaVTgww"}]}`

// Istio always treats these claims as space-delimited lists.
var defaultSpaceDelimitedClaims = []string{"scope", "permission"}

// jwtRuleRef is one jwtRule with the policy it comes from.
type jwtRuleRef struct {
	obj  *config.Object
	idx  int
	rule *security.JWTRule
}

// jwtAuthnFilter translates the RequestAuthentications that apply to the
// proxy into Envoy's jwt_authn filter, shaped as istiod's: one provider
// "origins-<i>" per jwtRule (sorted by issuer), the verified payload in
// metadata under the issuer, and one requirement for every path that
// accepts requests without a token but rejects an invalid one. Key sets
// come from the rule's jwks, else from Input.JWKS by jwksUri (by issuer
// when neither is set: OpenID discovery); unknown ones fail closed. nil
// when no RequestAuthentication applies.
func (b *builder) jwtAuthnFilter() *hcmv3.HttpFilter {
	var rules []jwtRuleRef
	for _, o := range precedence(b.in.RequestAuthentications, b.proxy.Namespace) {
		ra, ok := o.Spec.(*security.RequestAuthentication)
		if !ok {
			continue
		}
		switch b.policyBinding(o, ra.GetSelector(), ra.GetTargetRef(), ra.GetTargetRefs()) {
		case bindNone:
			continue
		case bindUnresolved:
			// Skipping cannot open access: without the filter no request
			// carries a request principal, so ALLOW rules on them match
			// nothing.
			b.warnf(o, "targetRef: not translated (amime binds policies by selector or Gateway name only); policy skipped: its tokens are not verified and grant no request principal")
			continue
		}
		for i, r := range ra.GetJwtRules() {
			if r == nil || r.GetIssuer() == "" {
				b.warnf(o, "jwtRules[%d]: issuer is required; rule skipped", i)
				continue
			}
			rules = append(rules, jwtRuleRef{obj: o, idx: i, rule: r})
		}
	}
	if len(rules) == 0 {
		return nil
	}
	// Deterministic order, as istiod: by issuer, then policy precedence.
	slices.SortStableFunc(rules, func(x, y jwtRuleRef) int {
		switch {
		case x.rule.GetIssuer() < y.rule.GetIssuer():
			return -1
		case x.rule.GetIssuer() > y.rule.GetIssuer():
			return 1
		}
		return 0
	})
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, BypassCorsPreflight: true}
	var each, any []*jwtv3.JwtRequirement
	for i, r := range rules {
		name := "origins-" + strconv.Itoa(i)
		cfg.Providers[name] = b.jwtProvider(r)
		provider := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
		each = append(each, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
			Requirements: []*jwtv3.JwtRequirement{provider, {RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}},
		}}})
		any = append(any, provider)
	}
	req := each[0]
	if len(each) > 1 {
		// Every token present must verify (the AND of "provider or
		// missing"), or one provider verifies it (providers sharing a
		// location would otherwise fail the AND): istiod's requirement.
		req = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
			Requirements: append(any, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: each}}}),
		}}}
	}
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: req},
	}}
	return &hcmv3.HttpFilter{Name: jwtAuthnFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

func (b *builder) jwtProvider(ref jwtRuleRef) *jwtv3.JwtProvider {
	r := ref.rule
	p := &jwtv3.JwtProvider{
		Issuer:               r.GetIssuer(),
		Audiences:            r.GetAudiences(),
		Forward:              r.GetForwardOriginalToken(),
		ForwardPayloadHeader: r.GetOutputPayloadToHeader(),
		PayloadInMetadata:    r.GetIssuer(),
		FromParams:           r.GetFromParams(),
		FromCookies:          r.GetFromCookies(),
	}
	for _, h := range r.GetFromHeaders() {
		p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	if len(p.FromHeaders) == 0 && len(p.FromParams) == 0 && len(p.FromCookies) == 0 {
		// Istio's (and Envoy's) default locations, spelled out so the
		// proxy need not know the defaults.
		p.FromHeaders = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
		p.FromParams = []string{"access_token"}
	}
	for _, c := range r.GetOutputClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: c.GetHeader(), ClaimName: c.GetClaim()})
	}
	if extra := r.GetSpaceDelimitedClaims(); len(extra) > 0 {
		claims := slices.Clone(defaultSpaceDelimitedClaims)
		for _, c := range extra {
			if !slices.Contains(claims, c) {
				claims = append(claims, c)
			}
		}
		p.NormalizePayloadInMetadata = &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: claims}
	}
	p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
		Specifier: &corev3.DataSource_InlineString{InlineString: b.jwks(ref)},
	}}
	return p
}

// jwks is the key set of a rule: inline, else what the control plane
// fetched for its jwksUri (or discovered for its issuer).
func (b *builder) jwks(ref jwtRuleRef) string {
	r := ref.rule
	if r.GetJwks() != "" {
		return r.GetJwks()
	}
	key, field := r.GetJwksUri(), "jwksUri"
	if key == "" {
		key, field = r.GetIssuer(), "issuer"
	}
	if s, ok := b.in.JWKS[key]; ok && s != "" {
		return s
	}
	b.warnf(ref.obj, "jwtRules[%d].%s: no key set fetched for %q (yet); tokens of issuer %q are rejected until it is (fail closed)", ref.idx, field, key, r.GetIssuer())
	return FailClosedJWKS
}
