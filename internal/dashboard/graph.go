package dashboard

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Node kinds.
const (
	KindService = "service" // a destination service; holds its versions
	KindApp     = "app"     // an app with no known service host; holds its versions
	KindVersion = "version" // one version of an app (Kiali's versioned app node)
	KindGateway = "gateway"
	KindUnknown = "unknown" // traffic from outside the mesh
)

// Health, Kiali's traffic health.
const (
	Healthy  = "healthy"
	Degraded = "degraded"
	Failure  = "failure"
	NoHealth = "na"
)

// Kiali's default request health tolerances (kiali.io, Configuration →
// Traffic Health): application errors (5xx, gRPC 1-16) are degraded from
// 0.1% and failing above 10%; client errors (4xx) are degraded above 10%
// and failing above 20%.
const (
	errDegraded = 0.1
	errFailure  = 10
	c4xDegraded = 10
	c4xFailure  = 20
)

// GraphNode is a box of the graph, placed by the layout.
type GraphNode struct {
	ID        string  `json:"id"`
	Kind      string  `json:"kind"`
	Label     string  `json:"label"`
	Namespace string  `json:"namespace,omitempty"`
	App       string  `json:"app,omitempty"`
	Version   string  `json:"version,omitempty"`
	Service   string  `json:"service,omitempty"` // host, e.g. reviews.default.svc.cluster.local
	Parent    string  `json:"parent,omitempty"`  // the service (or app) box a version sits in
	Idle      bool    `json:"idle,omitempty"`    // a proxy with no traffic in the window
	Health    string  `json:"health"`
	X         float64 `json:"x"`
	Y         float64 `json:"y"`
	W         float64 `json:"w"`
	H         float64 `json:"h"`
}

// GraphEdge is the request traffic from one node to another over the
// window.
type GraphEdge struct {
	ID       string `json:"id"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	// Reporter is the proxy side the numbers come from: "destination"
	// when the destination's sidecar reports the pair, else "source".
	Reporter     string   `json:"reporter"`
	Rate         float64  `json:"rate"`         // requests per second
	Percent      float64  `json:"percent"`      // share of the source's requests, %
	ErrorPercent float64  `json:"errorPercent"` // 5xx and gRPC non-OK, %
	Percent4xx   float64  `json:"percent4xx"`
	P50          *float64 `json:"p50,omitempty"` // ms; absent without latency data
	P90          *float64 `json:"p90,omitempty"`
	P99          *float64 `json:"p99,omitempty"`
	MTLSPercent  float64  `json:"mtlsPercent"`
	Lock         bool     `json:"lock"` // some of the traffic is mutual TLS
	Health       string   `json:"health"`
	Path         string   `json:"path"` // SVG path
	LabelX       float64  `json:"labelX"`
	LabelY       float64  `json:"labelY"`
}

// Graph is the versioned app graph of the window.
type Graph struct {
	Timestamp     time.Time   `json:"timestamp"`
	WindowSeconds float64     `json:"windowSeconds"`
	Nodes         []GraphNode `json:"nodes"`
	Edges         []GraphEdge `json:"edges"`
	Width         float64     `json:"width"`
	Height        float64     `json:"height"`
}

func known(v string) bool { return v != "" && v != "unknown" }

func firstKnown(vals ...string) string {
	for _, v := range vals {
		if known(v) {
			return v
		}
	}
	return ""
}

// resolver maps series to nodes.
type resolver struct {
	gateways map[string]bool   // namespace/workload of gateway proxies
	hostOf   map[string]string // namespace/app -> service host
}

func newResolver(proxies []Proxy, t traffic) *resolver {
	r := &resolver{gateways: map[string]bool{}, hostOf: map[string]string{}}
	for _, p := range proxies {
		if p.Gateway {
			r.gateways[p.Namespace+"/"+p.Workload] = true
		}
	}
	// An app's service is the host its traffic arrives for; with several,
	// the busiest (then the first by name) so that the choice is stable.
	best := map[string]float64{}
	for l, v := range t.reqs {
		if !known(l.dstWorkload) || !known(l.dstService) {
			continue
		}
		k := l.dstNamespace + "/" + firstKnown(l.dstCanonical, l.dstApp, l.dstWorkload)
		hk := k + "\x00" + l.dstService
		best[hk] += v
	}
	keys := make([]string, 0, len(best))
	for k := range best {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	top := map[string]float64{}
	for _, hk := range keys {
		k, host, _ := strings.Cut(hk, "\x00")
		if _, ok := r.hostOf[k]; !ok || best[hk] > top[k] {
			r.hostOf[k], top[k] = host, best[hk]
		}
	}
	return r
}

func (r *resolver) versionNode(ns, app, version string) GraphNode {
	n := GraphNode{Kind: KindVersion, Namespace: ns, App: app, Version: version, Label: version}
	if !known(version) {
		// No version label: one node for the app, as Istio's "latest".
		version, n.Version, n.Label = "unknown", "", "latest"
	}
	n.ID = "v:" + ns + "/" + app + "/" + version
	if host, ok := r.hostOf[ns+"/"+app]; ok {
		n.Parent = "s:" + host
		n.Service = host
	} else {
		n.Parent = "a:" + ns + "/" + app
	}
	return n
}

func (r *resolver) source(l labels) GraphNode {
	if !known(l.srcWorkload) {
		return GraphNode{ID: KindUnknown, Kind: KindUnknown, Label: "unknown"}
	}
	if r.gateways[l.srcNamespace+"/"+l.srcWorkload] {
		return gatewayNode(l.srcNamespace, l.srcWorkload)
	}
	return r.versionNode(l.srcNamespace, firstKnown(l.srcCanonical, l.srcApp, l.srcWorkload), l.srcVersion)
}

func (r *resolver) destination(l labels) GraphNode {
	if !known(l.dstWorkload) {
		// No sidecar answered (an external service, or a request that
		// failed before reaching one): the edge ends at the service.
		return serviceNode(l.dstService, l.dstServiceName, l.dstServiceNamespace, "")
	}
	if r.gateways[l.dstNamespace+"/"+l.dstWorkload] {
		return gatewayNode(l.dstNamespace, l.dstWorkload)
	}
	return r.versionNode(l.dstNamespace, firstKnown(l.dstCanonical, l.dstApp, l.dstWorkload), l.dstVersion)
}

func gatewayNode(ns, workload string) GraphNode {
	return GraphNode{ID: "g:" + ns + "/" + workload, Kind: KindGateway, Label: workload, Namespace: ns}
}

func serviceNode(host, name, ns, app string) GraphNode {
	if !known(host) {
		host = "unknown"
	}
	label := firstKnown(name, host)
	if i := strings.Index(label, ".svc."); i > 0 && !known(name) {
		label, _, _ = strings.Cut(label, ".")
	}
	n := GraphNode{ID: "s:" + host, Kind: KindService, Label: label, Service: host, App: app}
	if known(ns) {
		n.Namespace = ns
	}
	return n
}

// edgeAcc sums one edge's traffic.
type edgeAcc struct {
	src, dst   GraphNode
	reporter   string
	total      float64
	errs, c4xx float64
	mtls       float64
	hist       []bucket
	protocols  map[string]bool
}

func (e *edgeAcc) add(l labels, v float64, h []bucket) {
	e.total += v
	if l.isError() {
		e.errs += v
	}
	if l.is4xx() {
		e.c4xx += v
	}
	if l.security == "mutual_tls" {
		e.mtls += v
	}
	if known(l.protocol) {
		e.protocols[l.protocol] = true
	}
	if h != nil {
		e.hist = mergeBuckets(e.hist, h)
	}
}

// selection decides which series describe the traffic, following Kiali:
// a pair of nodes the destination's sidecar reports is read from
// reporter="destination" (it sees the request as served, and knows mTLS);
// a pair only the source reports (a destination without sidecar, requests
// that failed before reaching one) is read from reporter="source".
type selection struct {
	r         *resolver
	destPairs map[[2]string]bool
}

func newSelection(r *resolver, t traffic) *selection {
	s := &selection{r: r, destPairs: map[[2]string]bool{}}
	for l, v := range t.reqs {
		if l.reporter == "destination" && v > 0 {
			s.destPairs[[2]string{r.source(l).ID, r.destination(l).ID}] = true
		}
	}
	return s
}

// pick returns the series' edge endpoints and whether the series is the
// one read for them.
func (s *selection) pick(l labels) (src, dst GraphNode, ok bool) {
	src, dst = s.r.source(l), s.r.destination(l)
	switch l.reporter {
	case "destination":
		return src, dst, true
	default:
		return src, dst, !s.destPairs[[2]string{src.ID, dst.ID}]
	}
}

// buildGraph computes the graph of traffic t and lays it out.
func buildGraph(proxies []Proxy, t traffic, now time.Time) Graph {
	r := newResolver(proxies, t)
	sel := newSelection(r, t)
	accs := map[[2]string]*edgeAcc{}
	acc := func(src, dst GraphNode, reporter string) *edgeAcc {
		k := [2]string{src.ID, dst.ID}
		e := accs[k]
		if e == nil {
			e = &edgeAcc{src: src, dst: dst, reporter: reporter, protocols: map[string]bool{}}
			accs[k] = e
		}
		return e
	}
	unknown := GraphNode{ID: KindUnknown, Kind: KindUnknown, Label: "unknown"}
	for l, v := range t.reqs {
		if v <= 0 {
			continue
		}
		src, dst, ok := sel.pick(l)
		if ok {
			acc(src, dst, l.reporter).add(l, v, t.hists[l])
		}
		// A gateway reports only as the source; what it sends on came in
		// from its clients, outside the mesh, so the console draws that
		// as traffic from "unknown" into the gateway.
		if src.Kind == KindGateway && l.reporter == "source" {
			acc(unknown, src, "source").add(labels{code: l.code, grpcStatus: l.grpcStatus, protocol: l.protocol}, v, t.hists[l])
		}
	}

	nodes := map[string]GraphNode{}
	addNode := func(n GraphNode) {
		if _, ok := nodes[n.ID]; ok {
			return
		}
		nodes[n.ID] = n
		if n.Parent == "" {
			return
		}
		if _, ok := nodes[n.Parent]; ok {
			return
		}
		if host, ok := strings.CutPrefix(n.Parent, "s:"); ok {
			g := serviceNode(host, "", n.Namespace, n.App)
			g.Label = firstKnown(n.App, g.Label)
			nodes[g.ID] = g
		} else {
			nodes[n.Parent] = GraphNode{ID: n.Parent, Kind: KindApp, Label: n.App, Namespace: n.Namespace, App: n.App}
		}
	}
	edges := make([]GraphEdge, 0, len(accs))
	span := t.span.Seconds()
	outTotal := map[string]float64{}
	for _, e := range accs {
		outTotal[e.src.ID] += e.total
	}
	for _, e := range accs {
		addNode(e.src)
		addNode(e.dst)
		ge := GraphEdge{
			ID:       e.src.ID + " -> " + e.dst.ID,
			Source:   e.src.ID,
			Target:   e.dst.ID,
			Reporter: e.reporter,
		}
		protos := make([]string, 0, len(e.protocols))
		for p := range e.protocols {
			protos = append(protos, p)
		}
		sort.Strings(protos)
		ge.Protocol = strings.Join(protos, ",")
		if span > 0 {
			ge.Rate = e.total / span
		}
		if outTotal[e.src.ID] > 0 {
			ge.Percent = 100 * e.total / outTotal[e.src.ID]
		}
		ge.ErrorPercent = 100 * e.errs / e.total
		ge.Percent4xx = 100 * e.c4xx / e.total
		ge.MTLSPercent = 100 * e.mtls / e.total
		ge.Lock = e.mtls > 0
		ge.P50, ge.P90, ge.P99 = quantilePtr(0.5, e.hist), quantilePtr(0.9, e.hist), quantilePtr(0.99, e.hist)
		ge.Health = health(ge.ErrorPercent, ge.Percent4xx)
		edges = append(edges, ge)
	}
	// Idle proxies are shown too (Kiali's "idle nodes"), so that a fresh
	// mesh is not a blank page.
	for _, p := range proxies {
		if p.Gateway {
			addNode(gatewayNode(p.Namespace, p.Workload))
			continue
		}
		app := firstKnown(p.App, p.Workload, p.ID)
		addNode(r.versionNode(p.Namespace, app, p.Version))
	}
	// Nodes are coloured by the worst health of the traffic into them.
	hasEdge := map[string]bool{}
	inHealth := map[string]string{}
	for _, e := range edges {
		hasEdge[e.Source], hasEdge[e.Target] = true, true
		for _, id := range []string{e.Target, nodes[e.Target].Parent} {
			if id != "" {
				inHealth[id] = worse(inHealth[id], e.Health)
			}
		}
	}
	list := make([]GraphNode, 0, len(nodes))
	for id, n := range nodes {
		n.Health = inHealth[id]
		if n.Health == "" {
			n.Health = NoHealth
		}
		n.Idle = !hasEdge[id] && (n.Kind == KindVersion || n.Kind == KindGateway)
		list = append(list, n)
	}
	g := Graph{Timestamp: now, WindowSeconds: span, Nodes: list, Edges: edges}
	layout(&g)
	return g
}

func quantilePtr(q float64, bs []bucket) *float64 {
	v := quantile(q, bs)
	if math.IsNaN(v) {
		return nil
	}
	v = math.Round(v*100) / 100
	return &v
}

func health(errPct, pct4xx float64) string {
	switch {
	case errPct > errFailure || pct4xx > c4xFailure:
		return Failure
	case errPct >= errDegraded || pct4xx > c4xDegraded:
		return Degraded
	}
	return Healthy
}

var healthRank = map[string]int{"": 0, NoHealth: 0, Healthy: 1, Degraded: 2, Failure: 3}

func worse(a, b string) string {
	if healthRank[b] > healthRank[a] {
		return b
	}
	return a
}

// Layout sizes, in SVG pixels.
const (
	margin     = 30.0
	boxW       = 170.0
	colGap     = 135.0 // room for edge labels between columns
	leafH      = 44.0  // a box with no versions
	headerH    = 30.0
	verW       = 144.0
	verH       = 34.0
	verGap     = 22.0
	rowGap     = 40.0
	labelW     = 115.0
	labelH     = 32.0
	loopHeight = 70.0
)

// layout places the graph deterministically in layers, sources left and
// destinations right: a box's column is its longest path from a source
// (cycles broken by depth-first order); boxes in a column are stacked in
// the order of their predecessors' heights, each as close as it can get
// to them without overlapping. Edge labels sit at the edges' midpoints,
// pushed apart where they would collide.
func layout(g *Graph) {
	idx := map[string]int{}
	for i := range g.Nodes {
		idx[g.Nodes[i].ID] = i
	}
	children := map[string][]int{}
	var tops []int
	for i, n := range g.Nodes {
		if n.Parent != "" {
			children[n.Parent] = append(children[n.Parent], i)
		} else {
			tops = append(tops, i)
		}
	}
	kindRank := map[string]int{KindUnknown: 0, KindGateway: 1}
	less := func(a, b GraphNode) bool {
		ra, ok := kindRank[a.Kind]
		if !ok {
			ra = 2
		}
		rb, ok := kindRank[b.Kind]
		if !ok {
			rb = 2
		}
		if ra != rb {
			return ra < rb
		}
		if a.Label != b.Label {
			return a.Label < b.Label
		}
		return a.ID < b.ID
	}
	sort.Slice(tops, func(i, j int) bool { return less(g.Nodes[tops[i]], g.Nodes[tops[j]]) })
	for _, c := range children {
		sort.Slice(c, func(i, j int) bool { return less(g.Nodes[c[i]], g.Nodes[c[j]]) })
	}
	top := func(id string) string {
		n := g.Nodes[idx[id]]
		if n.Parent != "" {
			return n.Parent
		}
		return id
	}
	succ := map[string][]string{}
	pred := map[string][]string{}
	seen := map[[2]string]bool{}
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	for _, e := range g.Edges {
		a, b := top(e.Source), top(e.Target)
		if a == b || seen[[2]string{a, b}] {
			continue
		}
		seen[[2]string{a, b}] = true
		succ[a] = append(succ[a], b)
	}
	// Depth-first from the roots (then from anything left, for cycles),
	// keeping forward edges only; the reverse postorder is topological.
	state := map[string]int{} // 1 on stack, 2 done
	forward := map[string][]string{}
	var order []string
	var visit func(string)
	visit = func(v string) {
		state[v] = 1
		for _, w := range succ[v] {
			switch state[w] {
			case 0:
				forward[v] = append(forward[v], w)
				visit(w)
			case 2:
				forward[v] = append(forward[v], w)
			}
		}
		state[v] = 2
		order = append(order, v)
	}
	hasPred := map[string]bool{}
	for _, ws := range succ {
		for _, w := range ws {
			hasPred[w] = true
		}
	}
	for _, pass := range []bool{true, false} {
		for _, i := range tops {
			id := g.Nodes[i].ID
			if state[id] == 0 && (!pass || !hasPred[id]) {
				visit(id)
			}
		}
	}
	layer := map[string]int{}
	for i := len(order) - 1; i >= 0; i-- {
		v := order[i]
		for _, w := range forward[v] {
			layer[w] = max(layer[w], layer[v]+1)
			pred[w] = append(pred[w], v)
		}
	}
	// Box sizes.
	for _, i := range tops {
		n := &g.Nodes[i]
		n.W, n.H = boxW, leafH
		if c := children[n.ID]; len(c) > 0 {
			n.H = headerH + float64(len(c))*(verH+verGap) - verGap + 10
		}
	}
	cols := map[int][]int{}
	maxLayer := 0
	for _, i := range tops {
		l := layer[g.Nodes[i].ID]
		cols[l] = append(cols[l], i)
		maxLayer = max(maxLayer, l)
	}
	centerY := map[string]float64{}
	for l := 0; l <= maxLayer; l++ {
		col := cols[l]
		want := make(map[int]float64, len(col))
		for _, i := range col {
			ps := pred[g.Nodes[i].ID]
			if len(ps) == 0 {
				want[i] = math.Inf(1)
				continue
			}
			s := 0.0
			for _, p := range ps {
				s += centerY[p]
			}
			want[i] = s / float64(len(ps))
		}
		sort.SliceStable(col, func(a, b int) bool { return want[col[a]] < want[col[b]] })
		y := 0.0
		for k, i := range col {
			n := &g.Nodes[i]
			ny := y
			if k > 0 {
				ny = y + rowGap
			}
			if w := want[i]; !math.IsInf(w, 1) {
				ny = max(ny, w-n.H/2)
			}
			n.X = margin + float64(l)*(boxW+colGap)
			n.Y = ny
			y = ny + n.H
			centerY[n.ID] = ny + n.H/2
		}
	}
	minY := math.Inf(1)
	for _, i := range tops {
		minY = min(minY, g.Nodes[i].Y)
	}
	if math.IsInf(minY, 1) {
		minY = 0
	}
	for _, i := range tops {
		n := &g.Nodes[i]
		n.Y += margin - minY
		for k, c := range children[n.ID] {
			ch := &g.Nodes[c]
			ch.X = n.X + (boxW-verW)/2
			ch.Y = n.Y + headerH + float64(k)*(verH+verGap)
			ch.W, ch.H = verW, verH
		}
	}
	for _, n := range g.Nodes {
		g.Width = max(g.Width, n.X+n.W+margin)
		g.Height = max(g.Height, n.Y+n.H+margin)
	}
	// Edges.
	for k := range g.Edges {
		e := &g.Edges[k]
		s, t := g.Nodes[idx[e.Source]], g.Nodes[idx[e.Target]]
		x1, y1 := s.X+s.W, s.Y+s.H/2
		x2, y2 := t.X, t.Y+t.H/2
		if len(children[t.ID]) > 0 {
			// Into a service box: its header, where the name is.
			y2 = t.Y + headerH/2
		}
		switch {
		case e.Source == e.Target:
			x1, x2 = s.X+s.W*0.7, s.X+s.W*0.3
			y1, y2 = s.Y, s.Y
			e.Path = fmt.Sprintf("M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f", x1, y1, x1+20, y1-loopHeight, x2-20, y2-loopHeight, x2, y2)
			e.LabelX, e.LabelY = (x1+x2)/2, y1-loopHeight*0.75
		case layer[top(e.Target)]-layer[top(e.Source)] > 1:
			// Skips columns: run under the boxes of the columns between,
			// with the label on the level stretch.
			low := 0.0
			for l := layer[top(e.Source)] + 1; l < layer[top(e.Target)]; l++ {
				for _, i := range cols[l] {
					low = max(low, g.Nodes[i].Y+g.Nodes[i].H)
				}
			}
			low += labelH/2 + 12
			const bend = 60.0
			e.Path = fmt.Sprintf("M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f L%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f",
				x1, y1, x1+bend, y1, x1+bend/2, low, x1+bend*1.5, low, x2-bend*1.5, low, x2-bend/2, low, x2-bend, y2, x2, y2)
			e.LabelX, e.LabelY = (x1+x2)/2, low
			g.Height = max(g.Height, low+labelH/2+margin)
		case x2 > x1:
			dx := (x2 - x1) / 2
			e.Path = fmt.Sprintf("M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f", x1, y1, x1+dx, y1, x2-dx, y2, x2, y2)
			e.LabelX, e.LabelY = (x1+x2)/2, (y1+y2)/2
		default:
			// Backwards (a cycle or a same-column call): loop under the
			// boxes, entering the target from its left.
			low := max(s.Y+s.H, t.Y+t.H) + loopHeight
			e.Path = fmt.Sprintf("M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f", x1, y1, x1+80, low, x2-80, low, x2, y2)
			e.LabelX, e.LabelY = (x1+x2)/2, low-loopHeight/4
			g.Height = max(g.Height, low+margin)
		}
	}
	spreadLabels(g.Edges)
}

// spreadLabels moves edge labels down until no two overlap.
func spreadLabels(edges []GraphEdge) {
	order := make([]int, len(edges))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ea, eb := edges[order[a]], edges[order[b]]
		if ea.LabelY != eb.LabelY {
			return ea.LabelY < eb.LabelY
		}
		return ea.LabelX < eb.LabelX
	})
	for k, i := range order {
		// Moves only go down, past labels already placed, so this ends.
		for moved := true; moved; {
			moved = false
			for _, j := range order[:k] {
				a, b := &edges[i], edges[j]
				if math.Abs(a.LabelX-b.LabelX) < labelW && math.Abs(a.LabelY-b.LabelY) < labelH {
					a.LabelY = b.LabelY + labelH
					moved = true
				}
			}
		}
	}
}
