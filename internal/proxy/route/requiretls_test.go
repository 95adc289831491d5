package route

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

func TestRequireTLS(t *testing.T) {
	vh := func(rt routev3.VirtualHost_TlsRequirementType, routes ...*routev3.Route) *routev3.VirtualHost {
		v := vhost("vh", []string{"*"}, routes...)
		v.RequireTls = rt
		return v
	}
	fwd := fwdRoute("fwd", prefixMatch("/"), toCluster("c"))
	req := func(scheme, host, path string, kv ...string) *Request {
		r := get(host, path, kv...)
		r.Scheme = scheme
		return r
	}
	cases := []struct {
		name     string
		vh       *routev3.VirtualHost
		req      *Request
		location string // "" when the request is routed normally
	}{
		{"ALL redirects plaintext, Host and path as received", vh(routev3.VirtualHost_ALL, fwd), req("http", "a.example.com:8080", "/p?q=1"), "https://a.example.com:8080/p?q=1"},
		{"ALL keeps :80 as received", vh(routev3.VirtualHost_ALL, fwd), req("http", "a.example.com:80", "/"), "https://a.example.com:80/"},
		{"ALL without routes still redirects", vh(routev3.VirtualHost_ALL), req("http", "a.example.com", "/"), "https://a.example.com/"},
		{"ALL routes TLS requests", vh(routev3.VirtualHost_ALL, fwd), req("https", "a.example.com", "/"), ""},
		{"x-forwarded-proto https is trusted", vh(routev3.VirtualHost_ALL, fwd), req("http", "a", "/", "x-forwarded-proto", "https"), ""},
		{"x-forwarded-proto http over TLS redirects", vh(routev3.VirtualHost_ALL, fwd), req("https", "a", "/", "x-forwarded-proto", "http"), "https://a/"},
		{"ALL ignores x-envoy-internal", vh(routev3.VirtualHost_ALL, fwd), req("http", "a", "/", "x-envoy-internal", "true"), "https://a/"},
		{"EXTERNAL_ONLY spares internal requests", vh(routev3.VirtualHost_EXTERNAL_ONLY, fwd), req("http", "a", "/", "x-envoy-internal", "true"), ""},
		{"EXTERNAL_ONLY redirects external ones", vh(routev3.VirtualHost_EXTERNAL_ONLY, fwd), req("http", "a", "/x"), "https://a/x"},
		{"NONE routes plaintext", vh(routev3.VirtualHost_NONE, fwd), req("http", "a", "/"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustCompile(t, config(tc.vh)).Select(tc.req, 0)
			if tc.location == "" {
				if r == nil || r.Kind() != Forward {
					t.Fatalf("got %v, want the forward route", routeName(r))
				}
				return
			}
			if r == nil || r.Kind() != Redirect {
				t.Fatalf("got %v, want a redirect", routeName(r))
			}
			if got := r.Location(tc.req); got != tc.location || r.Status() != 301 {
				t.Fatalf("Location %q status %d, want %q 301", got, r.Status(), tc.location)
			}
		})
	}
	t.Run("unknown requirement is refused", func(t *testing.T) {
		if _, err := Compile(config(vh(routev3.VirtualHost_TlsRequirementType(7), fwd))); err == nil {
			t.Fatal("Compile accepted require_tls 7")
		}
	})
}

func BenchmarkRequireTLSRedirect(b *testing.B) {
	v := vhost("vh", []string{"*"}, fwdRoute("fwd", prefixMatch("/"), toCluster("c")))
	v.RequireTls = routev3.VirtualHost_ALL
	tab := mustCompile(b, config(v))
	req := get("a.example.com", "/")
	b.ReportAllocs()
	for b.Loop() {
		if r := tab.Select(req, 0); r.Kind() != Redirect {
			b.Fatal("not redirected")
		}
	}
}
