package route

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Env carries the values the substitution commands of header values read.
// The proxy fills it once per connection (addresses, protocol) and request.
type Env struct {
	// Request is the downstream request. %REQ()% in response mutations reads
	// its Headers; pseudo-headers (:authority or host, :path, :method,
	// :scheme) always come from its fields. May be nil.
	Request *Request
	// DownstreamRemoteAddress is "ip:port" ("[ip6]:port" for IPv6).
	DownstreamRemoteAddress string
	// DownstreamRemoteAddressWithoutPort is the bare IP ("::1", unbracketed).
	DownstreamRemoteAddressWithoutPort string
	// DownstreamLocalAddress is "ip:port" of the listener side.
	DownstreamLocalAddress string
	// Hostname is the proxy host's name (os.Hostname).
	Hostname string
	// Protocol is the downstream protocol: "HTTP/1.0", "HTTP/1.1", "HTTP/2".
	Protocol string
}

// MutateRequest applies request_headers_to_add/remove to the upstream
// request headers h of a Forward route (Envoy applies none to requests it
// answers itself), in Envoy's order: a weighted cluster's own mutations
// first, then route, virtual host and route configuration (reversed to route
// configuration, virtual host, route when most_specific_header_mutations_wins
// is set); later levels win. Within a level, removals come first, then every
// value is evaluated against the headers as they are, then overwrites are
// applied, then additions. %REQ()% reads h. Appends add a line rather than
// folding into the previous one, which HTTP treats the same.
func (r *Route) MutateRequest(h *header.List, env *Env) {
	if r.wc != nil {
		r.wc.req.apply(h, env, true)
	}
	e := r.e
	t := e.vh.table
	if t.mostSpecificWins {
		t.req.apply(h, env, true)
		e.vh.req.apply(h, env, true)
		e.req.apply(h, env, true)
		return
	}
	e.req.apply(h, env, true)
	e.vh.req.apply(h, env, true)
	t.req.apply(h, env, true)
}

// MutateResponse applies response_headers_to_add/remove to the downstream
// response headers h, in the same order as MutateRequest. It applies to
// every kind of route, including redirects and direct responses. %REQ()%
// reads env.Request.
func (r *Route) MutateResponse(h *header.List, env *Env) {
	if r.wc != nil {
		r.wc.resp.apply(h, env, false)
	}
	e := r.e
	t := e.vh.table
	if t.mostSpecificWins {
		t.resp.apply(h, env, false)
		e.vh.resp.apply(h, env, false)
		e.resp.apply(h, env, false)
		return
	}
	e.resp.apply(h, env, false)
	e.vh.resp.apply(h, env, false)
	t.resp.apply(h, env, false)
}

// mutation is one level's headers_to_add and headers_to_remove, like
// Envoy's HeaderParser.
type mutation struct {
	remove []string
	add    []headerAdd
}

type headerAdd struct {
	name      string
	value     format
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

type addOp uint8

const (
	opSkip addOp = iota
	opAdd
	opSet
)

func (m *mutation) apply(h *header.List, env *Env, request bool) {
	if m == nil {
		return
	}
	for _, n := range m.remove {
		h.Del(n)
	}
	if len(m.add) == 0 {
		return
	}
	// Two phases, as Envoy: every value and condition is computed against
	// the headers before this level changes them.
	var vbuf [8]string
	var obuf [8]addOp
	vals, ops := vbuf[:], obuf[:]
	if len(m.add) > len(vbuf) {
		vals, ops = make([]string, len(m.add)), make([]addOp, len(m.add))
	}
	var src header.List
	if request {
		src = *h
	} else if env != nil && env.Request != nil {
		src = env.Request.Headers
	}
	for i := range m.add {
		a := &m.add[i]
		v := a.value.eval(src, env)
		op := opSkip
		if v != "" || a.keepEmpty {
			switch a.action {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
				op = opAdd
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				if !h.Has(a.name) {
					op = opAdd
				}
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				if h.Has(a.name) {
					op = opSet
				}
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				op = opSet
			}
		}
		vals[i], ops[i] = v, op
	}
	for i := range m.add {
		if ops[i] == opSet {
			h.Set(m.add[i].name, vals[i])
		}
	}
	for i := range m.add {
		if ops[i] == opAdd {
			h.Add(m.add[i].name, vals[i])
		}
	}
}

// modifiable is Envoy's HeaderUtility::isModifiableHeader.
func modifiable(name string) bool {
	return (name == "" || name[0] != ':') && !header.EqualFold(name, "host")
}

type command uint8

const (
	cmdLiteral command = iota
	cmdReq
	cmdRemoteAddr
	cmdRemoteAddrNoPort
	cmdLocalAddr
	cmdHostname
	cmdProtocol
)

var commands = map[string]command{
	"REQ":                                    cmdReq,
	"DOWNSTREAM_REMOTE_ADDRESS":              cmdRemoteAddr,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": cmdRemoteAddrNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":               cmdLocalAddr,
	"HOSTNAME":                               cmdHostname,
	"PROTOCOL":                               cmdProtocol,
}

// part is a literal or a substitution command of a header value.
type part struct {
	cmd    command
	lit    string
	hdr    matcher.HeaderName // REQ
	alt    matcher.HeaderName // REQ(main?alt)
	hasAlt bool
	maxLen int // :Z, -1 when unset
}

// format is a pre-parsed header value, so applying does no parsing.
type format struct {
	literal string // the whole value when it has no command
	parts   []part // nil when literal
}

// commandRE is Envoy's substitution command syntax: %NAME%, %NAME(arg)%,
// with an optional :Z maximum length.
var commandRE = regexp.MustCompile(`^%((?:[A-Z]|[0-9]|_)+)(?:\((.*?)\))?(?::([0-9]+))?%`)

// parseFormat parses a header value: literal text with "%%" for "%", and
// the supported commands; any other command is an error, as Envoy rejects
// commands it does not know and this proxy implements only these.
func parseFormat(s string) (format, error) {
	if !strings.Contains(s, "%") {
		return format{literal: s}, nil
	}
	var parts []part
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, part{lit: lit.String()})
			lit.Reset()
		}
	}
	for pos := 0; pos < len(s); {
		if s[pos] != '%' {
			lit.WriteByte(s[pos])
			pos++
			continue
		}
		if pos+1 < len(s) && s[pos+1] == '%' {
			lit.WriteByte('%')
			pos += 2
			continue
		}
		m := commandRE.FindStringSubmatchIndex(s[pos:])
		if m == nil {
			return format{}, fmt.Errorf("invalid substitution format %q: no valid command at position %d (write %%%% for a literal %%)", s, pos)
		}
		name := s[pos+m[2] : pos+m[3]]
		cmd, ok := commands[name]
		if !ok {
			return format{}, fmt.Errorf("unsupported substitution command %%%s%% in %q", name, s)
		}
		p := part{cmd: cmd, maxLen: -1}
		hasArg := m[4] >= 0
		if m[6] >= 0 {
			n, err := strconv.Atoi(s[pos+m[6] : pos+m[7]])
			if err != nil {
				return format{}, fmt.Errorf("invalid maximum length in %q", s[pos:pos+m[1]])
			}
			p.maxLen = n
		}
		if cmd == cmdReq {
			if !hasArg {
				return format{}, fmt.Errorf("%%REQ%% needs a header name: %%REQ(name)%% in %q", s)
			}
			arg := s[pos+m[4] : pos+m[5]]
			main, alt, hasAlt := strings.Cut(arg, "?")
			if main == "" || (hasAlt && (alt == "" || strings.Contains(alt, "?"))) {
				return format{}, fmt.Errorf("invalid %%REQ(%s)%% in %q: want %%REQ(name)%% or %%REQ(name?alternative)%%", arg, s)
			}
			p.hdr, p.alt, p.hasAlt = matcher.NewHeaderName(main), matcher.NewHeaderName(alt), hasAlt
		} else if hasArg {
			return format{}, fmt.Errorf("%%%s%% takes no argument in %q", name, s)
		}
		flush()
		parts = append(parts, p)
		pos += m[1]
	}
	flush()
	if len(parts) == 1 && parts[0].cmd == cmdLiteral {
		return format{literal: parts[0].lit}, nil
	}
	if len(parts) == 0 {
		return format{}, nil
	}
	return format{parts: parts}, nil
}

// eval renders the value. src is the request header list %REQ()% reads.
// A value that is one command alone is returned without copying.
func (f *format) eval(src header.List, env *Env) string {
	switch len(f.parts) {
	case 0:
		return f.literal
	case 1:
		return f.parts[0].eval(src, env)
	}
	var b strings.Builder
	for i := range f.parts {
		b.WriteString(f.parts[i].eval(src, env))
	}
	return b.String()
}

func (p *part) eval(src header.List, env *Env) string {
	var v string
	switch p.cmd {
	case cmdLiteral:
		return p.lit
	case cmdReq:
		var ok bool
		if v, ok = reqHeader(p.hdr, src, env); !ok && p.hasAlt {
			v, _ = reqHeader(p.alt, src, env)
		}
	case cmdRemoteAddr, cmdRemoteAddrNoPort, cmdLocalAddr, cmdHostname, cmdProtocol:
		if env == nil {
			return ""
		}
		switch p.cmd {
		case cmdRemoteAddr:
			v = env.DownstreamRemoteAddress
		case cmdRemoteAddrNoPort:
			v = env.DownstreamRemoteAddressWithoutPort
		case cmdLocalAddr:
			v = env.DownstreamLocalAddress
		case cmdHostname:
			v = env.Hostname
		case cmdProtocol:
			v = env.Protocol
		}
	}
	if p.maxLen >= 0 && len(v) > p.maxLen {
		v = v[:p.maxLen]
	}
	return v
}

// reqHeader is %REQ(name)%: the first value of a request header, from
// src; pseudo-headers are read from env.Request.
func reqHeader(h matcher.HeaderName, src header.List, env *Env) (string, bool) {
	if !h.IsPseudo() {
		return src.Get(h.Name)
	}
	if env == nil || env.Request == nil {
		return "", false
	}
	return h.First(env.Request)
}
