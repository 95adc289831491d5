package dashboard

import (
	"sort"
	"strconv"
	"time"

	"github.com/amime-mesh/amime/internal/tracestore"
)

// waterfallScale is the bar area's width in SVG user units.
const waterfallScale = 1000.0

// waterfall is a trace laid out as one row per span, children under their
// parent, bars placed by time.
type waterfall struct {
	Start    time.Time
	Duration time.Duration
	Rows     []waterfallRow
	Ticks    []waterfallTick
}

type waterfallRow struct {
	tracestore.Span
	Depth  int
	Indent []struct{} // one per level, for the template's range
	X, W   string     // bar offset and width in 0..waterfallScale
	Offset time.Duration
}

type waterfallTick struct {
	X     string
	Label string
}

func svgNum(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

// buildWaterfall orders spans depth first by start time under their
// parents; spans whose parent is not in the trace are roots.
func buildWaterfall(t tracestore.Trace) waterfall {
	var w waterfall
	if len(t.Spans) == 0 {
		return w
	}
	byID := map[string]bool{}
	start, end := t.Spans[0].Start, t.Spans[0].Start
	for _, s := range t.Spans {
		byID[s.SpanID] = true
		if s.Start.Before(start) {
			start = s.Start
		}
		if e := s.Start.Add(s.Duration); e.After(end) {
			end = e
		}
	}
	kids := map[string][]int{}
	var roots []int
	for i, s := range t.Spans {
		if s.ParentID == "" || s.ParentID == s.SpanID || !byID[s.ParentID] {
			roots = append(roots, i)
		} else {
			kids[s.ParentID] = append(kids[s.ParentID], i)
		}
	}
	byStart := func(ix []int) {
		sort.SliceStable(ix, func(a, b int) bool { return t.Spans[ix[a]].Start.Before(t.Spans[ix[b]].Start) })
	}
	byStart(roots)
	total := end.Sub(start)
	w.Start, w.Duration = start, total
	scale := func(dur time.Duration) float64 {
		if total <= 0 {
			return 0
		}
		return waterfallScale * float64(dur) / float64(total)
	}
	done := make([]bool, len(t.Spans))
	var walk func(i, depth int)
	walk = func(i, depth int) {
		if done[i] {
			return // a span id repeated, or a parent cycle
		}
		done[i] = true
		s := t.Spans[i]
		x := scale(s.Start.Sub(start))
		bw := max(scale(s.Duration), 2)
		x = min(x, waterfallScale-bw)
		w.Rows = append(w.Rows, waterfallRow{
			Span: s, Depth: depth, Indent: make([]struct{}, depth),
			X: svgNum(x), W: svgNum(bw), Offset: s.Start.Sub(start),
		})
		c := kids[s.SpanID]
		byStart(c)
		for _, k := range c {
			walk(k, depth+1)
		}
	}
	for _, i := range roots {
		walk(i, 0)
	}
	// Spans caught in a parent cycle are reached from no root.
	for i := range t.Spans {
		walk(i, 0)
	}
	for k := 0; k <= 4; k++ {
		w.Ticks = append(w.Ticks, waterfallTick{X: svgNum(waterfallScale * float64(k) / 4), Label: fmtDuration(total * time.Duration(k) / 4)})
	}
	return w
}
