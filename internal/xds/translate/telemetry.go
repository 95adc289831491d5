package translate

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/amime-mesh/amime/internal/config"
)

// Telemetry (telemetry.istio.io) and MeshConfig's telemetry settings become
// the HTTP connection manager's tracing and access_log, as istiod builds
// them: mesh-wide (root namespace) < namespace < workload (selector), each
// level overriding the fields it sets; tracing and logging rules with a
// match mode apply to the outbound (CLIENT) or inbound (SERVER) side only.

// telemetryMode is the side of a listener: outbound listeners report as
// the client, inbound ones as the server; gateways are both.
type telemetryMode int

const (
	modeClient telemetryMode = 1 << iota
	modeServer
)

func (m telemetryMode) matches(w telemetry.WorkloadMode) bool {
	switch w {
	case telemetry.WorkloadMode_CLIENT:
		return m&modeClient != 0
	case telemetry.WorkloadMode_SERVER:
		return m&modeServer != 0
	}
	return true // CLIENT_AND_SERVER, the default
}

// istioDefaultSampling is Istio's default: 1% of new traces.
const istioDefaultSampling = 1.0

// Envoy's format for Istio's default text access log line
// (meshConfig.accessLogFormat empty, encoding TEXT).
const istioTextFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% " +
	"\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" " +
	"\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% " +
	"%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

// istioJSONFormat is Istio's default JSON access log (encoding JSON).
var istioJSONFormat = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// defaultOTelTimeout is Envoy's HttpUri timeout Istio sets for OTLP/HTTP.
const defaultOTelTimeout = 5 * time.Second

func jsonUnmarshalString(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// envoyProvider is Istio's built-in access log provider: the mesh's
// accessLogFile, accessLogEncoding and accessLogFormat.
const envoyProvider = "envoy"

// telemetryLevels are the Telemetry resources applying to the proxy, from
// the widest (mesh) to the narrowest (workload).
func (b *builder) telemetryLevels() []*config.Object {
	var mesh, ns, workload *config.Object
	for _, o := range precedence(b.in.Telemetries, b.proxy.Namespace) {
		t, ok := o.Spec.(*telemetry.Telemetry)
		if !ok {
			continue
		}
		if t.GetTargetRef() != nil || len(t.GetTargetRefs()) > 0 {
			b.warnf(o, "targetRefs: not translated (amime binds Telemetry by selector); resource skipped")
			continue
		}
		if len(t.GetMetrics()) > 0 {
			b.warnf(o, "metrics: not translated yet (proxies report Istio's standard metrics with their standard labels; overrides and disabling are ignored)")
		}
		switch {
		case len(t.GetSelector().GetMatchLabels()) > 0:
			if o.Meta.Namespace == b.proxy.Namespace && workload == nil && hasLabels(b.proxy.Labels, t.GetSelector().GetMatchLabels()) {
				workload = o
			}
		case o.Meta.Namespace == b.mesh.RootNamespace:
			if mesh == nil {
				mesh = o
			}
		case o.Meta.Namespace == b.proxy.Namespace:
			if ns == nil {
				ns = o
			}
		}
	}
	var out []*config.Object
	for _, o := range []*config.Object{mesh, ns, workload} {
		if o != nil && (len(out) == 0 || out[len(out)-1] != o) {
			out = append(out, o)
		}
	}
	return out
}

// meshConfig is the mesh's MeshConfig, never nil.
func (b *builder) meshConfig() *meshconfig.MeshConfig {
	if b.mesh.Config != nil {
		return b.mesh.Config
	}
	return &meshconfig.MeshConfig{}
}

func (b *builder) provider(name string) *meshconfig.MeshConfig_ExtensionProvider {
	for _, p := range b.meshConfig().GetExtensionProviders() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// applyTelemetry sets m's tracing and access logs for a listener of mode.
func (b *builder) applyTelemetry(m *hcmv3.HttpConnectionManager, mode telemetryMode) {
	levels := b.telemetryLevels()
	m.Tracing = b.tracing(levels, mode)
	m.AccessLog = b.accessLogs(levels, mode)
}

// tracing merges the tracing rules and builds Envoy's tracing config; nil
// when no provider reports spans.
func (b *builder) tracing(levels []*config.Object, mode telemetryMode) *hcmv3.HttpConnectionManager_Tracing {
	mc := b.meshConfig()
	var (
		providers []string
		from      *config.Object
		sampling  = istioDefaultSampling
		disabled  bool
		tags      map[string]*telemetry.Tracing_CustomTag
	)
	providers = mc.GetDefaultProviders().GetTracing()
	if s := mc.GetDefaultConfig().GetTracing().GetSampling(); s > 0 {
		sampling = s
	}
	for _, o := range levels {
		for _, tr := range o.Spec.(*telemetry.Telemetry).GetTracing() {
			if tr.GetMatch() != nil && !mode.matches(tr.GetMatch().GetMode()) {
				continue
			}
			if len(tr.GetProviders()) > 0 {
				providers = []string{tr.GetProviders()[0].GetName()}
				from = o
			}
			if tr.GetRandomSamplingPercentage() != nil {
				sampling = tr.GetRandomSamplingPercentage().GetValue()
			}
			if tr.GetDisableSpanReporting() != nil {
				disabled = tr.GetDisableSpanReporting().GetValue()
			}
			if len(tr.GetCustomTags()) > 0 {
				tags = tr.GetCustomTags()
			}
		}
	}
	if disabled || len(providers) == 0 {
		return nil
	}
	name := providers[0]
	p := b.provider(name)
	if p == nil {
		b.warnf(from, "tracing provider %q is not defined in meshConfig.extensionProviders; no spans are reported", name)
		return nil
	}
	t := &hcmv3.HttpConnectionManager_Tracing{
		ClientSampling:  &typev3.Percent{Value: 100},
		RandomSampling:  &typev3.Percent{Value: sampling},
		OverallSampling: &typev3.Percent{Value: 100},
		// One span per proxy hop, as Istio's sidecars report.
		SpawnUpstreamSpan: wrapperspb.Bool(false),
	}
	for _, k := range sortedKeys(tags) {
		if ct := customTag(k, tags[k]); ct != nil {
			t.CustomTags = append(t.CustomTags, ct)
		}
	}
	switch x := p.GetProvider().(type) {
	case *meshconfig.MeshConfig_ExtensionProvider_Zipkin:
		z := x.Zipkin
		cluster, ok := b.providerCluster(from, name, z.GetService(), z.GetPort())
		if !ok {
			return nil
		}
		if z.GetMaxTagLength() > 0 {
			t.MaxPathTagLength = wrapperspb.UInt32(z.GetMaxTagLength())
		}
		path := z.GetPath()
		if path == "" {
			path = "/api/v2/spans"
		}
		t.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.ZipkinConfig{
			CollectorCluster:         cluster,
			CollectorEndpoint:        path,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			CollectorHostname:        serviceHost(z.GetService()),
			TraceId_128Bit:           !z.GetEnable_64BitTraceId(),
			// Istio's sidecars report client and server spans apart.
			SharedSpanContext: wrapperspb.Bool(false),
		})}}
	case *meshconfig.MeshConfig_ExtensionProvider_Opentelemetry:
		ot := x.Opentelemetry
		cluster, ok := b.providerCluster(from, name, ot.GetService(), ot.GetPort())
		if !ok {
			return nil
		}
		if ot.GetMaxTagLength() > 0 {
			t.MaxPathTagLength = wrapperspb.UInt32(ot.GetMaxTagLength())
		}
		if ot.GetHttp() == nil {
			b.warnf(from, "tracing provider %q: OpenTelemetry over gRPC is not supported by amime's proxy; set opentelemetry.http; no spans are reported", name)
			return nil
		}
		path := ot.GetHttp().GetPath()
		if path == "" {
			path = "/v1/traces"
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		timeout := ot.GetHttp().GetTimeout()
		if timeout == nil {
			timeout = durationpb.New(defaultOTelTimeout)
		}
		svc := &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              "http://" + serviceHost(ot.GetService()) + ":" + strconv.FormatUint(uint64(ot.GetPort()), 10) + path,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
			Timeout:          timeout,
		}}
		for _, h := range ot.GetHttp().GetHeaders() {
			if h.GetName() == "" {
				continue
			}
			svc.RequestHeadersToAdd = append(svc.RequestHeadersToAdd, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.GetName(), Value: h.GetValue()}})
		}
		t.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{HttpService: svc})}}
	default:
		b.warnf(from, "tracing provider %q: this provider type is not supported by amime (zipkin and opentelemetry are); no spans are reported", name)
		return nil
	}
	return t
}

// serviceHost is the host of a provider's service, which may be written
// "namespace/host".
func serviceHost(s string) string {
	if _, host, ok := strings.Cut(s, "/"); ok {
		return host
	}
	return s
}

// providerCluster is the outbound cluster of a provider's service, which
// must be in the registry (a Kubernetes Service or a ServiceEntry).
func (b *builder) providerCluster(from *config.Object, name, service string, port uint32) (string, bool) {
	host := serviceHost(service)
	if b.reg != nil {
		if s := b.reg.Lookup(host, b.proxy.Namespace); s == nil {
			b.warnf(from, "provider %q: service %q is not in the registry (add a ServiceEntry for it); nothing is exported", name, host)
			return "", false
		}
	}
	return OutboundCluster(port, "", host), true
}

func customTag(name string, t *telemetry.Tracing_CustomTag) *tracingtypev3.CustomTag {
	ct := &tracingtypev3.CustomTag{Tag: name}
	switch x := t.GetType().(type) {
	case *telemetry.Tracing_CustomTag_Literal:
		ct.Type = &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: x.Literal.GetValue()}}
	case *telemetry.Tracing_CustomTag_Environment:
		ct.Type = &tracingtypev3.CustomTag_Environment_{Environment: &tracingtypev3.CustomTag_Environment{Name: x.Environment.GetName(), DefaultValue: x.Environment.GetDefaultValue()}}
	case *telemetry.Tracing_CustomTag_Header:
		ct.Type = &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{Name: x.Header.GetName(), DefaultValue: x.Header.GetDefaultValue()}}
	default:
		return nil
	}
	return ct
}

// logRule is what the levels say about one access log provider.
type logRule struct {
	disabled bool
	filter   string
	from     *config.Object
}

// accessLogs merges the accessLogging rules per provider. With no
// Telemetry, the mesh's accessLogFile (the "envoy" provider) and
// defaultProviders.accessLogging decide, as in Istio.
func (b *builder) accessLogs(levels []*config.Object, mode telemetryMode) []*accesslogv3.AccessLog {
	mc := b.meshConfig()
	rules := map[string]*logRule{}
	var order []string
	set := func(name string, r *logRule) {
		if _, ok := rules[name]; !ok {
			order = append(order, name)
		}
		rules[name] = r
	}
	defaults := mc.GetDefaultProviders().GetAccessLogging()
	if len(defaults) == 0 && mc.GetAccessLogFile() != "" {
		defaults = []string{envoyProvider}
	}
	for _, n := range defaults {
		set(n, &logRule{})
	}
	for _, o := range levels {
		for _, al := range o.Spec.(*telemetry.Telemetry).GetAccessLogging() {
			if al.GetMatch() != nil && !mode.matches(al.GetMatch().GetMode()) {
				continue
			}
			names := make([]string, 0, len(al.GetProviders()))
			for _, p := range al.GetProviders() {
				names = append(names, p.GetName())
			}
			if len(names) == 0 {
				names = mc.GetDefaultProviders().GetAccessLogging()
				if len(names) == 0 {
					names = []string{envoyProvider}
				}
			}
			for _, n := range names {
				set(n, &logRule{disabled: al.GetDisabled().GetValue(), filter: al.GetFilter().GetExpression(), from: o})
			}
		}
	}
	var out []*accesslogv3.AccessLog
	for _, name := range order {
		r := rules[name]
		if r.disabled {
			continue
		}
		file, ok := b.fileAccessLog(r.from, name)
		if !ok {
			continue
		}
		al := &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(file)}}
		if r.filter != "" {
			al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name:       "envoy.access_loggers.extension_filters.cel",
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: mustAny(&celfilterv3.ExpressionFilter{Expression: r.filter})},
			}}}
		}
		out = append(out, al)
	}
	return out
}

// fileAccessLog builds the file logger of a provider: the built-in
// "envoy" one or an envoyFileAccessLog extension provider.
func (b *builder) fileAccessLog(from *config.Object, name string) (*fileaccesslogv3.FileAccessLog, bool) {
	mc := b.meshConfig()
	if p := b.provider(name); p != nil {
		fp, ok := p.GetProvider().(*meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLog)
		if !ok {
			b.warnf(from, "access log provider %q: this provider type is not supported by amime (envoyFileAccessLog is); no access log", name)
			return nil, false
		}
		path := fp.EnvoyFileAccessLog.GetPath()
		if path == "" {
			path = "/dev/stdout"
		}
		f := &fileaccesslogv3.FileAccessLog{Path: path}
		switch lf := fp.EnvoyFileAccessLog.GetLogFormat().GetLogFormat().(type) {
		case *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Text:
			f.AccessLogFormat = textFormat(lf.Text)
		case *meshconfig.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider_LogFormat_Labels:
			fields := map[string]string{}
			for k, v := range lf.Labels.GetFields() {
				fields[k] = v.GetStringValue()
			}
			f.AccessLogFormat = jsonFormat(fields)
		default:
			f.AccessLogFormat = textFormat(istioTextFormat)
		}
		return f, true
	}
	if name != envoyProvider {
		b.warnf(from, "access log provider %q is not defined in meshConfig.extensionProviders; no access log", name)
		return nil, false
	}
	path := mc.GetAccessLogFile()
	if path == "" {
		// A Telemetry asking for the envoy provider on a mesh without a
		// file logs to the proxy's stdout, as Istio does.
		path = "/dev/stdout"
	}
	f := &fileaccesslogv3.FileAccessLog{Path: path}
	if mc.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON {
		fields := istioJSONFormat
		if mc.GetAccessLogFormat() != "" {
			// A custom JSON format is a JSON object of field: operator.
			var custom map[string]string
			if err := jsonUnmarshalString(mc.GetAccessLogFormat(), &custom); err != nil {
				b.warnf(nil, "meshConfig.accessLogFormat: not a JSON object of strings (%v); Istio's default JSON format is used", err)
			} else {
				fields = custom
			}
		}
		f.AccessLogFormat = jsonFormat(fields)
	} else {
		format := istioTextFormat
		if mc.GetAccessLogFormat() != "" {
			format = mc.GetAccessLogFormat()
			if !strings.HasSuffix(format, "\n") {
				format += "\n"
			}
		}
		f.AccessLogFormat = textFormat(format)
	}
	return f, true
}

func textFormat(s string) *fileaccesslogv3.FileAccessLog_LogFormat {
	return &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}},
	}}
}

func jsonFormat(fields map[string]string) *fileaccesslogv3.FileAccessLog_LogFormat {
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		st.Fields[k] = structpb.NewStringValue(fields[k])
	}
	return &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st},
	}}
}

// metadataExchangeFilter is Istio's peer metadata filter as istiod sends it
// (a TypedStruct of io.istio.http.peer_metadata.Config): outbound and
// gateway listeners learn the upstream's workload from the response and
// announce theirs upstream; inbound ones learn the caller's and answer
// with theirs.
func metadataExchangeFilter(mode telemetryMode) *hcmv3.HttpFilter {
	cfg := exchangeClient
	if mode == modeServer {
		cfg = exchangeServer
	}
	return &hcmv3.HttpFilter{Name: "istio.metadata_exchange", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: copyAny(cfg)}}
}

// The two configurations of the filter, built once.
var (
	exchangeClient = exchangeConfig(modeClient)
	exchangeServer = exchangeConfig(modeServer)
)

func exchangeConfig(mode telemetryMode) *anypb.Any {
	headers := structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
		structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"istio_headers": structpb.NewStructValue(&structpb.Struct{})}}),
	}})
	v := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	if mode == modeServer {
		v.Fields["downstream_discovery"] = headers
		v.Fields["downstream_propagation"] = headers
	} else {
		v.Fields["upstream_discovery"] = headers
		v.Fields["upstream_propagation"] = headers
	}
	return mustAny(&xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/io.istio.http.peer_metadata.Config", Value: v})
}
