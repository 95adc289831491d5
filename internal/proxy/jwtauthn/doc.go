// Package jwtauthn implements the decisions of Envoy's JWT authentication
// filter (envoy.filters.http.jwt_authn,
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication): find the
// request's JWTs, verify them against the providers a requirement names,
// and either let the request continue (with its header edits and dynamic
// metadata) or answer it locally. The connection manager executes the
// decision; this package parses configuration, keeps remote JWKS fresh and
// decides.
//
// # Use
//
//	cfg, err := jwtauthn.Parse(typedConfig)           // once per config
//	f, err := jwtauthn.New(cfg, jwtauthn.Options{Fetcher: clusterFetcher})
//	defer f.Close()                                    // stops JWKS refreshers
//	_ = f.WaitReady(ctx)                               // before taking traffic
//	pr, _ := rt.PerFilterConfig(name).(*jwtauthn.PerRoute)
//	res := f.Authenticate(ctx, &jwtauthn.Request{...}, pr)
//	if !res.Passed() { reply res.Code, res.Body, www-authenticate: res.WWWAuthenticate }
//	md := res.Metadata()                               // when a later filter needs it
//
// ParsePerRoute is the route.FilterConfigParser for PerRouteConfig entries.
//
// # Behaviour (Envoy's)
//
// Tokens are taken from each provider's from_headers (value_prefix found
// in the value, the token starting at the next base64url character),
// from_params and from_cookies; with none given, from "Authorization:
// Bearer <t>" and the access_token query parameter. A token must have the
// issuer of a provider naming its location. Checks run in Envoy's order:
// format and claim types, issuer, exp/nbf with clock_skew_seconds (60 by
// default), audiences (any match; "https://x/" equals "x"; none configured
// allows any), then the signature: RS/PS/ES 256/384/512, EdDSA, and HS*
// with "oct" JWKS keys only. A key with another kid (when both have one)
// or another alg (when the key names one) is skipped. "alg: none" and
// unknown algorithms are refused at parse. Every token found must verify.
//
// Requirements: provider_name, provider_and_audiences, requires_all,
// requires_any (allow_missing / allow_missing_or_failed in it apply to the
// aggregated result: a request without any token passes, one with a bad
// token fails), allow_missing, allow_missing_or_failed. Istio's
// RequestAuthentication translates to one rule, prefix "/", requiring
// requires_any{provider, allow_missing} for one jwtRule, and
// requires_any{p1, ..., pn, requires_all{requires_any{p1, allow_missing},
// ...}} for several: a request with no token passes without principal, a
// request with an invalid token gets 401.
//
// Failures answer 401 (403 for "Audiences in Jwt are not allowed") with
// Envoy's status text as body and "www-authenticate: Bearer
// realm=\"<scheme>://<host><path>\"", plus `, error="invalid_token"` unless
// the token is missing. strip_failure_response leaves body and header
// empty. A PerRouteConfig naming a requirement absent from requirement_map
// answers 403 "Failed JWT authentication: Wrong requirement_name: ...".
//
// On success, unless forward, the token's header is removed (or its query
// parameter, from Request.Path; cookies stay); forward_payload_header
// carries the base64url payload (padded with pad_forward_payload_header);
// claim_to_headers copies string, number and boolean claims (dotted paths
// reach nested claims). Those headers are first removed from the request,
// so a client cannot forge them.
//
// # Dynamic metadata
//
// Result.Metadata returns two namespaces:
//
//   - "envoy.filters.http.jwt_authn": for each verified token, its payload
//     as a Struct under payload_in_metadata, and its JOSE header under
//     header_in_metadata (istiod sets payload_in_metadata to the issuer).
//   - "istio_authn": Istio's request authentication attributes, from the
//     first verified token, which Istio's authorization (the RBAC filter's
//     metadata matchers on filter istio_authn) reads:
//     "request.auth.principal" (string "<iss>/<sub>", absent without
//     both), "request.auth.audiences" (string: the first aud, as Istio's
//     authn filter set it, so a string matcher applies),
//     "request.auth.presenter" (string azp), "request.auth.claims" (Struct;
//     each string claim a list of its space-separated words, each list of
//     strings a list, objects nested Structs, other types omitted, so
//     claims[groups] is matched with a list one_of matcher) and
//     "request.auth.raw_claims" (the payload JSON).
//
// A request that passes without a token has no metadata.
//
// # Remote JWKS
//
// remote_jwks are fetched through the integrator's Fetcher (the http_uri
// cluster and uri, bounded by its timeout) by a goroutine per provider
// that the Filter owns: at New, then every cache_duration (10 minutes by
// default), or after async_fetch.failed_refetch_duration (1 second by
// default) when a fetch fails. A failed fetch keeps the last good keys; a
// provider that never had keys fails its tokens with "Jwks remote fetch is
// failed". Requests arriving during the first fetch wait for it (bounded
// by their context), as Envoy pauses them.
//
// Not implemented, refused by Rules: filter_state_rules, stat_prefix,
// jwt_cache_config, require_expiration, max_lifetime, subjects,
// failed_status_in_metadata, normalize_payload_in_metadata,
// extract_only_without_validation, remote_jwks.retry_policy, RouteMatch
// query_parameters and other matchers beyond path and headers.
package jwtauthn
