package rbac

import (
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
)

// Rules lists the fields of both RBAC filters' configurations (and of
// RBACPerRoute) that this package implements. Parse, ParseNetwork and
// ParsePerRoute check them themselves, so a field another package allows
// on a shared message (StringMatcher, HeaderMatcher, …) is still refused
// here; the listener merges them into its own check too.
//
// Refused: Policy.condition, checked_condition and cel_config (CEL);
// the filters' matcher and shadow_matcher (unified matcher API),
// rules_stat_prefix, shadow_rules_stat_prefix and track_per_rule_stats
// (amime has no RBAC stats, and the shadow prefix also renames the
// metadata keys); RBAC.audit_logging_options; the network filter's
// enforcement_type CONTINUOUS and delay_deny; Permission uri_template,
// sourced_metadata and matcher; Principal filter_state, sourced_metadata
// and custom; StringMatcher.custom.
func Rules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.extensions.filters.http.rbac.v3.RBAC":         {"rules", "shadow_rules"},
		"envoy.extensions.filters.http.rbac.v3.RBACPerRoute": {"rbac"},
		// enforcement_type is absent: its default, ONE_TIME_ON_FIRST_BYTE,
		// is not a set field, and CONTINUOUS is refused.
		"envoy.extensions.filters.network.rbac.v3.RBAC": {"rules", "shadow_rules", "stat_prefix"},
		"envoy.config.rbac.v3.RBAC":                     {"action", "policies"},
		"envoy.config.rbac.v3.Policy":                   {"permissions", "principals"},
		"envoy.config.rbac.v3.Permission": {
			"and_rules", "or_rules", "any", "header", "url_path", "destination_ip", "destination_port",
			"destination_port_range", "metadata", "not_rule", "requested_server_name",
		},
		"envoy.config.rbac.v3.Permission.Set": {"rules"},
		"envoy.config.rbac.v3.Principal": {
			"and_ids", "or_ids", "any", "authenticated", "source_ip", "direct_remote_ip", "remote_ip",
			"header", "url_path", "metadata", "not_id",
		},
		"envoy.config.rbac.v3.Principal.Set":           {"ids"},
		"envoy.config.rbac.v3.Principal.Authenticated": {"principal_name"},
		"envoy.config.route.v3.HeaderMatcher": {
			"name", "exact_match", "safe_regex_match", "range_match", "present_match", "prefix_match",
			"suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty",
		},
		"envoy.type.matcher.v3.StringMatcher":               {"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"},
		"envoy.type.matcher.v3.RegexMatcher":                {"google_re2", "regex"},
		"envoy.type.matcher.v3.RegexMatcher.GoogleRE2":      {},
		"envoy.type.matcher.v3.PathMatcher":                 {"path"},
		"envoy.type.matcher.v3.MetadataMatcher":             {"filter", "path", "value", "invert"},
		"envoy.type.matcher.v3.MetadataMatcher.PathSegment": {"key"},
		"envoy.type.matcher.v3.ValueMatcher": {
			"null_match", "double_match", "string_match", "bool_match", "present_match", "list_match", "or_match",
		},
		"envoy.type.matcher.v3.ValueMatcher.NullMatch": {},
		"envoy.type.matcher.v3.DoubleMatcher":          {"range", "exact"},
		"envoy.type.matcher.v3.ListMatcher":            {"one_of"},
		"envoy.type.matcher.v3.OrMatcher":              {"value_matchers"},
		"envoy.type.v3.DoubleRange":                    {"start", "end"},
		"envoy.type.v3.Int64Range":                     {"start", "end"},
		"envoy.type.v3.Int32Range":                     {"start", "end"},
		"envoy.config.core.v3.CidrRange":               {"address_prefix", "prefix_len"},
	}
}
