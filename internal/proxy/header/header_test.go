package header

import (
	"slices"
	"testing"
)

func TestListOps(t *testing.T) {
	var l List
	l.Add("a", "1")
	l.Add("b", "2")
	l.Add("a", "3")
	if v, ok := l.Get("a"); !ok || v != "1" {
		t.Fatalf("Get(a) = %q,%v", v, ok)
	}
	if l.Count("a") != 2 {
		t.Fatalf("Count(a) = %d", l.Count("a"))
	}
	l.Set("a", "x")
	want := List{{"a", "x"}, {"b", "2"}}
	if !slices.Equal(l, want) {
		t.Fatalf("after Set: %v, want %v", l, want)
	}
	l.Set("c", "y")
	l.SetIfAbsent("c", "z")
	l.Del("b")
	want = List{{"a", "x"}, {"c", "y"}}
	if !slices.Equal(l, want) {
		t.Fatalf("after Del: %v, want %v", l, want)
	}
	if l.Has("b") {
		t.Fatal("b still present")
	}
	l.Reset()
	if len(l) != 0 {
		t.Fatal("Reset left fields")
	}
}

func TestLowerAndFold(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"content-type", "content-type"},
		{"Content-Type", "content-type"},
		{"X-B3-TraceId", "x-b3-traceid"},
		{"", ""},
	} {
		if got := Lower(tc.in); got != tc.want {
			t.Errorf("Lower(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !EqualFold(tc.in, tc.want) {
			t.Errorf("EqualFold(%q,%q) = false", tc.in, tc.want)
		}
	}
	if EqualFold("abc", "abd") || EqualFold("a", "ab") {
		t.Error("EqualFold matched different strings")
	}
}

func BenchmarkLowerAlreadyLower(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Lower("x-forwarded-for")
	}
}
