package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/proxy/telemetry"
)

const reviewsCluster = "outbound|9080|v1|reviews.default.svc.cluster.local"

// telemetryProxy starts a backend and a sidecar for productpage-v1 whose one
// route goes to reviewsCluster.
func telemetryProxy(t *testing.T, mod func(*Options)) *running {
	be := backend(t, "reviews")
	h, p := hostPort(t, be.URL)
	tmpl, cfg := httpBootstrap(`
            - name: all
              domains: ["*"]
              routes: [{name: to-reviews, match: {prefix: "/"}, route: {cluster: "`+reviewsCluster+`"}}]
`, false, staticCluster(`"`+reviewsCluster+`"`, h, p, ""))
	tmpl = `node:
  id: sidecar~10.0.0.7~productpage-v1-abc.default~default.svc.cluster.local
  metadata: {NAMESPACE: default, LABELS: {app: productpage, version: v1}}
` + tmpl
	return startProxy(t, tmpl, cfg, mod)
}

// TestAdminPrometheusIstioMetrics checks istio_* metrics on
// /stats/prometheus after real requests through the proxy.
func TestAdminPrometheusIstioMetrics(t *testing.T) {
	prom := freePort(t)
	r := telemetryProxy(t, func(o *Options) { o.PrometheusAddr = fmt.Sprintf("127.0.0.1:%d", prom) })
	const ok, failed = 7, 2
	for i := 0; i < ok+failed; i++ {
		path := "/reviews/1"
		if i >= ok {
			path += "?status=503"
		}
		resp, err := http.Get(r.url(t, "http") + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", prom))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples := parseExposition(t, resp.Body)

	want := map[string]string{
		"reporter": "source", "source_workload": "productpage-v1-abc", "source_workload_namespace": "default",
		"source_principal": "unknown", "source_app": "productpage", "source_version": "v1",
		"source_canonical_service": "productpage", "source_canonical_revision": "v1",
		"destination_workload": "unknown", "destination_workload_namespace": "unknown", "destination_principal": "unknown",
		"destination_app": "unknown", "destination_version": "unknown",
		"destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
		"destination_service_namespace": "default", "destination_canonical_service": "unknown",
		"destination_canonical_revision": "unknown", "request_protocol": "http", "response_code": "200",
		"grpc_response_status": "", "response_flags": "-", "connection_security_policy": "unknown",
	}
	check := func(name string, labels map[string]string, wantValue float64) {
		t.Helper()
		for _, s := range samples {
			if s.name == name && labelsEqual(s.labels, labels) {
				if s.value != wantValue {
					t.Errorf("%s%v = %v, want %v", name, labels, s.value, wantValue)
				}
				return
			}
		}
		t.Errorf("no sample %s with labels %v", name, labels)
	}
	check("istio_requests_total", want, ok)
	for _, h := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
		check(h+"_count", want, ok)
	}
	check("istio_request_duration_milliseconds_bucket", with(want, "le", "+Inf"), ok)
	check("istio_response_bytes_bucket", with(want, "le", "0.5"), 0)
	check("istio_requests_total", with(want, "response_code", "503"), failed)
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for kk, vv := range m {
		if kk != k {
			out[kk] = vv
		}
	}
	return out
}

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelPair = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// parseExposition reads Prometheus text format, enough for these tests.
func parseExposition(t *testing.T, r io.Reader) []sample {
	t.Helper()
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			s.name = line[:i]
			for _, m := range labelPair.FindAllStringSubmatch(line[i+1:j], -1) {
				s.labels[m[1]] = m[2]
			}
			rest = line[j+1:]
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

func labelsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestAdminAccessLog checks the JSON access log a real proxy writes; the
// last lines are written when it stops.
func TestAdminAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	r := telemetryProxy(t, func(o *Options) {
		o.AccessLog = path
		o.AccessLogFormat = telemetry.JSON
	})
	const n = 3
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", r.url(t, "http")+"/reviews/"+strconv.Itoa(i), nil)
		req.Host = "reviews:9080"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	r.cancel()
	err := <-r.done
	r.done <- err // for the cleanup
	data, rerr := os.ReadFile(path)
	if rerr != nil {
		t.Fatal(rerr)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), n, data)
	}
	for i, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, line)
		}
		for k, want := range map[string]any{
			"method": "GET", "path": "/reviews/" + strconv.Itoa(i), "protocol": "HTTP/1.1", "response_code": 200.0,
			"response_flags": "-", "response_code_details": "via_upstream", "authority": "reviews:9080",
			"upstream_cluster": reviewsCluster, "route_name": "to-reviews", "bytes_received": 0.0,
		} {
			if e[k] != want {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, e[k], want)
			}
		}
		for _, k := range []string{"start_time", "request_id", "upstream_host", "downstream_remote_address"} {
			if s, _ := e[k].(string); s == "" {
				t.Errorf("line %d: %s is empty: %s", i, k, line)
			}
		}
		if d, _ := e["bytes_sent"].(float64); d <= 0 {
			t.Errorf("line %d: bytes_sent %v", i, e["bytes_sent"])
		}
	}
}

// BenchmarkHTTP1ProxyAccessLog is BenchmarkHTTP1Proxy with a JSON access
// log (to /dev/null): what logging adds per request.
func BenchmarkHTTP1ProxyAccessLog(b *testing.B) {
	benchHTTP1Proxy(b, func(o *Options) { o.AccessLog = os.DevNull })
}
