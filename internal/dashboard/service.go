package dashboard

import (
	"sort"
	"time"
)

// Point is one scrape interval of a service's inbound traffic.
type Point struct {
	Time         time.Time `json:"t"`
	Rate         float64   `json:"rate"`                   // requests per second
	ErrorPercent *float64  `json:"errorPercent,omitempty"` // absent with no requests
	P50          *float64  `json:"p50,omitempty"`          // ms
	P90          *float64  `json:"p90,omitempty"`
	P99          *float64  `json:"p99,omitempty"`
}

// ServiceView is a service page's data.
type ServiceView struct {
	Host          string         `json:"host"`
	WindowSeconds float64        `json:"windowSeconds"`
	Series        []Point        `json:"series"`
	Inbound       []GraphEdge    `json:"inbound"`
	Outbound      []GraphEdge    `json:"outbound"`
	Config        []ConfigObject `json:"config"`
	Warnings      []string       `json:"warnings"`
}

// rounds returns the rounds ending within d of the newest.
func (d *Dashboard) window(dur time.Duration) []round {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.rounds) == 0 {
		return nil
	}
	from := d.rounds[len(d.rounds)-1].end.Add(-dur)
	i := sort.Search(len(d.rounds), func(i int) bool { return d.rounds[i].end.After(from) })
	return append([]round(nil), d.rounds[i:]...)
}

// Graph computes the graph of the traffic over the last dur (clamped to
// the scrape interval and the history window).
func (d *Dashboard) Graph(dur time.Duration) Graph {
	dur = d.clampWindow(dur)
	return buildGraph(d.proxies(), sumRounds(d.window(dur)), d.now())
}

func (d *Dashboard) clampWindow(dur time.Duration) time.Duration {
	return min(max(dur, d.opts.ScrapeInterval), d.opts.Window)
}

// Service computes a service's page over the history window: its inbound
// traffic per scrape interval, and its edges over the last edgeWindow.
func (d *Dashboard) Service(host string, edgeWindow time.Duration) ServiceView {
	v := ServiceView{Host: host, Series: []Point{}, Inbound: []GraphEdge{}, Outbound: []GraphEdge{}, Config: []ConfigObject{}, Warnings: []string{}}
	rs := d.window(d.opts.Window)
	all := sumRounds(rs)
	v.WindowSeconds = all.span.Seconds()
	proxies := d.proxies()
	r := newResolver(proxies, all)
	sel := newSelection(r, all)
	id := "s:" + host
	memo := map[labels]bool{}
	into := func(l labels) bool {
		in, ok := memo[l]
		if !ok {
			_, dst, picked := sel.pick(l)
			in = picked && (dst.ID == id || dst.Parent == id)
			memo[l] = in
		}
		return in
	}
	for _, rd := range rs {
		p := Point{Time: rd.end}
		var total, errs float64
		var hist []bucket
		for l, n := range rd.reqs {
			if n <= 0 || !into(l) {
				continue
			}
			total += n
			if l.isError() {
				errs += n
			}
			if h := rd.hists[l]; h != nil {
				hist = mergeBuckets(hist, h)
			}
		}
		if secs := rd.end.Sub(rd.start).Seconds(); secs > 0 {
			p.Rate = total / secs
		}
		if total > 0 {
			e := 100 * errs / total
			p.ErrorPercent = &e
		}
		p.P50, p.P90, p.P99 = quantilePtr(0.5, hist), quantilePtr(0.9, hist), quantilePtr(0.99, hist)
		v.Series = append(v.Series, p)
	}
	g := buildGraph(proxies, sumRounds(d.window(d.clampWindow(edgeWindow))), d.now())
	nodes := map[string]GraphNode{}
	for _, n := range g.Nodes {
		nodes[n.ID] = n
	}
	in := func(nid string) bool { return nid == id || nodes[nid].Parent == id }
	for _, e := range g.Edges {
		if in(e.Target) {
			v.Inbound = append(v.Inbound, e)
		}
		if in(e.Source) {
			v.Outbound = append(v.Outbound, e)
		}
	}
	if d.src.ServiceConfig != nil {
		objs, warns := d.src.ServiceConfig(host)
		if objs != nil {
			v.Config = objs
		}
		if warns != nil {
			v.Warnings = warns
		}
	}
	return v
}
