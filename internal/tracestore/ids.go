package tracestore

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// zeroPad64 left-pads a 64-bit trace id to the 128-bit form, as Zipkin and
// W3C trace context do when the two meet.
const zeroPad64 = "0000000000000000"

var (
	errAllZero = errors.New("all zeros is not a valid id")
	errNotHex  = errors.New("not hex")
)

// normalizeTraceID returns a trace id as 32 lower-case hex digits; a 16-digit
// (64-bit) id is padded with zeros on the left.
func normalizeTraceID(id string) (string, error) {
	switch len(id) {
	case 16:
		id = zeroPad64 + id
	case 32:
	default:
		return "", fmt.Errorf("want 16 or 32 hex digits, got %d characters", len(id))
	}
	return normalizeHex(id)
}

// normalizeSpanID returns a span id as 16 lower-case hex digits.
func normalizeSpanID(id string) (string, error) {
	if len(id) != 16 {
		return "", fmt.Errorf("want 16 hex digits, got %d characters", len(id))
	}
	return normalizeHex(id)
}

// normalizeHex checks that id is hex and not all zeros, and lower-cases it.
// An id already in lower case is returned as is, without a copy.
func normalizeHex(id string) (string, error) {
	upper, zero := false, true
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			zero = zero && c == '0'
		case c >= 'a' && c <= 'f':
			zero = false
		case c >= 'A' && c <= 'F':
			zero, upper = false, true
		default:
			return "", errNotHex
		}
	}
	if zero {
		return "", errAllZero
	}
	if upper {
		id = strings.ToLower(id)
	}
	return id, nil
}

// hexID encodes a binary id of want bytes as lower-case hex. last caches
// the previous result: spans of one batch mostly share their trace id, so
// the cache saves an allocation per span.
func hexID(b []byte, want int, last *idCache) (string, error) {
	if len(b) != want {
		return "", fmt.Errorf("want %d bytes, got %d", want, len(b))
	}
	zero := true
	for _, c := range b {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return "", errAllZero
	}
	if last != nil && string(b) == string(last.raw) {
		return last.hex, nil
	}
	s := hex.EncodeToString(b)
	if last != nil {
		last.raw = append(last.raw[:0], b...)
		last.hex = s
	}
	return s, nil
}

// idCache remembers the last binary id hexID encoded.
type idCache struct {
	raw []byte
	hex string
}
