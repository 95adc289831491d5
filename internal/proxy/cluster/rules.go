package cluster

import (
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

// Rules lists the Cluster and ClusterLoadAssignment fields amime implements.
func Rules() fieldcheck.Rules {
	return fieldcheck.Merge(fieldcheck.Rules{
		"envoy.config.cluster.v3.Cluster": {"name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
			"load_assignment", "dns_refresh_rate", "dns_lookup_family", "http2_protocol_options",
			"typed_extension_protocol_options", "metadata", "alt_stat_name",
			"cleanup_interval", "original_dst_lb_config", "circuit_breakers", "outlier_detection", "common_lb_config",
			"ring_hash_lb_config", "maglev_lb_config", "transport_socket", "transport_socket_matches"},
		"envoy.config.cluster.v3.Cluster.RingHashLbConfig": {"minimum_ring_size", "maximum_ring_size", "hash_function"},
		"envoy.config.cluster.v3.Cluster.MaglevLbConfig":   {"table_size"},
		"envoy.config.cluster.v3.CircuitBreakers":          {"thresholds"},
		"envoy.config.cluster.v3.CircuitBreakers.Thresholds": {"priority", "max_connections", "max_pending_requests",
			"max_requests", "max_retries"},
		"envoy.config.cluster.v3.OutlierDetection": {"consecutive_5xx", "consecutive_gateway_failure",
			"consecutive_local_origin_failure", "split_external_local_origin_errors", "interval", "base_ejection_time",
			"max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
			"enforcing_consecutive_local_origin_failure", "enforcing_success_rate", "max_ejection_time"},
		// Only the panic threshold, which applies to hosts ejected by
		// outlier detection.
		"envoy.config.cluster.v3.Cluster.CommonLbConfig":      {"healthy_panic_threshold"},
		"envoy.type.v3.Percent":                               {"value"},
		"envoy.config.cluster.v3.Cluster.OriginalDstLbConfig": {"use_http_header"},
		"envoy.config.cluster.v3.Cluster.EdsClusterConfig":    {"eds_config", "service_name"},
		"envoy.config.core.v3.ConfigSource":                   {"ads", "resource_api_version"},
		"envoy.config.core.v3.AggregatedConfigSource":         {},
		"envoy.config.core.v3.Metadata":                       {fieldcheck.All},
		// No HTTP/2 tuning knob is implemented yet: an empty message selects HTTP/2.
		"envoy.config.core.v3.Http2ProtocolOptions":                                      {},
		"envoy.config.core.v3.Http1ProtocolOptions":                                      {},
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":                         {"explicit_http_config", "use_downstream_protocol_config", "common_http_protocol_options"},
		"envoy.config.core.v3.HttpProtocolOptions":                                       {"idle_timeout", "max_requests_per_connection"},
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig":      {"http_protocol_options", "http2_protocol_options"},
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig": {"http_protocol_options", "http2_protocol_options"},

		"envoy.config.endpoint.v3.ClusterLoadAssignment": {"cluster_name", "endpoints"},
		"envoy.config.endpoint.v3.LocalityLbEndpoints":   {"locality", "lb_endpoints", "load_balancing_weight", "priority"},
		"envoy.config.endpoint.v3.LbEndpoint":            {"endpoint", "health_status", "load_balancing_weight", "metadata"},
		"envoy.config.endpoint.v3.Endpoint":              {"address", "hostname"},
		"envoy.config.core.v3.Locality":                  {fieldcheck.All},
		"envoy.config.core.v3.Address":                   {"socket_address"},
		"envoy.config.core.v3.SocketAddress":             {"protocol", "address", "port_value"},
	}, tlsctx.Rules())
}
