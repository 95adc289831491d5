package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestAdminEndpoints(t *testing.T) {
	be := backend(t, "a")
	h, p := hostPort(t, be.URL)
	tmpl, cfg := httpBootstrap(`
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: a}}]
`, false, staticCluster("a", h, p, ""))
	admin, health, prom := freePort(t), freePort(t), freePort(t)
	startProxy(t, tmpl, cfg, func(o *Options) {
		o.AdminAddr = fmt.Sprintf("127.0.0.1:%d", admin)
		o.HealthAddr = fmt.Sprintf("127.0.0.1:%d", health)
		o.PrometheusAddr = fmt.Sprintf("127.0.0.1:%d", prom)
	})
	fetch := func(t *testing.T, port int, path string) (int, string) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name     string
		port     int
		path     string
		contains string
	}{
		{"ready", admin, "/ready", "LIVE"},
		{"health", health, "/healthz/ready", "LIVE"},
		{"clusters", admin, "/clusters", "a::" + h + ":" + p + "::health_flags::healthy"},
		{"stats", admin, "/stats", "server.live: 1"},
		{"server_info", admin, "/server_info", `"state":"LIVE"`},
		{"prometheus", prom, "/stats/prometheus", "envoy_server_live 1"},
		{"pprof", admin, "/debug/pprof/", "goroutine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := fetch(t, tc.port, tc.path)
			if code != 200 || !strings.Contains(body, tc.contains) {
				t.Fatalf("GET %s: %d %q, want 200 containing %q", tc.path, code, body, tc.contains)
			}
		})
	}
	t.Run("config_dump", func(t *testing.T) {
		code, body := fetch(t, admin, "/config_dump")
		var dump struct {
			Configs []map[string]any `json:"configs"`
		}
		if err := json.Unmarshal([]byte(body), &dump); code != 200 || err != nil {
			t.Fatalf("%d %v", code, err)
		}
		var types []string
		for _, c := range dump.Configs {
			types = append(types, fmt.Sprint(c["@type"]))
		}
		want := []string{"BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"}
		if len(types) != len(want) {
			t.Fatalf("config types %v", types)
		}
		for i, w := range want {
			if !strings.HasSuffix(types[i], "envoy.admin.v3."+w) {
				t.Errorf("configs[%d] is %s, want %s", i, types[i], w)
			}
		}
		if !strings.Contains(body, `"name": "http"`) {
			t.Error("the static listener is missing from the dump")
		}
	})
}
