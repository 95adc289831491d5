package registry

import "testing"

func TestHostCovers(t *testing.T) {
	for _, tc := range []struct {
		p, h string
		want bool
	}{
		{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", true},
		{"*", "anything.example.com", true},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "*.api.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", ".example.com", false},
		{"api.example.com", "*.example.com", false},
		{"a.example.com", "b.example.com", false},
	} {
		if got := HostCovers(tc.p, tc.h); got != tc.want {
			t.Errorf("HostCovers(%q, %q) = %v, want %v", tc.p, tc.h, got, tc.want)
		}
	}
}
