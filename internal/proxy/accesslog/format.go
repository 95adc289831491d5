package accesslog

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Format is a compiled SubstitutionFormatString: text with %COMMAND%
// operators, or a JSON object whose string values hold them.
type Format struct {
	text []piece // text format
	json []field // json format, in key order
	// ts caches the default START_TIME text up to the second; Append is
	// therefore not safe for concurrent use (a Sink serializes it).
	ts TimeCache
}

// TimeCache formats Envoy's default %START_TIME%, 2006-01-02T15:04:05.000Z,
// reusing the text up to the second: most lines share it. Not safe for
// concurrent use.
type TimeCache struct {
	sec    int64
	prefix []byte // "2006-01-02T15:04:05."
}

// Append appends t formatted.
func (c *TimeCache) Append(b []byte, t time.Time) []byte {
	t = t.UTC()
	if sec := t.Unix(); sec != c.sec || c.prefix == nil {
		c.sec = sec
		c.prefix = t.AppendFormat(c.prefix[:0], "2006-01-02T15:04:05.")
	}
	b = append(b, c.prefix...)
	ms := t.Nanosecond() / int(time.Millisecond)
	return append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// piece is literal text or one command.
type piece struct {
	lit string
	cmd *command
}

// field is one JSON member: its quoted key and its value, either a single
// command (typed: numbers stay numbers) or text with commands (a string).
type field struct {
	key    string // already JSON-quoted, with the colon
	pieces []piece
	nested *Format // a nested object
	raw    []byte  // a number or boolean constant, as JSON
}

// kind says how a command's value is typed in JSON.
type kind int

const (
	kString kind = iota
	kNumber
)

// command is one %OPERATOR(args):maxlen%.
type command struct {
	op      string
	main    string // header name (lower-case) for REQ/RESP/TRAILER
	alt     string
	maxLen  int // 0: no limit
	kind    kind
	timeFmt string // START_TIME(format), "" for Envoy's default
	host    string // HOSTNAME, read at compile time
}

// ops are the operators amime fills, with their JSON type. Others are
// refused at compile time, so a format never prints a silent "-".
var ops = map[string]kind{
	"START_TIME": kString, "PROTOCOL": kString, "RESPONSE_CODE": kNumber, "RESPONSE_FLAGS": kString,
	"RESPONSE_FLAGS_LONG": kString, "RESPONSE_CODE_DETAILS": kString, "CONNECTION_TERMINATION_DETAILS": kString,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": kString, "BYTES_RECEIVED": kNumber, "BYTES_SENT": kNumber,
	"DURATION": kNumber, "UPSTREAM_HOST": kString, "UPSTREAM_CLUSTER": kString, "UPSTREAM_CLUSTER_RAW": kString,
	"UPSTREAM_LOCAL_ADDRESS": kString, "DOWNSTREAM_LOCAL_ADDRESS": kString, "DOWNSTREAM_REMOTE_ADDRESS": kString,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": kString, "DOWNSTREAM_PEER_URI_SAN": kString,
	"REQUESTED_SERVER_NAME": kString, "ROUTE_NAME": kString, "UPSTREAM_REQUEST_ATTEMPT_COUNT": kNumber,
	"REQ": kString, "RESP": kString, "TRAILER": kString, "HOSTNAME": kString, "REQUEST_DURATION": kNumber,
	"RESPONSE_DURATION": kNumber, "GRPC_STATUS_NUMBER": kNumber,
}

// CompileFormat compiles Envoy's SubstitutionFormatString. nil gives
// Envoy's default text format.
func CompileFormat(s *corev3.SubstitutionFormatString) (*Format, error) {
	if s == nil {
		return compileText(DefaultText)
	}
	if len(s.GetFormatters()) > 0 {
		return nil, fmt.Errorf("formatters: not supported by amime")
	}
	switch f := s.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		return compileText(f.TextFormat)
	case *corev3.SubstitutionFormatString_TextFormatSource:
		inline, ok := f.TextFormatSource.GetSpecifier().(*corev3.DataSource_InlineString)
		if !ok {
			return nil, fmt.Errorf("text_format_source: only inline_string is supported by amime")
		}
		return compileText(inline.InlineString)
	case *corev3.SubstitutionFormatString_JsonFormat:
		return compileJSON(f.JsonFormat, "json_format")
	}
	return compileText(DefaultText)
}

// DefaultText is Envoy's default access log format.
const DefaultText = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" " +
	"\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

func compileText(s string) (*Format, error) {
	pieces, err := parse(s)
	if err != nil {
		return nil, err
	}
	return &Format{text: pieces}, nil
}

func compileJSON(st *structpb.Struct, at string) (*Format, error) {
	f := &Format{}
	keys := make([]string, 0, len(st.GetFields()))
	for k := range st.GetFields() {
		keys = append(keys, k)
	}
	sortStrings(keys)
	for _, k := range keys {
		v := st.GetFields()[k]
		fd := field{key: string(appendJSONString(nil, k)) + ":"}
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			p, err := parse(x.StringValue)
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %w", at, k, err)
			}
			fd.pieces = p
		case *structpb.Value_StructValue:
			n, err := compileJSON(x.StructValue, at+"."+k)
			if err != nil {
				return nil, err
			}
			fd.nested = n
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue:
			fd.raw = mustJSON(v)
		default:
			return nil, fmt.Errorf("%s.%s: values must be strings, numbers, booleans or objects", at, k)
		}
		f.json = append(f.json, fd)
	}
	return f, nil
}

func mustJSON(v *structpb.Value) []byte {
	b, _ := v.MarshalJSON()
	return b
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// parse splits a format into literals and commands. "%%" is a literal %.
func parse(s string) ([]piece, error) {
	var out []piece
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := commandEnd(s, i+1)
		if end < 0 {
			return nil, fmt.Errorf("format %q: unterminated %% at offset %d", s, i)
		}
		cmd, err := parseCommand(s[i+1 : end])
		if err != nil {
			return nil, fmt.Errorf("format %q: %w", s, err)
		}
		if lit.Len() > 0 {
			out = append(out, piece{lit: lit.String()})
			lit.Reset()
		}
		out = append(out, piece{cmd: cmd})
		i = end + 1
	}
	if lit.Len() > 0 {
		out = append(out, piece{lit: lit.String()})
	}
	return out, nil
}

// commandEnd finds the % closing the command that starts at from: after
// the operator name, its (arguments) may hold % (START_TIME's strftime).
func commandEnd(s string, from int) int {
	j := from
	for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
		j++
	}
	if j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return -1
		}
		j += k + 1
	}
	k := strings.IndexByte(s[j:], '%')
	if k < 0 {
		return -1
	}
	return j + k
}

// parseCommand reads OP, OP(args) or OP(args):N.
func parseCommand(s string) (*command, error) {
	c := &command{}
	name := s
	var args string
	if i := strings.IndexByte(s, '('); i >= 0 {
		j := strings.LastIndexByte(s, ')')
		if j < i {
			return nil, fmt.Errorf("%%%s%%: missing )", s)
		}
		name, args = s[:i], s[i+1:j]
		if rest := s[j+1:]; rest != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
			if !strings.HasPrefix(rest, ":") || err != nil || n <= 0 {
				return nil, fmt.Errorf("%%%s%%: bad length %q", s, rest)
			}
			c.maxLen = n
		}
	}
	k, ok := ops[name]
	if !ok {
		return nil, fmt.Errorf("%%%s%%: operator %s is not supported by amime", s, name)
	}
	c.op, c.kind = name, k
	switch name {
	case "REQ", "RESP", "TRAILER":
		if args == "" {
			return nil, fmt.Errorf("%%%s%%: a header name is required", s)
		}
		main, alt, _ := strings.Cut(args, "?")
		c.main, c.alt = strings.ToLower(main), strings.ToLower(alt)
	case "HOSTNAME":
		c.host, _ = os.Hostname()
	case "START_TIME":
		if args != "" {
			layout, err := strftime(args)
			if err != nil {
				return nil, fmt.Errorf("%%%s%%: %w", s, err)
			}
			c.timeFmt = layout
		}
	default:
		if args != "" {
			return nil, fmt.Errorf("%%%s%%: %s takes no arguments", s, name)
		}
	}
	return c, nil
}

// strftime turns the strftime subset access logs use into a Go layout.
func strftime(f string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'Y':
			b.WriteString("2006")
		case 'm':
			b.WriteString("01")
		case 'd':
			b.WriteString("02")
		case 'H':
			b.WriteString("15")
		case 'M':
			b.WriteString("04")
		case 'S':
			b.WriteString("05")
		case 'z':
			b.WriteString("-0700")
		case 's':
			b.WriteString("\x00s") // epoch seconds, handled at format time
		case '%':
			b.WriteByte('%')
		case '1', '2', '3', '4', '5', '6', '7', '8', '9':
			if i+1 < len(f) && f[i+1] == 'f' {
				// Go writes fractional seconds as zeros after a '.' or ','.
				if out := b.String(); !strings.HasSuffix(out, ".") && !strings.HasSuffix(out, ",") {
					return "", fmt.Errorf("strftime %%%cf must follow '.' or ','", f[i])
				}
				b.WriteString(strings.Repeat("0", int(f[i]-'0')))
				i++
				continue
			}
			return "", fmt.Errorf("strftime %%%c is not supported", f[i])
		default:
			return "", fmt.Errorf("strftime %%%c is not supported", f[i])
		}
	}
	return b.String(), nil
}

// Append formats one request's entry.
func (f *Format) Append(b []byte, i *streaminfo.Info) []byte {
	if f.json != nil {
		return append(f.appendJSON(b, i), '\n')
	}
	for _, p := range f.text {
		if p.cmd == nil {
			b = append(b, p.lit...)
			continue
		}
		n := len(b)
		b, _ = p.cmd.append(b, i, false, &f.ts)
		if len(b) == n {
			b = append(b, '-') // Envoy prints absent values as "-"
		}
	}
	return b
}

func (f *Format) appendJSON(b []byte, i *streaminfo.Info) []byte {
	b = append(b, '{')
	for n, fd := range f.json {
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, fd.key...)
		switch {
		case fd.raw != nil:
			b = append(b, fd.raw...)
		case fd.nested != nil:
			b = fd.nested.appendJSON(b, i)
		case len(fd.pieces) == 1 && fd.pieces[0].cmd != nil:
			// One command: its value typed, or null when absent. The value
			// is written in place after a quote; only a value that needs
			// escaping is copied.
			c := fd.pieces[0].cmd
			start := len(b)
			b = append(b, '"')
			v, ok := c.append(b, i, true, &f.ts)
			switch {
			case !ok || len(v) == start+1:
				b = append(v[:start], "null"...)
			case c.kind == kNumber:
				copy(v[start:], v[start+1:])
				b = v[:len(v)-1]
			default:
				b = closeJSONString(v, start)
			}
		default:
			start := len(b)
			b = append(b, '"')
			for _, p := range fd.pieces {
				if p.cmd == nil {
					b = append(b, p.lit...)
					continue
				}
				n := len(b)
				b, _ = p.cmd.append(b, i, true, &f.ts)
				if len(b) == n {
					b = append(b, '-')
				}
			}
			b = closeJSONString(b, start)
		}
	}
	return append(b, '}')
}

// append writes the command's value; ok is false when it has none.
func (c *command) append(b []byte, i *streaminfo.Info, raw bool, ts *TimeCache) ([]byte, bool) {
	start := len(b)
	str := func(s string) ([]byte, bool) {
		if s == "" {
			return b, false
		}
		if raw {
			// JSON escapes the value itself.
			return c.clip(append(b, s...), start), true
		}
		return c.clip(appendSafe(b, s), start), true
	}
	switch c.op {
	case "START_TIME":
		if i.Start.IsZero() {
			return b, false
		}
		if c.timeFmt == "" {
			return ts.Append(b, i.Start), true
		}
		layout := c.timeFmt
		if strings.Contains(layout, "\x00s") {
			layout = strings.ReplaceAll(layout, "\x00s", strconv.FormatInt(i.Start.Unix(), 10))
		}
		return i.Start.UTC().AppendFormat(b, layout), true
	case "PROTOCOL":
		return str(i.Protocol)
	case "RESPONSE_CODE":
		return strconv.AppendInt(b, int64(i.ResponseCode), 10), true
	case "RESPONSE_FLAGS", "RESPONSE_FLAGS_LONG":
		return i.Flags.AppendTo(b), true // "-" when none, as Envoy prints it
	case "RESPONSE_CODE_DETAILS":
		return str(i.Details)
	case "CONNECTION_TERMINATION_DETAILS":
		return b, false
	case "UPSTREAM_TRANSPORT_FAILURE_REASON":
		return str(i.UpstreamFailed)
	case "BYTES_RECEIVED":
		return strconv.AppendInt(b, i.BytesReceived, 10), true
	case "BYTES_SENT":
		return strconv.AppendInt(b, i.BytesSent, 10), true
	case "DURATION", "REQUEST_DURATION", "RESPONSE_DURATION":
		d := i.Duration
		if c.op == "RESPONSE_DURATION" {
			if i.UpstreamTime <= 0 {
				return b, false
			}
			d = i.UpstreamTime
		}
		return strconv.AppendInt(b, d.Milliseconds(), 10), true
	case "UPSTREAM_HOST":
		return str(i.UpstreamHost)
	case "UPSTREAM_CLUSTER", "UPSTREAM_CLUSTER_RAW":
		return str(i.Cluster)
	case "UPSTREAM_LOCAL_ADDRESS":
		return str(i.UpstreamLocal)
	case "DOWNSTREAM_LOCAL_ADDRESS":
		return str(i.DownstreamLocal)
	case "DOWNSTREAM_REMOTE_ADDRESS":
		return str(i.Downstream)
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		host := i.Downstream
		if j := strings.LastIndexByte(host, ':'); j >= 0 {
			host = strings.Trim(host[:j], "[]")
		}
		return str(host)
	case "DOWNSTREAM_PEER_URI_SAN":
		return str(i.PeerPrincipal)
	case "REQUESTED_SERVER_NAME":
		return str(i.SNI)
	case "ROUTE_NAME":
		return str(i.RouteName)
	case "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return strconv.AppendInt(b, int64(i.AttemptCount), 10), true
	case "GRPC_STATUS_NUMBER":
		if i.GRPCStatus == "" {
			return b, false
		}
		return append(b, i.GRPCStatus...), true
	case "HOSTNAME":
		return str(c.host)
	case "REQ":
		v := requestHeader(i, c.main)
		if v == "" && c.alt != "" {
			v = requestHeader(i, c.alt)
		}
		return str(v)
	case "RESP":
		v := i.ResponseHeaders.Value(c.main)
		if v == "" && c.alt != "" {
			v = i.ResponseHeaders.Value(c.alt)
		}
		if v == "" && c.main == "x-envoy-upstream-service-time" && i.UpstreamTime > 0 {
			return strconv.AppendInt(b, i.UpstreamTime.Milliseconds(), 10), true
		}
		return str(v)
	case "TRAILER":
		return b, false
	}
	return b, false
}

func (c *command) clip(b []byte, start int) []byte {
	if c.maxLen > 0 && len(b)-start > c.maxLen {
		return b[:start+c.maxLen]
	}
	return b
}

// requestHeader reads a request header; pseudo-headers come from the
// record, whatever the downstream protocol.
func requestHeader(i *streaminfo.Info, name string) string {
	switch name {
	case ":method":
		return i.Method
	case ":path":
		return i.Path
	case ":authority", "host":
		return i.Authority
	case "x-request-id":
		if i.RequestID != "" {
			return i.RequestID
		}
	case "user-agent":
		if i.UserAgent != "" {
			return i.UserAgent
		}
	case "x-forwarded-for":
		if i.ForwardedFor != "" {
			return i.ForwardedFor
		}
	}
	return i.RequestHeaders.Value(name)
}

// appendSafe appends s with control characters replaced, so that a header
// cannot forge a log line.
func appendSafe(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			b = append(b, '_')
		} else {
			b = append(b, c)
		}
	}
	return b
}

// closeJSONString ends the JSON string whose opening quote is at
// b[start], escaping its raw contents first when they need it.
func closeJSONString(b []byte, start int) []byte {
	for _, c := range b[start+1:] {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			raw := string(b[start+1:]) // rare: copy, then escape
			return appendJSONString(b[:start], raw)
		}
	}
	return append(b, '"')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
	}
	return append(b, '"')
}
