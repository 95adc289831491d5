package route

import (
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
)

// Rules is the allow-list of the envoy.config.route.v3 (and matcher, core)
// fields this package implements. The proxy merges it with the other
// packages' rules and checks every configuration with the result before
// Compile.
//
// RetryPolicy is listed with the fields the router executes through
// (*Route).RetryPolicyCompiled; per_try_idle_timeout, retriable_headers and
// retriable_request_headers are not implemented, so they are refused. typed_per_filter_config values are Any: each filter
// that registers a FilterConfigParser must also list its config type.
// Metadata is accepted whole: it is opaque data for filters.
func Rules() fieldcheck.Rules {
	return fieldcheck.Merge(fieldcheck.Rules{
		"envoy.config.route.v3.RouteConfiguration": {
			"name", "virtual_hosts", "response_headers_to_add", "response_headers_to_remove",
			"request_headers_to_add", "request_headers_to_remove", "most_specific_header_mutations_wins",
			"validate_clusters", "max_direct_response_body_size_bytes", "ignore_port_in_host_matching",
			"ignore_path_parameters_in_path_matching", "typed_per_filter_config", "metadata",
		},
		"envoy.config.route.v3.VirtualHost": {
			"name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config",
			"include_request_attempt_count", "include_attempt_count_in_response", "retry_policy", "metadata",
			"require_tls",
		},
		"envoy.config.route.v3.Route": {
			"name", "match", "route", "redirect", "direct_response", "metadata", "decorator", "tracing",
			"typed_per_filter_config", "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove",
		},
		"envoy.config.route.v3.RouteMatch": {
			"prefix", "path", "safe_regex", "connect_matcher", "path_separated_prefix",
			"case_sensitive", "headers", "query_parameters", "grpc",
		},
		"envoy.config.route.v3.RouteMatch.ConnectMatcher":        {},
		"envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions": {},
		"envoy.config.route.v3.HeaderMatcher": {
			"name", "exact_match", "safe_regex_match", "range_match", "present_match", "prefix_match",
			"suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty",
		},
		"envoy.config.route.v3.QueryParameterMatcher":   {"name", "string_match", "present_match"},
		"envoy.type.matcher.v3.StringMatcher":           {"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"},
		"envoy.type.matcher.v3.RegexMatcher":            {"google_re2", "regex"},
		"envoy.type.matcher.v3.RegexMatcher.GoogleRE2":  {},
		"envoy.type.matcher.v3.RegexMatchAndSubstitute": {"pattern", "substitution"},
		"envoy.type.v3.Int64Range":                      {"start", "end"},
		"envoy.config.route.v3.RouteAction": {
			"cluster", "cluster_header", "weighted_clusters", "cluster_not_found_response_code",
			"prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "auto_host_rewrite",
			"host_rewrite_header", "timeout", "idle_timeout", "retry_policy", "max_grpc_timeout",
			"grpc_timeout_offset", "max_stream_duration", "request_mirror_policies", "hash_policy",
		},
		// Executed by the proxy for RING_HASH and MAGLEV clusters
		// (hcm/hash.go); cookie attributes and filter_state are refused.
		"envoy.config.route.v3.RouteAction.HashPolicy": {
			"header", "cookie", "connection_properties", "query_parameter", "terminal",
		},
		"envoy.config.route.v3.RouteAction.HashPolicy.Header":               {"header_name"},
		"envoy.config.route.v3.RouteAction.HashPolicy.Cookie":               {"name", "path", "ttl"},
		"envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": {"source_ip"},
		"envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter":       {"name"},
		// Executed by the proxy through (*Route).MirrorPolicies; runtime_key
		// is refused at compile (no runtime layer).
		"envoy.config.route.v3.RouteAction.RequestMirrorPolicy": {"cluster", "runtime_fraction", "trace_sampled"},
		"envoy.config.core.v3.RuntimeFractionalPercent":         {"default_value", "runtime_key"},
		"envoy.type.v3.FractionalPercent":                       {"numerator", "denominator"},
		"envoy.config.route.v3.RouteAction.MaxStreamDuration": {
			"max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset",
		},
		"envoy.config.route.v3.WeightedCluster": {"clusters", "total_weight"},
		"envoy.config.route.v3.WeightedCluster.ClusterWeight": {
			"name", "cluster_header", "weight", "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config",
			"host_rewrite_literal",
		},
		"envoy.config.route.v3.RedirectAction": {
			"https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
			"prefix_rewrite", "regex_rewrite", "response_code", "strip_query",
		},
		"envoy.config.route.v3.DirectResponseAction": {"status", "body"},
		"envoy.config.core.v3.DataSource":            {"inline_bytes", "inline_string"},
		"envoy.config.core.v3.HeaderValueOption":     {"header", "append", "append_action", "keep_empty_value"},
		"envoy.config.core.v3.HeaderValue":           {"key", "value"},
		"envoy.config.route.v3.Decorator":            {"operation", "propagate"},
		// Route-level tracing; the custom tag rules come with the tracing
		// package's, which the connection manager merges in.
		"envoy.config.route.v3.Tracing": {"client_sampling", "random_sampling", "overall_sampling", "custom_tags"},
		"envoy.config.core.v3.Metadata": {fieldcheck.All},
		"envoy.config.route.v3.RetryPolicy": {
			"retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
			"host_selection_retry_max_attempts", "retriable_status_codes", "retry_back_off",
		},
		"envoy.config.route.v3.RetryPolicy.RetryBackOff":       {"base_interval", "max_interval"},
		"envoy.config.route.v3.RetryPolicy.RetryHostPredicate": {"name", "typed_config"},
		// The only retry host predicate amime implements.
		"envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate": {},
	}, tracing.TagRules())
}
