package accesslog

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

func testInfo() *streaminfo.Info {
	return &streaminfo.Info{
		Start:           time.Date(2026, 11, 22, 6, 1, 2, 345_000_000, time.UTC),
		Protocol:        "HTTP/1.1",
		Method:          "GET",
		Path:            "/reviews/1?x=1",
		Authority:       "reviews:9080",
		RequestID:       "rid-1",
		Downstream:      "10.0.0.7:41234",
		DownstreamLocal: "10.0.0.9:15006",
		RouteName:       "default",
		Cluster:         "outbound|9080||reviews.default.svc.cluster.local",
		UpstreamHost:    "10.0.0.8:9080",
		ResponseCode:    503,
		Flags:           streaminfo.UpstreamOverflow,
		Details:         "upstream_reset",
		BytesReceived:   12,
		BytesSent:       34,
		UpstreamTime:    7 * time.Millisecond,
		Duration:        9 * time.Millisecond,
		UserAgent:       "curl/8",
		RequestHeaders:  header.List{{Name: "x-user", Value: "alice\nforged"}, {Name: "x-envoy-original-path", Value: "/orig"}},
		ResponseHeaders: header.List{{Name: "server", Value: "envoy"}},
	}
}

func TestTextFormat(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{DefaultText, `[2026-11-22T06:01:02.345Z] "GET /orig HTTP/1.1" 503 UO 12 34 9 7 "-" "curl/8" "rid-1" "reviews:9080" "10.0.0.8:9080"` + "\n"},
		{"%REQ(X-USER)% %REQ(X-MISSING?X-USER):3% %RESP(SERVER)% %%", "alice_forged ali envoy %"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S.%3f)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_CLUSTER%", "2026/11/22 06:01:02.345 10.0.0.7 outbound|9080||reviews.default.svc.cluster.local"},
		{"%RESPONSE_CODE_DETAILS% %ROUTE_NAME% %DOWNSTREAM_LOCAL_ADDRESS% %REQUESTED_SERVER_NAME%", "upstream_reset default 10.0.0.9:15006 -"},
	} {
		f, err := compileText(tc.format)
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if got := string(f.Append(nil, testInfo())); got != tc.want {
			t.Errorf("%q:\ngot  %q\nwant %q", tc.format, got, tc.want)
		}
	}
}

func TestFormatErrors(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"%NOPE%", "operator NOPE is not supported"},
		{"%REQ()%", "a header name is required"},
		{"%REQ(x", "unterminated"},
		{"%PROTOCOL(x)%", "takes no arguments"},
		{"%REQ(x):a%", "bad length"},
		{"%START_TIME(%Q)%", "strftime %Q is not supported"},
	} {
		_, err := compileText(tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.format, err, tc.want)
		}
	}
}

func TestJSONFormat(t *testing.T) {
	st, _ := structpb.NewStruct(map[string]any{
		"code":    "%RESPONSE_CODE%",
		"flags":   "%RESPONSE_FLAGS%",
		"user":    "%REQ(X-USER)%",
		"missing": "%REQ(X-NONE)%",
		"mixed":   "%REQ(:METHOD)% %REQ(:PATH)%",
		"const":   float64(7),
		"nested":  map[string]any{"bytes": "%BYTES_SENT%"},
	})
	f, err := compileJSON(st, "json_format")
	if err != nil {
		t.Fatal(err)
	}
	line := f.Append(nil, testInfo())
	if !strings.HasSuffix(string(line), "}\n") {
		t.Fatalf("line %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	want := map[string]any{"code": float64(503), "flags": "UO", "user": "alice\nforged", "missing": nil,
		"mixed": "GET /reviews/1?x=1", "const": float64(7), "nested": map[string]any{"bytes": float64(34)}}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("got  %s\nwant %s", gb, wb)
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLoggersAndFilters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	fileLog := func(format string) *anypb.Any {
		return mustAny(t, &fileaccesslogv3.FileAccessLog{Path: path, AccessLogFormat: &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: format}}},
		}}})
	}
	cel := func(expr string) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name: "envoy.access_loggers.extension_filters.cel", ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: mustAny(t, &celfilterv3.ExpressionFilter{Expression: expr})},
		}}}
	}
	status := func(op accesslogv3.ComparisonFilter_Op, v uint32) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
			Comparison: &accesslogv3.ComparisonFilter{Op: op, Value: &corev3.RuntimeUInt32{DefaultValue: v}}}}}
	}
	sinks := NewSinks(time.Hour)
	loggers, err := Compile([]*accesslogv3.AccessLog{
		{Name: "all", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog("all %RESPONSE_CODE%\n")}},
		{Name: "errors", Filter: cel("response.code >= 500 && request.headers['x-user'] != ''"), ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog("cel %RESPONSE_CODE%\n")}},
		{Name: "and", Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{Filters: []*accesslogv3.AccessLogFilter{
			status(accesslogv3.ComparisonFilter_GE, 400),
			{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"UO", "NR"}}}},
		}}}}, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog("and %RESPONSE_FLAGS%\n")}},
	}, sinks)
	if err != nil {
		t.Fatal(err)
	}
	ok := testInfo()
	ok.ResponseCode, ok.Flags = 200, 0
	for _, i := range []*streaminfo.Info{ok, testInfo()} {
		for _, l := range loggers {
			l.Log(i)
		}
	}
	if err := sinks.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "all 200\nall 503\ncel 503\nand UO\n"; string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}

	// Compile errors name the entry and the field.
	for _, tc := range []struct {
		al   *accesslogv3.AccessLog
		want string
	}{
		{&accesslogv3.AccessLog{Filter: cel("response.code >="), ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog("x")}}, "access_log[0]: filter.extension_filter.typed_config.expression: invalid expression"},
		{&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: fileLog("%BAD%")}}, "access_log[0]: typed_config.log_format: format \"%BAD%\": %BAD%: operator BAD is not supported by amime"},
		{&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &celfilterv3.ExpressionFilter{})}}, "is not supported by amime (envoy.access_loggers.file is)"},
		{&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &fileaccesslogv3.FileAccessLog{Path: filepath.Join(dir, "no", "such", "dir", "x.log")})}}, "typed_config.path: open"},
	} {
		_, err := Compile([]*accesslogv3.AccessLog{tc.al}, NewSinks(0))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func BenchmarkJSONLine(b *testing.B) {
	st, _ := structpb.NewStruct(map[string]any{"start_time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%", "duration": "%DURATION%", "authority": "%REQ(:AUTHORITY)%",
		"upstream_host": "%UPSTREAM_HOST%", "request_id": "%REQ(X-REQUEST-ID)%", "user_agent": "%REQ(USER-AGENT)%"})
	f, err := compileJSON(st, "json_format")
	if err != nil {
		b.Fatal(err)
	}
	i := testInfo()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], i)
	}
}

func TestTimeCache(t *testing.T) {
	var c TimeCache
	base := time.Date(2026, 11, 22, 1, 2, 3, 0, time.FixedZone("X", 3600))
	for _, d := range []time.Duration{7 * time.Millisecond, 999*time.Millisecond + 999, time.Second + 40*time.Millisecond, 0} {
		tm := base.Add(d)
		if got, want := string(c.Append(nil, tm)), tm.UTC().Format("2006-01-02T15:04:05.000Z"); got != want {
			t.Errorf("%v: got %s, want %s", d, got, want)
		}
	}
}
