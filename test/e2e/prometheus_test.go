package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A real Prometheus (Debian's package) scrapes the sidecars of a running
// mesh; its PromQL answers match the traffic the test sent: per-version
// request totals exactly, per-version rates within 10%.
func TestPrometheusScrapesMesh(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: apt-get install prometheus (./scripts/test installs it)")
	}
	cp := startControlPlane(t, cpOpts{})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	cp.mustApply(t, reviewsDestinationRule, "destinationrule.networking.istio.io/reviews created")
	cp.mustApply(t, reviewsVS(75, 25), "virtualservice.networking.istio.io/reviews created")
	stats := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		stats["reviews-"+v] = addr
		cp.startWorkload(t, "reviews-"+v, v, startApp(t, "reviews-"+v, v), "--prometheus-addr", addr)
	}
	client := cp.startClient(t)
	httpc := meshClient(client.Listen)
	t.Cleanup(httpc.CloseIdleConnections)
	waitVersions(t, httpc, "http://reviews:9080/reviews/1", 10*time.Second, "v1", "v2")

	// Prometheus, scraping both sidecars every second.
	promAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	var targets []string
	for _, a := range stats {
		targets = append(targets, strconv.Quote(a))
	}
	cfg := writeFile(t, "prometheus.yml", fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
- job_name: sidecars
  metrics_path: /stats/prometheus
  static_configs:
  - targets: [%s]
`, strings.Join(targets, ", ")))
	startProc(t, "prometheus", bin, "--config.file", cfg, "--storage.tsdb.path", filepath.Join(t.TempDir(), "tsdb"),
		"--web.listen-address", promAddr, "--log.level", "warn")
	query := func(q string) (map[string]float64, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return nil, err
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("%s: %s", q, r.Error)
		}
		out := map[string]float64{}
		for _, s := range r.Data.Result {
			v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
			out[s.Metric["destination_version"]] = v
		}
		return out, nil
	}
	// Every target up before the traffic the test counts starts.
	if err := eventually(30*time.Second, func() error {
		up, err := query(`sum(up{job="sidecars"})`)
		if err != nil {
			return err
		}
		if up[""] != 2 {
			return fmt.Errorf("targets up: %v", up)
		}
		return nil
	}); err != nil {
		t.Fatalf("prometheus never scraped both sidecars: %v", err)
	}
	before, err := query(`sum by (destination_version) (istio_requests_total{reporter="destination"})`)
	if err != nil {
		t.Fatal(err)
	}

	// Steady traffic for a while, counted per version by the replies.
	sent := map[string]float64{}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		r, err := call(httpc, "http://reviews:9080/reviews/1")
		if err != nil {
			t.Fatal(err)
		}
		sent[r.Version]++
		time.Sleep(5 * time.Millisecond)
	}
	total := sent["v1"] + sent["v2"]
	t.Logf("sent %v (total %.0f)", sent, total)

	var got map[string]float64
	if err := eventually(15*time.Second, func() error {
		got, err = query(`sum by (destination_version) (istio_requests_total{reporter="destination", destination_service="reviews.default.svc.cluster.local"})`)
		if err != nil {
			return err
		}
		for _, v := range []string{"v1", "v2"} {
			if got[v]-before[v] != sent[v] {
				return fmt.Errorf("prometheus %v (before %v), sent %v", got, before, sent)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The rate over the traffic window splits as the replies did (75/25
	// weights, so the observed split, not the weights, is the reference).
	rates, err := query(`sum by (destination_version) (rate(istio_requests_total{reporter="destination"}[8s]))`)
	if err != nil {
		t.Fatal(err)
	}
	share := rates["v1"] / (rates["v1"] + rates["v2"])
	if want := sent["v1"] / total; math.Abs(share-want) > 0.1*want {
		t.Errorf("rate share of v1 %.3f (rates %v), traffic share %.3f", share, rates, want)
	}
}
