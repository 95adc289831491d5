package tracing

import (
	"github.com/amime-mesh/amime/internal/proxy/header"
)

// TraceID is a 64- or 128-bit trace id. Wide keeps a 128-bit id whose
// high half is zero at 32 digits, as it came.
type TraceID struct {
	Hi, Lo uint64
	Wide   bool
}

// IsZero reports whether the id is unset (invalid in every format).
func (t TraceID) IsZero() bool { return t.Hi == 0 && t.Lo == 0 }

// Flag is an incoming sampling decision.
type Flag uint8

// Sampling flags of an incoming context.
const (
	FlagUnset Flag = iota // no decision: the proxy decides
	FlagNo
	FlagYes
	FlagDebug // B3 debug (x-b3-flags: 1, b3 "d"): sampled
)

// Incoming is the trace context a request came with.
type Incoming struct {
	TraceID  TraceID
	SpanID   uint64
	ParentID uint64 // B3's x-b3-parentspanid, 0 if none
	// HasContext: TraceID and SpanID are set.
	HasContext bool
	Sampled    Flag
	// Invalid: a context header was present but malformed in every
	// format, so the request is not traced (Envoy's NullSpan).
	Invalid bool
	// B3Single: the request carried a b3 header, rewritten on inject.
	B3Single bool
}

// one format's parse result
type parsed struct {
	tid          TraceID
	sid, parent  uint64
	ok, bad      bool
	sampled      Flag
	present      bool
	samplingOnly bool
}

// Extract reads the incoming context in one pass over the headers. prefer
// names the format that wins when several are valid: the configured
// provider's (W3C for OpenTelemetry, B3 for Zipkin).
func Extract(h header.List, prefer Kind) Incoming {
	var tp, b3s, b3t, b3sp, b3p, b3smp, b3f string
	var hasTP, hasB3s, hasB3t, hasB3sp, hasB3p, hasB3smp, hasB3f bool
	for i := range h {
		n := h[i].Name
		if len(n) < 2 || (n[0] != 't' && n[0] != 'b' && n[0] != 'x') {
			continue
		}
		switch n {
		case "traceparent":
			if !hasTP {
				tp, hasTP = h[i].Value, true
			}
		case "b3":
			if !hasB3s {
				b3s, hasB3s = h[i].Value, true
			}
		case "x-b3-traceid":
			if !hasB3t {
				b3t, hasB3t = h[i].Value, true
			}
		case "x-b3-spanid":
			if !hasB3sp {
				b3sp, hasB3sp = h[i].Value, true
			}
		case "x-b3-parentspanid":
			if !hasB3p {
				b3p, hasB3p = h[i].Value, true
			}
		case "x-b3-sampled":
			if !hasB3smp {
				b3smp, hasB3smp = h[i].Value, true
			}
		case "x-b3-flags":
			if !hasB3f {
				b3f, hasB3f = h[i].Value, true
			}
		}
	}
	var w3c, b3 parsed
	if hasTP {
		w3c = parseTraceparent(tp)
	}
	switch {
	case hasB3s:
		b3 = parseB3Single(b3s)
	case hasB3t || hasB3sp || hasB3smp || hasB3f:
		b3 = parseB3Multi(b3t, b3sp, b3p, b3smp, b3f, hasB3t, hasB3sp, hasB3p)
	}
	in := Incoming{B3Single: hasB3s}
	first, second := &b3, &w3c
	if prefer == OpenTelemetry {
		first, second = &w3c, &b3
	}
	switch {
	case first.ok:
		in.TraceID, in.SpanID, in.ParentID, in.HasContext, in.Sampled = first.tid, first.sid, first.parent, true, first.sampled
	case second.ok:
		in.TraceID, in.SpanID, in.ParentID, in.HasContext, in.Sampled = second.tid, second.sid, second.parent, true, second.sampled
	case first.bad || second.bad:
		in.Invalid = true
	case b3.samplingOnly:
		// x-b3-sampled (or b3: 0/1/d) alone: a decision for a new trace.
		in.Sampled = b3.sampled
	}
	return in
}

// parseTraceparent parses version-traceid-parentid-flags (W3C Trace
// Context): lower-case hex, version ff invalid, version 00 exactly 55
// bytes, later versions may append fields after a '-'.
func parseTraceparent(v string) parsed {
	p := parsed{present: true}
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		p.bad = true
		return p
	}
	ver, ok1 := hex8(v[0:2], false)
	hi, ok2 := hex64(v[3:19], false)
	lo, ok3 := hex64(v[19:35], false)
	sid, ok4 := hex64(v[36:52], false)
	flags, ok5 := hex8(v[53:55], false)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || ver == 0xff || (ver == 0 && len(v) != 55) || (len(v) > 55 && v[55] != '-') {
		p.bad = true
		return p
	}
	if hi == 0 && lo == 0 || sid == 0 {
		p.bad = true
		return p
	}
	p.tid, p.sid, p.ok = TraceID{hi, lo, true}, sid, true
	p.sampled = FlagNo
	if flags&1 != 0 {
		p.sampled = FlagYes
	}
	return p
}

// parseB3Single parses b3: {traceid}-{spanid}[-{sampling}[-{parentid}]]
// or a lone sampling state.
func parseB3Single(v string) parsed {
	p := parsed{present: true}
	if len(v) == 1 {
		if p.sampled = b3SamplingState(v); p.sampled == FlagUnset {
			p.bad = true
		} else {
			p.samplingOnly = true
		}
		return p
	}
	var tid, rest string
	switch {
	case len(v) >= 33 && v[32] == '-':
		tid, rest = v[:32], v[33:]
	case len(v) >= 17 && v[16] == '-':
		tid, rest = v[:16], v[17:]
	default:
		p.bad = true
		return p
	}
	t, ok := parseTraceID(tid)
	if !ok || len(rest) < 16 {
		p.bad = true
		return p
	}
	sid, ok := hex64(rest[:16], true)
	if !ok || sid == 0 {
		p.bad = true
		return p
	}
	rest = rest[16:]
	if rest != "" {
		if rest[0] != '-' || len(rest) < 2 {
			p.bad = true
			return p
		}
		rest = rest[1:]
		st, after, _ := cut(rest, '-')
		if p.sampled = b3SamplingState(st); p.sampled == FlagUnset {
			p.bad = true
			return p
		}
		if after != "" {
			par, ok := hex64(after, true)
			if !ok || len(after) != 16 {
				p.bad = true
				return p
			}
			p.parent = par
		}
	}
	p.tid, p.sid, p.ok = t, sid, true
	return p
}

func b3SamplingState(s string) Flag {
	switch s {
	case "0":
		return FlagNo
	case "1":
		return FlagYes
	case "d":
		return FlagDebug
	}
	return FlagUnset
}

// parseB3Multi parses the x-b3-* headers as Envoy's Zipkin extractor:
// trace and span id go together (one without the other is no context),
// x-b3-sampled is "1"/"true" or anything else for no, x-b3-flags 1 is
// debug.
func parseB3Multi(tid, sid, par, smp, flags string, hasT, hasS, hasP bool) parsed {
	p := parsed{present: true}
	switch {
	case flags == "1":
		p.sampled = FlagDebug
	case smp == "1" || smp == "true":
		p.sampled = FlagYes
	case smp != "":
		p.sampled = FlagNo
	}
	if !hasT || !hasS {
		p.samplingOnly = p.sampled != FlagUnset
		return p
	}
	t, ok := parseTraceID(tid)
	s, ok2 := hex64(sid, true)
	if !ok || !ok2 || len(sid) != 16 || s == 0 {
		p.bad = true
		return p
	}
	if hasP {
		pid, ok := hex64(par, true)
		if !ok || len(par) != 16 {
			p.bad = true
			return p
		}
		p.parent = pid
	}
	p.tid, p.sid, p.ok = t, s, true
	return p
}

// parseTraceID parses a 16 or 32 hex digit B3 trace id.
func parseTraceID(s string) (TraceID, bool) {
	switch len(s) {
	case 16:
		lo, ok := hex64(s, true)
		return TraceID{Lo: lo}, ok && lo != 0
	case 32:
		hi, ok := hex64(s[:16], true)
		lo, ok2 := hex64(s[16:], true)
		return TraceID{hi, lo, true}, ok && ok2 && (hi != 0 || lo != 0)
	}
	return TraceID{}, false
}

func cut(s string, c byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// hex64 parses 1..16 hex digits; upper case only when upper is allowed
// (B3 ids; W3C requires lower case).
func hex64(s string, upper bool) (uint64, bool) {
	if len(s) == 0 || len(s) > 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d, ok := hexDigit(s[i], upper)
		if !ok {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

func hex8(s string, upper bool) (uint8, bool) {
	v, ok := hex64(s, upper)
	return uint8(v), ok
}

func hexDigit(c byte, upper bool) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case upper && c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789abcdef"

func putHex64(b []byte, v uint64) {
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

// Outgoing is the context the proxy sends upstream.
type Outgoing struct {
	TraceID  TraceID
	SpanID   uint64
	ParentID uint64 // 0: no parent
	Sampled  bool
}

// Inject writes the propagation headers (see the package comment). All
// the values share one allocation.
func (o *Outgoing) Inject(h *header.List, b3Single bool) {
	// Layout: "00-" trace(32) "-" span(16) "-" flags(2) parent(16)
	//         [trace(32 or 16) "-" span "-" sampled "-" parent] for b3
	var buf [71 + 32 + 1 + 16 + 1 + 1 + 1 + 16]byte
	b := buf[:]
	copy(b, "00-")
	putHex64(b[3:19], o.TraceID.Hi)
	putHex64(b[19:35], o.TraceID.Lo)
	b[35] = '-'
	putHex64(b[36:52], o.SpanID)
	b[52] = '-'
	if o.Sampled {
		copy(b[53:55], "01")
	} else {
		copy(b[53:55], "00")
	}
	n := 55
	if o.ParentID != 0 {
		putHex64(b[55:71], o.ParentID)
		n = 71
	}
	// B3 keeps a 64-bit trace id at 16 digits.
	tStart := 3
	if !o.TraceID.Wide {
		tStart = 19
	}
	b3Start := n
	if b3Single {
		n += copy(b[n:], b[tStart:35])
		b[n] = '-'
		n++
		n += copy(b[n:], b[36:52])
		b[n] = '-'
		b[n+1] = '0'
		if o.Sampled {
			b[n+1] = '1'
		}
		n += 2
		if o.ParentID != 0 {
			b[n] = '-'
			n++
			n += copy(b[n:], b[55:71])
		}
	}
	s := string(b[:n])
	h.Set("traceparent", s[:55])
	h.Set("x-b3-traceid", s[tStart:35])
	h.Set("x-b3-spanid", s[36:52])
	if o.ParentID != 0 {
		h.Set("x-b3-parentspanid", s[55:71])
	} else {
		h.Del("x-b3-parentspanid")
	}
	if o.Sampled {
		h.Set("x-b3-sampled", "1")
	} else {
		h.Set("x-b3-sampled", "0")
	}
	if b3Single {
		h.Set("b3", s[b3Start:n])
	}
}
