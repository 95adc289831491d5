package celattr

import (
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"response.code >=", "Syntax error"},
		{"response.code + 1", "want bool"},
		{"response.code == 200 || request.headers['x'] == 'y'", ""},
		{"'a'", "want bool"},
		{"requestz.path == '/'", "undeclared reference"},
	} {
		_, err := Compile(tc.expr)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.expr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want error containing %q", tc.expr, err, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	attrs := map[string]map[string]any{
		"request":  {"path": "/api/v1", "method": "GET", "headers": map[string]string{"x-debug": "1"}},
		"response": {"code": int64(503), "flags": "UO"},
	}
	resolve := func(root string) (map[string]any, bool) {
		m, ok := attrs[root]
		return m, ok
	}
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{"response.code >= 400", true},
		{"response.code >= 400 && request.method == 'POST'", false},
		{"request.path.startsWith('/api')", true},
		{"request.headers['x-debug'] == '1'", true},
		{"upstream.address == '1.2.3.4'", false}, // missing group
		{"has(request.query) || response.code == 503", true},
		{"response.grpc_status == 14", false}, // missing attribute
	} {
		x, err := Compile(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := x.Match(resolve); got != tc.want {
			t.Errorf("%q: got %v, want %v", tc.expr, got, tc.want)
		}
	}
}
