package dashboard

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// browser starts headless Chromium with a fresh profile and returns a
// tab's context, and the JS exceptions the pages throw.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (apt-get install chromium): %v", chromiumPath, err)
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
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	var mu sync.Mutex
	var exceptions []string
	// The first call starts the browser for the tab's whole life, so it
	// gets the tab's context; the test's deadline is derived after.
	err := chromedp.Listen(tab, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			mu.Lock()
			d := ev.ExceptionDetails
			msg := fmt.Sprintf("%s:%d:%d: %s", d.URL, d.LineNumber+1, d.ColumnNumber+1, d.Text)
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			exceptions = append(exceptions, msg)
			mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				mu.Lock()
				exceptions = append(exceptions, "console.error: "+strings.Join(parts, " "))
				mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	ctx, cancelTimeout := context.WithTimeout(tab, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), exceptions...)
	}
}

// screenshot saves the page for the docs when AMIME_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("AMIME_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join("testdata", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// graphState is what the graph page shows.
type graphState struct {
	Nodes  []string           `json:"nodes"`
	Edges  map[string]float64 `json:"edges"` // id -> data-rate
	Labels []string           `json:"labels"`
	Locks  int                `json:"locks"`
}

// graphWhen polls the graph page until every edge in need is drawn with
// a rate above zero.
func graphWhen(need []string) string {
	q := make([]string, len(need))
	for i, n := range need {
		q[i] = fmt.Sprintf("%q", n)
	}
	return `(() => {
  const edges = {};
  for (const p of document.querySelectorAll('#graph path.edge')) edges[p.dataset.edge] = +p.dataset.rate;
  const need = [` + strings.Join(q, ",") + `];
  if (!need.every(id => edges[id] > 0)) return false;
  return {
    nodes: [...document.querySelectorAll('#graph [data-node]')].map(n => n.dataset.node),
    edges,
    labels: [...document.querySelectorAll('#graph .edge-label')].map(g => g.dataset.edge + ': ' + [...g.querySelectorAll('text')].map(t => t.textContent).join(' / ')),
    locks: document.querySelectorAll('#graph .edge-label .lock').length,
  };
})()`
}

func TestBrowser(t *testing.T) {
	m := newFakeMesh(t)
	_, base := startConsole(t, m.sources(), Options{ScrapeInterval: 200 * time.Millisecond, Window: 2 * time.Minute})
	ctx, exceptions := browser(t)
	pollOpts := []chromedp.PollOption{chromedp.WithPollingTimeout(45 * time.Second), chromedp.WithPollingInterval(100 * time.Millisecond)}
	pollGraph := func(need []string) (graphState, error) {
		return chromedp.Run(ctx, chromedp.Poll[graphState](graphWhen(need), pollOpts...))
	}

	t.Run("graph", func(t *testing.T) {
		need := make([]string, 0, len(seedEdges))
		for id := range seedEdges {
			need = append(need, id)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		st, err := pollGraph(need)
		if err != nil {
			t.Fatalf("graph page: %v", err)
		}
		for _, n := range []string{"unknown", "g:default/istio-ingressgateway", "s:" + hostCustomer, "s:" + hostPref, "s:" + hostRec,
			"v:default/customer/v1", "v:default/preference/v1", "v:default/recommendation/v1", "v:default/recommendation/v2"} {
			if !contains(st.Nodes, n) {
				t.Errorf("no node %s in %v", n, st.Nodes)
			}
		}
		// Four edges are read from destination sidecars over mTLS.
		if st.Locks != 4 {
			t.Errorf("%d locks, want 4; labels %v", st.Locks, st.Labels)
		}
		// Labels: rate, the split's share, p99.
		share := regexp.MustCompile(`^v:default/preference/v1 -> v:default/recommendation/v(1|2): [\d.]+ rps · ([\d.]+)% / p99 [\d.]+ ms`)
		shares := map[string]float64{}
		for _, l := range st.Labels {
			if m := share.FindStringSubmatch(l); m != nil {
				shares[m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
		}
		if shares["1"] < 80 || shares["1"] > 95 || shares["2"] < 5 || shares["2"] > 20 {
			t.Errorf("the 90/10 split reads %v%%/%v%%; labels:\n%s", shares["1"], shares["2"], strings.Join(st.Labels, "\n"))
		}

		// New traffic appears without a reload: callers from outside the
		// mesh straight to customer.
		m.proxies[1].setRate(2, 2)
		if _, err := pollGraph([]string{"unknown -> v:default/customer/v1"}); err != nil {
			t.Fatalf("graph did not pick up new traffic: %v", err)
		}
		if os.Getenv("AMIME_SCREENSHOTS") == "1" {
			// For the docs: wait for v2's first 503s (0.1 req/s) to show.
			_, err := chromedp.Run(ctx, chromedp.Poll[bool](`+(document.querySelector('path.edge[data-edge="v:default/preference/v1 -> v:default/recommendation/v2"]') || {dataset: {}}).dataset.errorPercent > 0`, pollOpts...))
			if err != nil {
				t.Fatalf("no errors on v2: %v", err)
			}
			screenshot(t, ctx, "graph")
		}
	})

	t.Run("service", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/services/"+url.PathEscape(hostRec))); err != nil {
			t.Fatal(err)
		}
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => {
  const lines = [...document.querySelectorAll('svg.chart path.line')];
  const drawn = lines.filter(p => +p.dataset.points >= 2 && /^M[\d.]+ [\d.]+( L[\d.]+ [\d.]+)+/.test(p.getAttribute('d')));
  return lines.length === 5 && drawn.length === 5 && document.querySelectorAll('#inbound tbody tr[data-edge]').length === 2;
})()`, pollOpts...))
		if err != nil {
			t.Fatalf("service page: %v", err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".config")))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "weight: 90") || !strings.Contains(text, "<script>alert(1)</script>") || !strings.Contains(text, "subset v3 <img src=x>") {
			t.Errorf("config section shows:\n%s", text)
		}
		screenshot(t, ctx, "service")
	})

	t.Run("traces", func(t *testing.T) {
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/traces?service=customer"),
			chromedp.WaitVisible(chromedp.CSS(`#trace-list a`)),
		)
		if err != nil {
			t.Fatalf("traces page: %v", err)
		}
		screenshot(t, ctx, "traces")
		err = chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`#trace-list a`)),
			chromedp.WaitVisible(chromedp.CSS(`#waterfall .wf-row`)),
		)
		if err != nil {
			t.Fatalf("trace page: %v", err)
		}
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#waterfall .wf-row').length`))
		if err != nil {
			t.Fatal(err)
		}
		errs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#waterfall .wf-row.error').length`))
		if err != nil {
			t.Fatal(err)
		}
		if rows != 4 || errs != 1 {
			t.Errorf("waterfall: %d rows (%d red), want 4 (1)", rows, errs)
		}
		screenshot(t, ctx, "trace")
	})

	t.Run("proxies", func(t *testing.T) {
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/proxies"),
			chromedp.WaitVisible(chromedp.CSS(`td.sync.nack`)),
		)
		if err != nil {
			t.Fatalf("proxies page: %v", err)
		}
		nack, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`td.sync.nack`)))
		if err != nil {
			t.Fatalf("proxies page: %v", err)
		}
		if want := `NACK: listener virtualInbound: unknown field "foo"`; !strings.HasPrefix(nack, want) {
			t.Errorf("NACK cell %q, want %q…", nack, want)
		}
		screenshot(t, ctx, "proxies")
	})

	if ex := exceptions(); len(ex) > 0 {
		t.Errorf("the pages threw:\n%s", strings.Join(ex, "\n"))
	}
}
