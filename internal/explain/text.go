package explain

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteText prints the trail for people: the summary, the outcomes, then
// each hop's decisions, indented.
func (t *Trail) WriteText(w io.Writer) error {
	b := bufio.NewWriter(w)
	fmt.Fprintln(b, t.Summary)
	fmt.Fprintln(b)
	fmt.Fprintln(b, "Outcome:")
	for _, o := range t.Outcomes {
		line := o.Text()
		if o.Status != 0 && o.Flags == "" && o.Details != "" {
			line += " [" + o.Details + "]"
		}
		fmt.Fprintf(b, "  %7s  %s\n", formatPercent(o.Percent), line)
		if o.By != "" {
			fmt.Fprintf(b, "           by: %s\n", o.By)
		}
		if o.At != "" {
			fmt.Fprintf(b, "           at: %s (hop %d)\n", o.At, o.Hop+1)
		}
		if o.Fix != "" {
			fmt.Fprintf(b, "           fix: %s\n", o.Fix)
		}
	}
	for i, h := range t.Hops {
		fmt.Fprintln(b)
		fmt.Fprintf(b, "Hop %d: %s (%s), %s\n", i+1, h.Workload, h.Proxy, h.Side)
		if h.Via != "" {
			fmt.Fprintf(b, "  via %s\n", h.Via)
		}
		for _, s := range h.Steps {
			writeStep(b, s, 1)
		}
	}
	if len(t.Notes) > 0 {
		fmt.Fprintln(b)
		fmt.Fprintln(b, "Notes:")
		for _, n := range t.Notes {
			fmt.Fprintf(b, "  - %s\n", n)
		}
	}
	return b.Flush()
}

func writeStep(b *bufio.Writer, s Step, depth int) {
	ind := strings.Repeat("  ", depth)
	line := ind + s.Kind + ": " + s.Decision
	if s.Config != "" {
		line += "  [" + s.Config + "]"
	}
	fmt.Fprintln(b, line)
	if s.Why != "" {
		fmt.Fprintf(b, "%s    why: %s\n", ind, s.Why)
	}
	if s.Status != 0 {
		r := fmt.Sprintf("%d", s.Status)
		if s.Flags != "" {
			r += " " + s.Flags
		}
		if s.Details != "" {
			r += " (" + s.Details + ")"
		}
		fmt.Fprintf(b, "%s    → %s\n", ind, r)
	} else if s.Flags != "" {
		fmt.Fprintf(b, "%s    flags: %s\n", ind, s.Flags)
	}
	if s.Fix != "" {
		fmt.Fprintf(b, "%s    fix: %s\n", ind, s.Fix)
	}
	for _, c := range s.Steps {
		writeStep(b, c, depth+2)
	}
}
