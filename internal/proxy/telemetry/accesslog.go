package telemetry

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/amime-mesh/amime/internal/proxy/accesslog"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// Format is an access log line format.
type Format int

const (
	// JSON is Istio's JSON access log (meshConfig accessLogEncoding JSON).
	JSON Format = iota
	// Text is Envoy's default text format.
	Text
)

// ParseFormat reads "json" or "text".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "json", "":
		return JSON, nil
	case "text":
		return Text, nil
	}
	return 0, fmt.Errorf("access log format: want json or text, got %q", s)
}

const (
	// flushSize wakes the flusher early: one write per this many bytes at
	// most, whatever the request rate.
	flushSize = 64 << 10
	// maxBuffered bounds memory when the output cannot keep up; lines past
	// it are dropped and counted rather than stalling requests.
	maxBuffered = 4 << 20
)

// AccessLog writes one line per request. Lines are encoded into a buffer
// that a goroutine writes out every interval (or when it fills), so the
// request path never makes a system call.
type AccessLog struct {
	format   Format
	out      io.Writer
	interval time.Duration

	mu  sync.Mutex // guards buf and ts
	buf []byte
	ts  accesslog.TimeCache

	wmu   sync.Mutex // serializes writes; guards spare
	spare []byte

	dropped   atomic.Uint64
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

// NewAccessLog returns a log writing to out. Start begins the periodic
// flushing; Close flushes what is left.
func NewAccessLog(out io.Writer, f Format, interval time.Duration) *AccessLog {
	if interval <= 0 {
		interval = time.Second
	}
	return &AccessLog{format: f, out: out, interval: interval, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		// Room for a flush's worth and the lines logged while it is written,
		// so the buffers do not grow under steady load.
		buf: make([]byte, 0, 2*flushSize), spare: make([]byte, 0, 2*flushSize)}
}

// Log appends the request's line.
func (l *AccessLog) Log(info *streaminfo.Info) {
	l.mu.Lock()
	if len(l.buf) >= maxBuffered {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	if l.format == Text {
		l.buf = appendText(l.buf, &l.ts, info)
	} else {
		l.buf = appendJSON(l.buf, &l.ts, info)
	}
	full := len(l.buf) >= flushSize
	l.mu.Unlock()
	if full {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// Dropped counts lines lost because the output fell behind.
func (l *AccessLog) Dropped() uint64 { return l.dropped.Load() }

// Start starts the flushing goroutine, which Close stops.
func (l *AccessLog) Start() {
	l.startOnce.Do(func() {
		go func() {
			defer close(l.done)
			t := time.NewTicker(l.interval)
			defer t.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-t.C:
				case <-l.kick:
				}
				l.Flush()
			}
		}()
	})
}

// Close stops the flushing goroutine and writes what is buffered. Lines
// logged after Close stay buffered.
func (l *AccessLog) Close() error {
	l.closeOnce.Do(func() {
		l.startOnce.Do(func() { close(l.done) }) // never started: nothing to wait for
		close(l.stop)
		<-l.done
	})
	return l.Flush()
}

// Flush writes the buffered lines. The buffer is swapped out so requests
// keep logging while the write is in progress.
func (l *AccessLog) Flush() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	b := l.buf
	l.buf = l.spare[:0]
	l.mu.Unlock()
	var err error
	if len(b) > 0 {
		_, err = l.out.Write(b)
	}
	l.spare = b[:0]
	return err
}

// appendJSON encodes Istio's default JSON access log entry (its fields,
// in its order; numbers as numbers, absent values as null).
func appendJSON(b []byte, ts *accesslog.TimeCache, i *streaminfo.Info) []byte {
	b = append(b, `{"authority":`...)
	b = appendJSONString(b, i.Authority)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendInt(b, i.BytesReceived, 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, i.BytesSent, 10)
	b = append(b, `,"downstream_remote_address":`...)
	b = appendJSONString(b, i.Downstream)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, i.Duration.Milliseconds(), 10)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, i.Method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, i.Path)
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, i.Protocol)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, i.RequestID)
	b = append(b, `,"response_code":`...)
	b = strconv.AppendInt(b, int64(i.ResponseCode), 10)
	b = append(b, `,"response_code_details":`...)
	b = appendJSONString(b, i.Details)
	b = append(b, `,"response_flags":"`...)
	b = i.Flags.AppendTo(b)
	b = append(b, `","route_name":`...)
	b = appendJSONString(b, i.RouteName)
	b = append(b, `,"start_time":"`...)
	b = ts.Append(b, i.Start)
	b = append(b, `","upstream_cluster":`...)
	b = appendJSONString(b, i.Cluster)
	b = append(b, `,"upstream_host":`...)
	b = appendJSONString(b, i.UpstreamHost)
	b = append(b, `,"upstream_service_time":`...)
	if i.UpstreamTime > 0 {
		// A response header's value in Envoy, hence a string.
		b = append(b, '"')
		b = strconv.AppendInt(b, i.UpstreamTime.Milliseconds(), 10)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"upstream_transport_failure_reason":`...)
	b = appendJSONString(b, i.UpstreamFailed)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, i.UserAgent)
	b = append(b, `,"x_forwarded_for":`...)
	b = appendJSONString(b, i.ForwardedFor)
	return append(b, "}\n"...)
}

// appendJSONString appends s quoted, or null when empty (Envoy's JSON
// formatter prints an absent value as null).
func appendJSONString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonSafe[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, `\u00`...)
			b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the bytes a JSON string holds as they are: printable
// ASCII but '"' and '\\'.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendText encodes Envoy's default format:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
//	%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
//	"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
func appendText(b []byte, ts *accesslog.TimeCache, i *streaminfo.Info) []byte {
	b = append(b, '[')
	b = ts.Append(b, i.Start)
	b = append(b, `] "`...)
	b = appendDash(b, i.Method)
	b = append(b, ' ')
	b = appendDash(b, i.Path)
	b = append(b, ' ')
	b = appendDash(b, i.Protocol)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(i.ResponseCode), 10)
	b = append(b, ' ')
	b = i.Flags.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendInt(b, i.BytesReceived, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, i.BytesSent, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, i.Duration.Milliseconds(), 10)
	b = append(b, ' ')
	if i.UpstreamTime > 0 {
		b = strconv.AppendInt(b, i.UpstreamTime.Milliseconds(), 10)
	} else {
		b = append(b, '-')
	}
	for _, s := range [...]string{i.ForwardedFor, i.UserAgent, i.RequestID, i.Authority, i.UpstreamHost} {
		b = append(b, ` "`...)
		b = appendDash(b, s)
		b = append(b, '"')
	}
	return append(b, '\n')
}

// appendDash appends s, or "-" when empty, as Envoy prints absent values.
// Control characters are replaced so a header cannot forge a log line.
func appendDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			b = append(b, '_')
		} else {
			b = append(b, c)
		}
	}
	return b
}
