package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// seen is what the echo backend reports about a request it received.
type seen struct {
	Method string
	Path   string
	Host   string
	Proto  string
	Body   string
}

// echoBackend is a plain HTTP/1.1 server that answers with what it saw.
func echoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", "echo")
		_ = json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.RequestURI, Host: r.Host, Proto: r.Proto, Body: string(body)})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStaticBootstrapServes(t *testing.T) {
	backend := echoBackend(t)
	backendAddr := strings.TrimPrefix(backend.URL, "http://")
	p := startProxy(t, newBootstrap(backendAddr), proxyOpts{})

	t.Run("requests", func(t *testing.T) {
		cases := []struct {
			name, method, path, body string
		}{
			{"get", "GET", "/hello", ""},
			{"query", "GET", "/search?q=a%20b&n=1", ""},
			{"post body", "POST", "/upload", strings.Repeat("amime-", 2000)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, "http://"+p.Listen+tc.path, strings.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Host = "example.test"
				resp, err := plainClient.Do(req)
				if err != nil {
					t.Fatalf("%s %s through the proxy: %v", tc.method, tc.path, err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "echo" {
					t.Fatalf("status %d, X-Backend %q: want 200 from the backend", resp.StatusCode, resp.Header.Get("X-Backend"))
				}
				var got seen
				if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
					t.Fatalf("backend answer: %v", err)
				}
				want := seen{Method: tc.method, Path: tc.path, Host: "example.test", Proto: "HTTP/1.1", Body: tc.body}
				if got != want {
					t.Errorf("backend saw %+v\nwant %+v", got, want)
				}
			})
		}
	})

	t.Run("admin", func(t *testing.T) {
		cases := []struct {
			name, addr, path string
			check            func(body string) error
		}{
			{"ready", p.Admin, "/ready", func(b string) error {
				if strings.TrimSpace(b) != "LIVE" {
					return fmt.Errorf("body %q, want LIVE", b)
				}
				return nil
			}},
			{"config_dump", p.Admin, "/config_dump", checkConfigDump},
			{"clusters", p.Admin, "/clusters", func(b string) error {
				// Envoy's text format: cluster::host::stat::value.
				want := "backend::" + backendAddr + "::health_flags::healthy"
				if !slices.Contains(strings.Split(b, "\n"), want) {
					return fmt.Errorf("no line %q in:\n%s", want, b)
				}
				return nil
			}},
			{"server_info", p.Admin, "/server_info", func(b string) error {
				var si struct{ State string }
				if err := json.Unmarshal([]byte(b), &si); err != nil || si.State != "LIVE" {
					return fmt.Errorf("state %q (err %v), want LIVE", si.State, err)
				}
				return nil
			}},
			{"healthz", p.Health, "/healthz/ready", func(string) error { return nil }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				code, body, err := get(tc.addr, tc.path)
				if err != nil {
					t.Fatal(err)
				}
				if code != http.StatusOK {
					t.Fatalf("GET %s: %d %q, want 200", tc.path, code, body)
				}
				if err := tc.check(body); err != nil {
					t.Errorf("GET %s: %v", tc.path, err)
				}
			})
		}
	})
}

// checkConfigDump checks the parts of Envoy's ConfigDump JSON that tools
// (istioctl proxy-config, jq scripts written against Envoy) rely on: the
// typed configs, and the proto field names Envoy prints.
func checkConfigDump(body string) error {
	var dump struct {
		Configs []map[string]json.RawMessage `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	byType := map[string]map[string]json.RawMessage{}
	for _, c := range dump.Configs {
		var typ string
		_ = json.Unmarshal(c["@type"], &typ)
		byType[strings.TrimPrefix(typ, "type.googleapis.com/")] = c
	}
	for _, typ := range []string{"envoy.admin.v3.BootstrapConfigDump", "envoy.admin.v3.ClustersConfigDump",
		"envoy.admin.v3.ListenersConfigDump", "envoy.admin.v3.RoutesConfigDump"} {
		if byType[typ] == nil {
			return fmt.Errorf("configs[] has no %q entry (have %v)", typ, slices.Sorted(maps.Keys(byType)))
		}
	}
	// Envoy prints proto field names (static_clusters, not staticClusters).
	checks := []struct{ typ, list, item string }{
		{"envoy.admin.v3.ClustersConfigDump", "static_clusters", "cluster"},
		{"envoy.admin.v3.ListenersConfigDump", "static_listeners", "listener"},
	}
	for _, c := range checks {
		raw, ok := byType[c.typ][c.list]
		if !ok {
			return fmt.Errorf("%s has no %q field (Envoy's proto field name); keys: %v", c.typ, c.list, slices.Sorted(maps.Keys(byType[c.typ])))
		}
		var items []map[string]struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(raw, &items); err != nil || len(items) != 1 {
			return fmt.Errorf("%s.%s: %d entries (err %v), want 1", c.typ, c.list, len(items), err)
		}
		if _, ok := items[0][c.item]; !ok {
			return fmt.Errorf("%s.%s[0] has no %q", c.typ, c.list, c.item)
		}
	}
	return nil
}

func TestBootstrapRejected(t *testing.T) {
	const hcmPath = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	cases := []struct {
		name   string
		mutate func(b bootstrap)
		// wantPath must appear in stderr; "" means the bootstrap is valid
		// (a control, so the other rows fail for their one change only).
		wantPath string
	}{
		{"control: base bootstrap is valid", func(bootstrap) {}, ""},
		{"cluster health_checks", func(b bootstrap) {
			b.cluster()["health_checks"] = []any{obj{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
				"http_health_check": obj{"path": "/healthz"}}}
		}, "static_resources.clusters[0].health_checks"},
		{"listener_filters original_dst", func(b bootstrap) {
			b.listener()["listener_filters"] = []any{obj{
				"name":         "envoy.filters.listener.original_dst",
				"typed_config": obj{"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"},
			}}
		}, "static_resources.listeners[0].listener_filters[0].typed_config"},
		{"http filter cors", func(b bootstrap) {
			h := b.hcm()
			h["http_filters"] = append([]any{obj{
				"name":         "envoy.filters.http.cors",
				"typed_config": obj{"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
			}}, h["http_filters"].([]any)...)
		}, hcmPath + ".http_filters[0]"},
		{"unknown JSON field", func(b bootstrap) {
			b.cluster()["conect_timeout"] = "1s" // a typo Envoy refuses
		}, "static_resources.clusters[0].conect_timeout"},
		{"route rate_limits", func(b bootstrap) {
			b.route()["rate_limits"] = []any{obj{"actions": []any{obj{"remote_address": obj{}}}}}
		}, hcmPath + ".route_config.virtual_hosts[0].routes[0].route.rate_limits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBootstrap("127.0.0.1:9") // never dialled: nothing is sent
			b.setListenerPort(freePort(t))
			tc.mutate(b)
			admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := startProc(t, "amime", amimeBin, "proxy", "--bootstrap", writeBootstrap(t, b), "--admin-addr", admin)
			if tc.wantPath == "" {
				if err := eventually(10*time.Second, func() error {
					if p.exited() {
						return nil
					}
					_, body, err := get(admin, "/ready")
					if err == nil && strings.TrimSpace(body) != "LIVE" {
						err = fmt.Errorf("/ready: %q", body)
					}
					return err
				}); err != nil || p.exited() {
					t.Fatalf("the base bootstrap must start: exited=%v, %v", p.exited(), err)
				}
				return
			}
			// Validation happens before anything binds: a refused
			// bootstrap must not leave a half-started proxy running.
			code, exited := p.waitExit(5 * time.Second)
			if !exited {
				t.Fatalf("amime still running 5s after a bootstrap with %s; want a quick non-zero exit", tc.wantPath)
			}
			if code == 0 {
				t.Errorf("exit code 0, want non-zero")
			}
			if !strings.Contains(p.stderr.String(), tc.wantPath) {
				t.Errorf("stderr does not name the field path %q (output logged below)", tc.wantPath)
			}
		})
	}
}

func TestQuitQuitQuit(t *testing.T) {
	backend := echoBackend(t)
	p := startProxy(t, newBootstrap(strings.TrimPrefix(backend.URL, "http://")), proxyOpts{drain: 3 * time.Second})

	// Only POST quits (Envoy refuses GET on mutating endpoints).
	if code, _, err := get(p.Admin, "/quitquitquit"); err != nil || code == http.StatusOK {
		t.Errorf("GET /quitquitquit: %d, %v; want a refusal", code, err)
	}
	if p.exited() {
		t.Fatal("GET /quitquitquit stopped the proxy")
	}

	resp, err := plainClient.Post("http://"+p.Admin+"/quitquitquit", "text/plain", nil)
	if err != nil {
		t.Fatalf("POST /quitquitquit: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /quitquitquit: %d, want 200", resp.StatusCode)
	}
	// Nothing is in flight, so it exits well within the drain duration.
	code, exited := p.waitExit(3*time.Second + 2*time.Second)
	if !exited {
		t.Fatal("amime still running 5s after POST /quitquitquit")
	}
	if code != 0 {
		t.Errorf("exit code %d after /quitquitquit, want 0", code)
	}
}
