package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// promTarget is the one target of Prometheus mode.
const promTarget = "\x00prometheus"

// maxScrapeBytes bounds what one scrape may read.
const maxScrapeBytes = 32 << 20

// scrapeTimeout bounds each target's scrape: it must finish well within
// the interval so that rounds do not pile up.
func (d *Dashboard) scrapeTimeout() time.Duration {
	t := d.opts.ScrapeInterval * 4 / 5
	return min(max(t, 50*time.Millisecond), 10*time.Second)
}

// scrapeOnce reads every target and appends a round of increments.
func (d *Dashboard) scrapeOnce(ctx context.Context) {
	at := d.now()
	results := map[string]sample{}
	if d.opts.PrometheusURL != "" {
		s, err := d.queryPrometheus(ctx)
		if err != nil {
			d.log.Warn("dashboard: querying Prometheus", "url", d.opts.PrometheusURL, "err", err)
		} else {
			results[promTarget] = s
		}
		d.record(at, results, map[string]bool{promTarget: true})
		return
	}
	live := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range d.proxies() {
		if p.StatsURL == "" {
			continue
		}
		live[p.ID] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := d.scrape(ctx, p.StatsURL)
			if err != nil {
				d.log.Debug("dashboard: scrape failed", "proxy", p.ID, "url", p.StatsURL, "err", err)
				return
			}
			mu.Lock()
			results[p.ID] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	d.record(at, results, live)
}

// record turns the targets' new samples into a round. A target that failed
// this time keeps its last sample, so its next success carries the traffic
// in between; a target no longer listed is forgotten, so that if it comes
// back its first sample is only a baseline.
func (d *Dashboard) record(at time.Time, results map[string]sample, live map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range d.targets {
		if !live[id] {
			delete(d.targets, id)
		}
	}
	r := round{start: d.last, end: at, reqs: map[labels]float64{}, hists: map[labels][]bucket{}}
	for id, s := range results {
		t := d.targets[id]
		if t == nil {
			d.targets[id] = &target{last: s, at: at}
			continue
		}
		if !t.at.Before(d.last) {
			increments(t.last, s, r.reqs, r.hists)
		} else {
			// The target missed rounds: share its traffic out over the
			// time since its last sample, as a rate over it would.
			reqs, hists := map[labels]float64{}, map[labels][]bucket{}
			increments(t.last, s, reqs, hists)
			d.spread(t.at, at, reqs, hists, &r)
		}
		t.last, t.at = s, at
	}
	if d.last.IsZero() {
		// The first round is every target's baseline.
		d.last = at
		return
	}
	d.last = at
	d.rounds = append(d.rounds, r)
	if over := len(d.rounds) - d.maxRounds(); over > 0 {
		copy(d.rounds, d.rounds[over:])
		clear(d.rounds[len(d.rounds)-over:])
		d.rounds = d.rounds[:len(d.rounds)-over]
	}
}

// spread adds increments observed over (from, to] to the rounds
// overlapping that time, each its share of it; cur is the round (ending at
// to) being built.
func (d *Dashboard) spread(from, to time.Time, reqs map[labels]float64, hists map[labels][]bucket, cur *round) {
	total := to.Sub(from).Seconds()
	rs := make([]*round, 0, 4)
	for i := len(d.rounds) - 1; i >= 0 && d.rounds[i].end.After(from); i-- {
		// Readers hold the recorded rounds' maps without the lock: they
		// get new ones, never changed ones.
		d.rounds[i] = d.rounds[i].clone()
		rs = append(rs, &d.rounds[i])
	}
	rs = append(rs, cur)
	for _, r := range rs {
		start := r.start
		if start.Before(from) || start.IsZero() {
			start = from
		}
		f := r.end.Sub(start).Seconds() / total
		if f <= 0 || total <= 0 {
			continue
		}
		for l, v := range reqs {
			r.reqs[l] += v * f
		}
		for l, bs := range hists {
			part := make([]bucket, len(bs))
			for i, b := range bs {
				part[i] = bucket{le: b.le, n: b.n * f}
			}
			r.hists[l] = mergeBuckets(r.hists[l], part)
		}
	}
}

func (d *Dashboard) scrape(ctx context.Context, u string) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, d.scrapeTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return sample{}, fmt.Errorf("scrape %s: %w", u, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := d.client.Do(req)
	if err != nil {
		return sample{}, fmt.Errorf("scrape %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sample{}, fmt.Errorf("scrape %s: %s", u, resp.Status)
	}
	s, err := parseText(io.LimitReader(resp.Body, maxScrapeBytes))
	if err != nil {
		return sample{}, fmt.Errorf("scrape %s: %w", u, err)
	}
	return s, nil
}

// promVector is the part of a Prometheus instant query answer we read.
type promVector struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// queryPrometheus reads the raw series of both metrics, so that the same
// increment arithmetic serves both modes; Prometheus' own labels (instance,
// job, pod) keep series of different proxies apart.
func (d *Dashboard) queryPrometheus(ctx context.Context) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, d.scrapeTimeout())
	defer cancel()
	s := newSample()
	reqs, err := d.promQuery(ctx, requestsTotal)
	if err != nil {
		return s, err
	}
	for _, r := range reqs {
		s.reqs[keyOfMap(r.metric, "")] += r.value
	}
	bs, err := d.promQuery(ctx, requestDuration+"_bucket")
	if err != nil {
		return s, err
	}
	acc := map[seriesKey][]bucket{}
	for _, r := range bs {
		le, err := strconv.ParseFloat(r.metric["le"], 64)
		if err != nil {
			continue
		}
		k := keyOfMap(r.metric, "le")
		acc[k] = append(acc[k], bucket{le: le, n: r.value})
	}
	for k, b := range acc {
		s.hists[k] = normalizeHist(math.NaN(), b)
	}
	return s, nil
}

type promSample struct {
	metric map[string]string
	value  float64
}

func (d *Dashboard) promQuery(ctx context.Context, query string) ([]promSample, error) {
	u := strings.TrimRight(d.opts.PrometheusURL, "/") + "/api/v1/query?query=" + url.QueryEscape(query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %q: %w", query, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %q: %w", query, err)
	}
	defer resp.Body.Close()
	var v promVector
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxScrapeBytes)).Decode(&v); err != nil {
		return nil, fmt.Errorf("prometheus query %q: %s: %w", query, resp.Status, err)
	}
	if v.Status != "success" {
		return nil, fmt.Errorf("prometheus query %q: %s: %s", query, resp.Status, v.Error)
	}
	if v.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus query %q: result type %q, want vector", query, v.Data.ResultType)
	}
	out := make([]promSample, 0, len(v.Data.Result))
	for _, r := range v.Data.Result {
		str, ok := r.Value[1].(string)
		if !ok {
			return nil, errors.New("prometheus query: sample value is not a string")
		}
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("prometheus query %q: value %q: %w", query, str, err)
		}
		out = append(out, promSample{metric: r.Metric, value: f})
	}
	return out, nil
}

func keyOfMap(m map[string]string, skip string) seriesKey {
	var k seriesKey
	var extra []string
	for name, v := range m {
		if name == skip || name == "__name__" {
			continue
		}
		if !k.l.set(name, v) {
			extra = append(extra, name+"="+v)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		k.extra = strings.Join(extra, ",")
	}
	return k
}
