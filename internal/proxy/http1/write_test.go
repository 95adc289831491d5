package http1

import (
	"bufio"
	"bytes"
	"slices"
	"testing"
)

func TestAppendRequestHead(t *testing.T) {
	got := AppendRequestHead(nil, "GET", "/p?q", 1, hl("host", "a", "x-a", ""))
	want := "GET /p?q HTTP/1.1\r\nhost: a\r\nx-a: \r\n\r\n"
	if string(got) != want {
		t.Fatalf("%q", got)
	}
	got = AppendRequestHead(got[:0], "POST", "/", 0, nil)
	if string(got) != "POST / HTTP/1.0\r\n\r\n" {
		t.Fatalf("%q", got)
	}
}

func TestAppendResponseHead(t *testing.T) {
	tests := []struct {
		status int
		reason string
		want   string
	}{
		{200, "", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"},
		{404, "Nope", "HTTP/1.1 404 Nope\r\ncontent-length: 0\r\n\r\n"},
		{431, "", "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"},
		{599, "", "HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n"},
	}
	for _, tt := range tests {
		got := AppendResponseHead(nil, tt.status, tt.reason, hl("content-length", "0"))
		if string(got) != tt.want {
			t.Errorf("%d: %q", tt.status, got)
		}
		// What we write, we read back.
		var h ResponseHead
		if err := ReadResponseHead(bufio.NewReader(bytes.NewReader(got)), &h, Limits{}); err != nil {
			t.Fatal(err)
		}
		if h.Status != tt.status || !slices.Equal(h.Headers, hl("content-length", "0")) {
			t.Errorf("%d: reparsed %d %q", tt.status, h.Status, h.Headers)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	hs := hl("host", "a", "user-agent", "x", "accept", "*/*")
	buf := make([]byte, 0, 512)
	if a := testing.AllocsPerRun(100, func() {
		buf = AppendRequestHead(buf[:0], "GET", "/", 1, hs)
		buf = AppendResponseHead(buf[:0], 200, "", hs)
	}); a != 0 {
		t.Fatalf("allocs %v", a)
	}
}

func TestValidValue(t *testing.T) {
	naive := func(v []byte) bool {
		for _, c := range v {
			if charClass[c]&cValue == 0 {
				return false
			}
		}
		return true
	}
	for n := 0; n <= 17; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				v := bytes.Repeat([]byte("a"), n)
				v[pos] = byte(c)
				if got, want := validValue(v), naive(v); got != want {
					t.Fatalf("len %d pos %d byte %#x: %v, want %v", n, pos, c, got, want)
				}
			}
		}
	}
}
