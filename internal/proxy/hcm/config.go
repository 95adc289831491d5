// Package hcm is the proxy's HTTP connection manager (Envoy's
// envoy.filters.network.http_connection_manager): it serves downstream
// HTTP/1.1 and HTTP/2 connections, routes each request with the route
// table, runs the HTTP filters (fault injection) and forwards it to an
// upstream cluster over HTTP/1.1 or HTTP/2, retrying as the route's retry
// policy allows.
package hcm

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"

	"github.com/amime-mesh/amime/internal/proxy/accesslog"

	"fmt"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	// The router filter type must be known to decode typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/http1"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
	// Tracing provider types must be known to decode typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
)

// Config is a compiled HttpConnectionManager.
type Config struct {
	StatPrefix string
	Codec      hcmv3.HttpConnectionManager_CodecType
	// RDSName is the RouteConfiguration to look up per request; empty when
	// the routes are inline.
	RDSName string
	Inline  *route.Table

	UseRemoteAddress             bool
	XffNumTrustedHops            int
	SkipXffAppend                bool
	GenerateRequestID            bool
	PreserveExternalRequestID    bool
	AlwaysSetRequestIDInResponse bool
	ServerName                   string
	ServerHeader                 hcmv3.HttpConnectionManager_ServerHeaderTransformation
	Proxy100Continue             bool
	WebSocket                    bool
	// x-forwarded-client-cert handling (forward_client_cert_details,
	// Envoy's default SANITIZE).
	ForwardClientCert    hcmv3.HttpConnectionManager_ForwardClientCertDetails
	SetCurrentClientCert *hcmv3.HttpConnectionManager_SetCurrentClientCertDetails

	IdleTimeout       time.Duration // connection idle, default 1h
	StreamIdleTimeout time.Duration // default 5m
	RequestTimeout    time.Duration // 0: none
	DrainTimeout      time.Duration // HTTP/2 GOAWAY grace, default 5s
	Limits            http1.Limits

	// Tracing is the compiled tracing config; nil when the connection
	// manager does not trace (no tracing, or no provider).
	Tracing *tracing.Config

	// filters are the http_filters before the router, in order.
	filters []httpFilter
	// accessLogs is the access_log configuration; loggers its compiled
	// form once Bind gave it the proxy's sinks.
	accessLogs []*accesslogv3.AccessLog
	loggers    []*accesslog.Logger
}

// BindAccessLogs compiles the access_log entries, opening their files
// through sinks (nil: only validated). Call it before New.
func (c *Config) BindAccessLogs(sinks *accesslog.Sinks) error {
	loggers, err := accesslog.Compile(c.accessLogs, sinks)
	if err != nil {
		return err
	}
	if sinks != nil {
		c.loggers = loggers
	}
	return nil
}

const routerFilterType = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// Compile checks the semantics of an HttpConnectionManager (field support
// is checked by Rules beforehand) and compiles inline routes.
func Compile(m *hcmv3.HttpConnectionManager) (*Config, error) {
	c := &Config{
		StatPrefix:        m.GetStatPrefix(),
		Codec:             m.GetCodecType(),
		UseRemoteAddress:  m.GetUseRemoteAddress().GetValue(),
		XffNumTrustedHops: int(m.GetXffNumTrustedHops()),
		SkipXffAppend:     m.GetSkipXffAppend(),
		GenerateRequestID: true,

		PreserveExternalRequestID:    m.GetPreserveExternalRequestId(),
		AlwaysSetRequestIDInResponse: m.GetAlwaysSetRequestIdInResponse(),
		ServerName:                   "envoy",
		ServerHeader:                 m.GetServerHeaderTransformation(),
		Proxy100Continue:             m.GetProxy_100Continue(),
		IdleTimeout:                  time.Hour,
		StreamIdleTimeout:            5 * time.Minute,
		DrainTimeout:                 5 * time.Second,
		Limits:                       http1.Limits{MaxHeaderBytes: 60 << 10, MaxHeaders: 100},
	}
	if m.GetGenerateRequestId() != nil {
		c.GenerateRequestID = m.GetGenerateRequestId().GetValue()
	}
	c.accessLogs = m.GetAccessLog()
	c.ForwardClientCert = m.GetForwardClientCertDetails()
	c.SetCurrentClientCert = m.GetSetCurrentClientCertDetails()
	if m.GetServerName() != "" {
		c.ServerName = m.GetServerName()
	}
	if d := m.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		c.IdleTimeout = d.AsDuration()
	}
	if n := m.GetCommonHttpProtocolOptions().GetMaxHeadersCount(); n != nil {
		c.Limits.MaxHeaders = int(n.GetValue())
	}
	if kb := m.GetMaxRequestHeadersKb(); kb != nil {
		if kb.GetValue() == 0 || kb.GetValue() > 8192 {
			return nil, fmt.Errorf("max_request_headers_kb: must be in 1..8192, got %d", kb.GetValue())
		}
		c.Limits.MaxHeaderBytes = int(kb.GetValue()) << 10
	}
	if d := m.GetStreamIdleTimeout(); d != nil {
		c.StreamIdleTimeout = d.AsDuration()
	}
	if d := m.GetRequestTimeout(); d != nil {
		c.RequestTimeout = d.AsDuration()
	}
	if d := m.GetDrainTimeout(); d != nil {
		c.DrainTimeout = d.AsDuration()
	}
	switch c.Codec {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return nil, fmt.Errorf("codec_type: %s is not supported by amime", c.Codec)
	}
	for i, u := range m.GetUpgradeConfigs() {
		switch u.GetUpgradeType() {
		case "websocket", "WebSocket":
			c.WebSocket = u.GetEnabled() == nil || u.GetEnabled().GetValue()
		default:
			return nil, fmt.Errorf("upgrade_configs[%d].upgrade_type: %q is not supported by amime (websocket is)", i, u.GetUpgradeType())
		}
	}
	tc, err := tracing.Compile(m.GetTracing())
	if err != nil {
		return nil, err
	}
	c.Tracing = tc
	filterNames, err := c.compileFilters(m)
	if err != nil {
		return nil, err
	}
	switch rs := m.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, fmt.Errorf("rds.route_config_name: must not be empty")
		}
		c.RDSName = rs.Rds.GetRouteConfigName()
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := route.CompileWithOptions(rs.RouteConfig, routeOptions(filterNames))
		if err != nil {
			return nil, fmt.Errorf("route_config.%w", err)
		}
		c.Inline = t
	default:
		return nil, fmt.Errorf("route_specifier: rds or route_config is required")
	}
	return c, nil
}

// compileFilters builds the filter chain. It returns the filters' names
// and types, for the per-route configuration of inline routes.
func (c *Config) compileFilters(m *hcmv3.HttpConnectionManager) (map[string]string, error) {
	filters := m.GetHttpFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("http_filters: the router filter is required")
	}
	kinds := filterKinds()
	names := map[string]string{}
	for i, f := range filters {
		last := i == len(filters)-1
		typeURL := f.GetTypedConfig().GetTypeUrl()
		isRouter := typeURL == routerFilterType
		switch {
		case isRouter && !last:
			return nil, fmt.Errorf("http_filters[%d]: the router filter must be last", i)
		case !isRouter && last:
			return nil, fmt.Errorf("http_filters[%d]: the last filter must be the router (envoy.filters.http.router)", i)
		case isRouter:
			continue
		}
		k, ok := kinds[typeURL]
		if !ok {
			return nil, fmt.Errorf("http_filters[%d] %q: filter type %q is not supported by amime", i, f.GetName(), typeURL)
		}
		hf, err := k.build(f.GetName(), f.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("http_filters[%d] %q: %w", i, f.GetName(), err)
		}
		c.filters = append(c.filters, hf)
		names[f.GetName()] = typeURL
	}
	return names, nil
}

// Rules lists the HttpConnectionManager fields amime implements, together
// with the route rules for inline route configurations.
func Rules() fieldcheck.Rules {
	r := fieldcheck.Rules{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {
			"codec_type", "stat_prefix", "rds", "route_config", "http_filters", "common_http_protocol_options",
			"http_protocol_options", "http2_protocol_options", "server_name", "server_header_transformation",
			"max_request_headers_kb", "stream_idle_timeout", "request_timeout", "drain_timeout",
			"use_remote_address", "xff_num_trusted_hops", "skip_xff_append", "generate_request_id",
			"preserve_external_request_id", "always_set_request_id_in_response", "proxy_100_continue", "upgrade_configs",
			"forward_client_cert_details", "set_current_client_cert_details", "access_log", "tracing",
		},
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails": {"subject", "uri", "dns"},
		"envoy.extensions.filters.network.http_connection_manager.v3.Rds":                                               {"config_source", "route_config_name"},
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter":                                        {"name", "typed_config"},
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig":               {"upgrade_type", "enabled"},
		"envoy.config.core.v3.HttpProtocolOptions":                                                                      {"idle_timeout", "max_headers_count"},
		"envoy.config.core.v3.Http1ProtocolOptions":                                                                     {},
		"envoy.config.core.v3.Http2ProtocolOptions":                                                                     {},
		"envoy.config.core.v3.ConfigSource":                                                                             {"ads", "resource_api_version"},
		"envoy.config.core.v3.AggregatedConfigSource":                                                                   {},
		"envoy.extensions.filters.http.router.v3.Router":                                                                {},
	}
	sets := []fieldcheck.Rules{r, route.Rules(), tracing.Rules(), accesslog.Rules()}
	for _, k := range filterKinds() {
		sets = append(sets, k.rules)
	}
	return fieldcheck.Merge(sets...)
}
