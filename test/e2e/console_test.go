package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// headless starts Chromium (Debian's package) with a fresh profile and
// returns a tab bounded by d.
func headless(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the console test needs Chromium at %s (apt-get install chromium; ./scripts/test installs it): %v", chromiumPath, err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	tab, cancelTab := chromedp.NewContext(actx)
	if err := chromedp.Do(tab); err != nil { // starts the browser for the tab's life
		cancelTab()
		cancelAlloc()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(tab, d)
	t.Cleanup(func() {
		cancel()
		cancelTab()
		cancelAlloc()
	})
	return ctx
}

// The console of a running `amime up`, in a real browser: while traffic
// flows through the gateway, the graph shows the tutorial's services,
// their versions and the edges between them with non-zero rates and mTLS
// locks; the trace list shows the gateway's requests and a trace opens as
// a six-row waterfall; every proxy is SYNCED.
func TestUpConsole(t *testing.T) {
	requireGatewayPortFree(t)
	m := startUp(t, t.TempDir(), freeAddr(t), freeAddr(t), freeAddr(t))
	defer m.stop(t)
	base := "http://" + m.console

	// Traffic for the whole test, about 20 requests a second.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				_, _, _ = m.get("", "/", "")
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	ctx := headless(t, 2*time.Minute)
	poll := []chromedp.PollOption{chromedp.WithPollingTimeout(60 * time.Second), chromedp.WithPollingInterval(250 * time.Millisecond)}
	edges := []string{
		"unknown -> g:istio-system/istio-ingressgateway",
		"g:istio-system/istio-ingressgateway -> v:default/customer/v1",
		"v:default/customer/v1 -> v:default/preference/v1",
		"v:default/preference/v1 -> v:default/recommendation/v1",
		"v:default/preference/v1 -> v:default/recommendation/v2",
	}
	type graph struct {
		Nodes []string           `json:"nodes"`
		Rates map[string]float64 `json:"rates"`
		Locks int                `json:"locks"`
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	g, err := chromedp.Run(ctx, chromedp.Poll[graph](`(() => {
  const rates = {};
  for (const p of document.querySelectorAll('#graph path.edge')) rates[p.dataset.edge] = +p.dataset.rate;
  const need = `+jsList(edges)+`;
  if (!need.every(id => rates[id] > 0)) return false;
  return {nodes: [...document.querySelectorAll('#graph [data-node]')].map(n => n.dataset.node), rates,
          locks: document.querySelectorAll('#graph .edge-label .lock').length};
})()`, poll...))
	if err != nil {
		t.Fatalf("the graph never showed every edge with traffic: %v", err)
	}
	for _, n := range []string{"unknown", "g:istio-system/istio-ingressgateway", "v:default/customer/v1", "v:default/preference/v1",
		"v:default/recommendation/v1", "v:default/recommendation/v2"} {
		if !strings.Contains(strings.Join(g.Nodes, " "), n) {
			t.Errorf("no node %s in %v", n, g.Nodes)
		}
	}
	shot(t, ctx, "graph")
	// Sidecar to sidecar hops are mutual TLS under `amime up`.
	if g.Locks < 3 {
		t.Errorf("%d mTLS locks, want the three sidecar-to-sidecar edges at least; rates %v", g.Locks, g.Rates)
	}

	// Traces: the list has the gateway's requests; one opens as a
	// waterfall of the six spans of a request.
	// The newest traces may still miss spans (proxies export in batches):
	// the collector names one that is complete, the list links to it.
	var id string
	if err := eventually(30*time.Second, func() error {
		code, body, err := upHTTP("GET", "http://"+m.api+"/api/traces?service=recommendation.default&limit=50")
		if err != nil || code != 200 {
			return fmt.Errorf("search: %d %v", code, err)
		}
		var sums []struct {
			ID    string `json:"id"`
			Spans int    `json:"spans"`
		}
		if err := json.Unmarshal([]byte(body), &sums); err != nil {
			return err
		}
		for _, s := range sums[min(len(sums), 3):] { // not the newest: the list must still show it
			if s.Spans == 6 {
				id = s.ID
				return nil
			}
		}
		return fmt.Errorf("no complete trace among %d", len(sums))
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/traces?service=recommendation.default&limit=50"),
		chromedp.WaitVisible(chromedp.CSS(`#trace-list a[href*="`+id+`"]`)),
		chromedp.Click(chromedp.CSS(`#trace-list a[href*="`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#waterfall .wf-row`)),
	); err != nil {
		t.Fatalf("traces: %v", err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#waterfall .wf-row').length`))
	if err != nil {
		t.Fatal(err)
	}
	if rows != 6 {
		t.Errorf("waterfall has %d rows, want 6", rows)
	}
	shot(t, ctx, "trace")

	// Proxies: the gateway and four sidecars, every type SYNCED.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/proxies")); err != nil {
		t.Fatal(err)
	}
	synced, err := chromedp.Run(ctx,
		chromedp.Poll[bool](`document.querySelectorAll('td.sync').length > 0 &&
  [...document.querySelectorAll('tbody tr')].length >= 5 &&
  [...document.querySelectorAll('td.sync')].every(td => td.textContent.trim() === 'SYNCED' || td.textContent.trim() === '')`, poll...),
	)
	if err != nil || !synced {
		text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("proxies page: %v\n%s", err, text)
	}
	shot(t, ctx, "proxies")
	if os.Getenv("AMIME_SCREENSHOTS") == "1" {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/services/recommendation.default.svc.cluster.local"),
			chromedp.WaitVisible(chromedp.CSS("svg.chart path.line"))); err != nil {
			t.Fatal(err)
		}
		shot(t, ctx, "service")
	}
}

// shot saves the page as docs/images/console-NAME.png when
// AMIME_SCREENSHOTS=1 (for the docs; off in CI).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("AMIME_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "images", "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// jsList renders strings as a JavaScript array literal.
func jsList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
	}
	return "[" + strings.Join(q, ",") + "]"
}
