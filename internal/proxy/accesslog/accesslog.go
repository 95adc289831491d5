// Package accesslog implements Envoy's access log configuration on a
// connection manager (HttpConnectionManager.access_log): the file access
// logger (envoy.access_loggers.file, FileAccessLog) with Envoy's
// substitution format strings (text and JSON), and the filters Istio's
// Telemetry API produces (the CEL extension filter) plus Envoy's status
// code, response flag, and/or filters.
//
// Lines go to a Sink per file path, shared by every listener that logs to
// that path; a sink buffers lines and writes them from one goroutine, so
// the request path never makes a system call.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/celattr"
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Rules lists the access log fields amime implements.
func Rules() fieldcheck.Rules {
	return fieldcheck.Rules{
		"envoy.config.accesslog.v3.AccessLog":                             {"name", "filter", "typed_config"},
		"envoy.config.accesslog.v3.AccessLogFilter":                       {"status_code_filter", "response_flag_filter", "and_filter", "or_filter", "extension_filter"},
		"envoy.config.accesslog.v3.StatusCodeFilter":                      {"comparison"},
		"envoy.config.accesslog.v3.ComparisonFilter":                      {"op", "value"},
		"envoy.config.core.v3.RuntimeUInt32":                              {"default_value", "runtime_key"},
		"envoy.config.accesslog.v3.ResponseFlagFilter":                    {"flags"},
		"envoy.config.accesslog.v3.AndFilter":                             {"filters"},
		"envoy.config.accesslog.v3.OrFilter":                              {"filters"},
		"envoy.config.accesslog.v3.ExtensionFilter":                       {"name", "typed_config"},
		"envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter": {"expression"},
		"envoy.extensions.access_loggers.file.v3.FileAccessLog":           {"path", "log_format", "format", "json_format"},
		"envoy.config.core.v3.SubstitutionFormatString":                   {"text_format", "text_format_source", "json_format", "omit_empty_values", "content_type"},
		"envoy.config.core.v3.DataSource":                                 {"inline_string"},
		"google.protobuf.Struct":                                          {"fields"},
	}
}

// Logger is one compiled access_log entry.
type Logger struct {
	filter filter // nil: log everything
	format *Format
	sink   *Sink
}

// Compile builds the loggers of a connection manager; files are opened
// through sinks. With nil sinks the configuration is only validated: the
// loggers returned must not be used.
func Compile(list []*accesslogv3.AccessLog, sinks *Sinks) ([]*Logger, error) {
	var out []*Logger
	for i, al := range list {
		l, err := compileOne(al, sinks)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		out = append(out, l)
	}
	return out, nil
}

func compileOne(al *accesslogv3.AccessLog, sinks *Sinks) (*Logger, error) {
	fa := &fileaccesslogv3.FileAccessLog{}
	if al.GetTypedConfig() == nil || !al.GetTypedConfig().MessageIs(fa) {
		return nil, fmt.Errorf("typed_config: %q is not supported by amime (envoy.access_loggers.file is)", al.GetTypedConfig().GetTypeUrl())
	}
	if err := al.GetTypedConfig().UnmarshalTo(fa); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if fa.GetPath() == "" {
		return nil, errors.New("typed_config.path: is required")
	}
	var (
		format *Format
		err    error
	)
	switch f := fa.GetAccessLogFormat().(type) {
	case *fileaccesslogv3.FileAccessLog_LogFormat:
		format, err = CompileFormat(f.LogFormat)
	case *fileaccesslogv3.FileAccessLog_Format:
		format, err = compileText(f.Format)
	case *fileaccesslogv3.FileAccessLog_JsonFormat:
		format, err = compileJSON(f.JsonFormat, "json_format")
	default:
		format, err = compileText(DefaultText)
	}
	if err != nil {
		return nil, fmt.Errorf("typed_config.log_format: %w", err)
	}
	l := &Logger{format: format}
	if al.GetFilter() != nil {
		if l.filter, err = compileFilter(al.GetFilter()); err != nil {
			return nil, fmt.Errorf("filter.%w", err)
		}
	}
	if sinks == nil {
		return l, nil // validation only
	}
	if l.sink, err = sinks.Open(fa.GetPath()); err != nil {
		return nil, fmt.Errorf("typed_config.path: %w", err)
	}
	return l, nil
}

// Log writes the request's line when the filter lets it through.
func (l *Logger) Log(i *streaminfo.Info) {
	if l.filter != nil && !l.filter(i) {
		return
	}
	l.sink.append(l.format, i)
}

type filter func(*streaminfo.Info) bool

func compileFilter(f *accesslogv3.AccessLogFilter) (filter, error) {
	switch x := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		cmp := x.StatusCodeFilter.GetComparison()
		v := int(cmp.GetValue().GetDefaultValue())
		switch cmp.GetOp() {
		case accesslogv3.ComparisonFilter_EQ:
			return func(i *streaminfo.Info) bool { return i.ResponseCode == v }, nil
		case accesslogv3.ComparisonFilter_GE:
			return func(i *streaminfo.Info) bool { return i.ResponseCode >= v }, nil
		case accesslogv3.ComparisonFilter_LE:
			return func(i *streaminfo.Info) bool { return i.ResponseCode <= v }, nil
		}
		return nil, fmt.Errorf("status_code_filter.comparison.op: %v is not supported", cmp.GetOp())
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		var want streaminfo.Flags
		for _, name := range x.ResponseFlagFilter.GetFlags() {
			fl, ok := streaminfo.ParseFlag(name)
			if !ok {
				return nil, fmt.Errorf("response_flag_filter.flags: unknown flag %q", name)
			}
			want |= fl
		}
		if want == 0 {
			return func(i *streaminfo.Info) bool { return i.Flags != 0 }, nil
		}
		return func(i *streaminfo.Info) bool { return i.Flags&want != 0 }, nil
	case *accesslogv3.AccessLogFilter_AndFilter, *accesslogv3.AccessLogFilter_OrFilter:
		var subs []*accesslogv3.AccessLogFilter
		and := false
		if a, ok := x.(*accesslogv3.AccessLogFilter_AndFilter); ok {
			subs, and = a.AndFilter.GetFilters(), true
		} else {
			subs = x.(*accesslogv3.AccessLogFilter_OrFilter).OrFilter.GetFilters()
		}
		fs := make([]filter, len(subs))
		for n, s := range subs {
			f, err := compileFilter(s)
			if err != nil {
				return nil, fmt.Errorf("filters[%d].%w", n, err)
			}
			fs[n] = f
		}
		if and {
			return func(i *streaminfo.Info) bool {
				for _, f := range fs {
					if !f(i) {
						return false
					}
				}
				return true
			}, nil
		}
		return func(i *streaminfo.Info) bool {
			for _, f := range fs {
				if f(i) {
					return true
				}
			}
			return false
		}, nil
	case *accesslogv3.AccessLogFilter_ExtensionFilter:
		ef := &celfilterv3.ExpressionFilter{}
		if !x.ExtensionFilter.GetTypedConfig().MessageIs(ef) {
			return nil, fmt.Errorf("extension_filter.typed_config: %q is not supported by amime (the CEL filter is)", x.ExtensionFilter.GetTypedConfig().GetTypeUrl())
		}
		if err := x.ExtensionFilter.GetTypedConfig().UnmarshalTo(ef); err != nil {
			return nil, fmt.Errorf("extension_filter.typed_config: %w", err)
		}
		expr, err := celattr.Compile(ef.GetExpression())
		if err != nil {
			return nil, fmt.Errorf("extension_filter.typed_config.expression: %w", err)
		}
		return func(i *streaminfo.Info) bool { return expr.Match(attributes(i)) }, nil
	}
	return nil, errors.New("filter_specifier: not supported by amime")
}

// attributes exposes a request to CEL as Envoy's attributes. Groups are
// built only when the expression reads them.
func attributes(i *streaminfo.Info) celattr.Resolver {
	return func(root string) (map[string]any, bool) {
		switch root {
		case "request":
			hdrs := make(map[string]string, len(i.RequestHeaders))
			for _, h := range i.RequestHeaders {
				if _, dup := hdrs[h.Name]; !dup {
					hdrs[h.Name] = h.Value
				}
			}
			m := map[string]any{"method": i.Method, "path": i.Path, "host": i.Authority, "protocol": i.Protocol,
				"id": i.RequestID, "useragent": i.UserAgent, "headers": hdrs, "time": i.Start, "duration": i.Duration,
				"size": i.BytesReceived, "total_size": i.BytesReceived}
			if p, q, ok := cutQuery(i.Path); ok {
				m["url_path"], m["query"] = p, q
			} else {
				m["url_path"] = i.Path
			}
			return m, true
		case "response":
			hdrs := make(map[string]string, len(i.ResponseHeaders))
			for _, h := range i.ResponseHeaders {
				if _, dup := hdrs[h.Name]; !dup {
					hdrs[h.Name] = h.Value
				}
			}
			m := map[string]any{"code": int64(i.ResponseCode), "code_details": i.Details, "flags": int64(i.Flags),
				"headers": hdrs, "size": i.BytesSent, "total_size": i.BytesSent}
			if i.GRPCStatus != "" {
				if n, err := strconv.Atoi(i.GRPCStatus); err == nil {
					m["grpc_status"] = int64(n)
				}
			}
			return m, true
		case "connection":
			return map[string]any{"mtls": i.PeerPrincipal != "", "requested_server_name": i.SNI,
				"uri_san_peer_certificate": i.PeerPrincipal, "transport_failure_reason": i.UpstreamFailed}, true
		case "upstream":
			return map[string]any{"address": i.UpstreamHost, "local_address": i.UpstreamLocal, "transport_failure_reason": i.UpstreamFailed}, true
		case "source":
			return map[string]any{"address": i.Downstream}, true
		case "destination":
			return map[string]any{"address": i.DownstreamLocal}, true
		case "xds":
			return map[string]any{"cluster_name": i.Cluster, "route_name": i.RouteName}, true
		}
		return nil, false
	}
}

func cutQuery(p string) (string, string, bool) {
	for n := 0; n < len(p); n++ {
		if p[n] == '?' {
			return p[:n], p[n+1:], true
		}
	}
	return p, "", false
}

const (
	// flushSize wakes the writer early: one write per this many bytes at
	// most, whatever the request rate.
	flushSize = 64 << 10
	// maxBuffered bounds memory when the output cannot keep up; lines past
	// it are dropped and counted rather than stalling requests.
	maxBuffered = 4 << 20
)

// Sinks are the proxy's open log files, by path. Paths stay open for the
// proxy's life: configurations name few of them, and a listener update
// must not lose buffered lines.
type Sinks struct {
	interval time.Duration
	mu       sync.Mutex
	byPath   map[string]*Sink
	wg       sync.WaitGroup
	stop     chan struct{}
	closed   bool
	dropped  atomic.Uint64
}

// NewSinks returns an empty set; flushInterval 0 means one second.
func NewSinks(flushInterval time.Duration) *Sinks {
	if flushInterval <= 0 {
		flushInterval = time.Second
	}
	return &Sinks{interval: flushInterval, byPath: map[string]*Sink{}, stop: make(chan struct{})}
}

// Sink buffers lines for one output.
type Sink struct {
	s     *Sinks
	out   io.Writer
	file  *os.File // nil for stdout/stderr
	mu    sync.Mutex
	buf   []byte
	wmu   sync.Mutex
	spare []byte
	kick  chan struct{}
}

// Open returns the sink of path, opening the file (append) the first time.
func (s *Sinks) Open(path string) (*Sink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("access log sinks are closed")
	}
	if k := s.byPath[path]; k != nil {
		return k, nil
	}
	k := &Sink{s: s, kick: make(chan struct{}, 1), buf: make([]byte, 0, 2*flushSize), spare: make([]byte, 0, 2*flushSize)}
	switch path {
	case "/dev/stdout":
		k.out = os.Stdout
	case "/dev/stderr":
		k.out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		k.out, k.file = f, f
	}
	s.byPath[path] = k
	s.wg.Add(1)
	go k.run()
	return k, nil
}

func (k *Sink) append(f *Format, i *streaminfo.Info) {
	k.mu.Lock()
	if len(k.buf) >= maxBuffered {
		k.mu.Unlock()
		k.s.dropped.Add(1)
		return
	}
	k.buf = f.Append(k.buf, i)
	full := len(k.buf) >= flushSize
	k.mu.Unlock()
	if full {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

func (k *Sink) run() {
	defer k.s.wg.Done()
	t := time.NewTicker(k.s.interval)
	defer t.Stop()
	for {
		select {
		case <-k.s.stop:
			_ = k.flush()
			return
		case <-t.C:
		case <-k.kick:
		}
		_ = k.flush()
	}
}

func (k *Sink) flush() error {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	k.mu.Lock()
	b := k.buf
	k.buf = k.spare[:0]
	k.mu.Unlock()
	var err error
	if len(b) > 0 {
		_, err = k.out.Write(b)
	}
	k.spare = b[:0]
	return err
}

// Flush writes every sink's buffered lines now.
func (s *Sinks) Flush() error {
	s.mu.Lock()
	sinks := make([]*Sink, 0, len(s.byPath))
	for _, k := range s.byPath {
		sinks = append(sinks, k)
	}
	s.mu.Unlock()
	var errs []error
	for _, k := range sinks {
		errs = append(errs, k.flush())
	}
	return errors.Join(errs...)
}

// Close flushes and closes every sink. Lines logged afterwards are lost.
func (s *Sinks) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	var errs []error
	for _, k := range s.byPath {
		if k.file != nil {
			errs = append(errs, k.file.Close())
		}
	}
	return errors.Join(errs...)
}

// Collectors report lines dropped because an output fell behind.
func (s *Sinks) Collectors() []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "amime_access_log_config_dropped_total",
		Help: "access log lines (from the access_log configuration) dropped because the output could not keep up",
	}, func() float64 { return float64(s.dropped.Load()) })}
}
