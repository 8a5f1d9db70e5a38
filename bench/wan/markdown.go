package wan

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/quicgate/quicgate/bench/wanlink"
)

// Markdown writes one table per figure (rows x profiles, with ratios to Baseline on the same
// profile), the emulator's CPU table, the targets and the notes.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "## WAN profile: TCP and UDP flows' ways across an emulated link\n\n")
	fmt.Fprintf(w, "The %s. Each profile is the same both ways: the rate counting IP bytes, a tail-drop queue of one bandwidth-delay product, half the round trip as delay each way, the loss on each direction independently, MTU 1500. Ratios in parentheses are to %s on the same profile in this run.\n\n", Direction, Baseline)
	if r.Quicgate != "" {
		fmt.Fprintf(w, "quicgate: %s.\n\n", r.Quicgate)
	}
	if !r.CongestionFlag {
		fmt.Fprintf(w, "**quicgate ran without --congestion** (-congestion-flag=false): its rows used quicgate's default congestion control, whatever their names say.\n\n")
	}
	notes := map[string][]string{} // a skip or error message: the cells it applies to
	var order []string
	ratio := func(c *Cell, base *Cell, get func(*Cell) float64) string {
		if base == nil || get(base) == 0 || get(c) == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.2fx)", get(c)/get(base))
	}
	table := func(title string, cellText func(c, base *Cell) string) {
		if len(r.Rows) == 0 { // -rows none: the UDP ways alone
			return
		}
		fmt.Fprintf(w, "### %s\n\n| row |", title)
		for _, p := range r.Profiles {
			fmt.Fprintf(w, " %s |", p.Name)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(r.Profiles)))
		for _, row := range r.Rows {
			fmt.Fprintf(w, "| %s |", row.Name)
			for _, p := range r.Profiles {
				fmt.Fprintf(w, " %s |", r.cellText(row.Name, p.Name, cellText, notes, &order))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
	table("One flow: goodput, Mbit/s", func(c, base *Cell) string {
		return fmtNum(c.Mbps1) + ratio(c, base, func(x *Cell) float64 { return x.Mbps1 })
	})
	table("8 flows: goodput together, Mbit/s", func(c, base *Cell) string {
		return fmtNum(c.Mbps8) + ratio(c, base, func(x *Cell) float64 { return x.Mbps8 })
	})
	table("Interactive flow alone: 64-byte request and reply every 50 ms, round trip p50 / p99, ms", func(c, base *Cell) string {
		return latText(c.Alone) + ratio(c, base, func(x *Cell) float64 { return x.Alone.P99 })
	})
	table("Interactive flow during one bulk flow on the same tunnel or path: p50 / p99, ms (ratio of p99)", func(c, base *Cell) string {
		return latText(c.Loaded) + ratio(c, base, func(x *Cell) float64 { return x.Loaded.P99 })
	})
	table("New flow: connect to the first byte of the reply, median ms", func(c, base *Cell) string {
		return fmtNum(c.TTFBMs) + ratio(c, base, func(x *Cell) float64 { return x.TTFBMs })
	})
	table("Tail drops at the bottleneck queue (one bandwidth-delay product), % of all packets the link carried in the cell, both ways (the acknowledgements' way hardly drops): how far the bulk senders overshoot the link", func(c, _ *Cell) string {
		return fmt.Sprintf("%.1f%%", 100*c.Emu.QueueFullFraction())
	})
	table(fmt.Sprintf("Emulator: CPU, %% of one core (the highest of the cell's measurements) / packets over %v late (⚠ = at least %d %% CPU, over %.0f %% late, or packets dropped before it read them: the emulator may have limited the result)",
		wanlink.LateAfter, BusyCPU, BusyLate*100), func(c, _ *Cell) string {
		s := fmt.Sprintf("%.0f / %.1f%%", c.Emu.Max, c.Emu.LateFraction()*100)
		if c.Emu.Busy {
			s += " ⚠"
		}
		return s
	})
	r.udpMarkdown(w)
	if len(order) > 0 {
		fmt.Fprintf(w, "Not measured:\n\n")
		for i, msg := range order {
			fmt.Fprintf(w, "%d. %s — %s\n", i+1, msg, r.where(notes[msg]))
		}
		fmt.Fprintln(w)
	}
	if len(r.Rows) > 0 { // the targets are all on the TCP rows
		fmt.Fprintf(w, "### Targets\n\n| target | want | got | | |\n|---|---|---|---|---|\n")
		for _, t := range r.Targets {
			got := "–"
			if t.Status != "n/a" {
				got = fmt.Sprintf("%.2fx", t.Got)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.Name, t.Want, got, t.Status, t.Detail)
		}
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
	}
}

// cellText is one table cell: the figure, or a numbered reference to why there is none.
func (r *Report) cellText(row, profile string, text func(c, base *Cell) string, notes map[string][]string, order *[]string) string {
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Row != row || c.Profile != profile {
			continue
		}
		msg := ""
		switch {
		case c.Skipped != "":
			msg = "skipped: " + c.Skipped
		case c.Error != "":
			msg = "error: " + c.Error
		}
		if msg == "" {
			return text(c, r.cell(Baseline, profile))
		}
		msg = strings.ReplaceAll(msg, "|", "/")
		where := row + "\x00" + profile
		if !slices.Contains(notes[msg], where) {
			notes[msg] = append(notes[msg], where)
		}
		if !slices.Contains(*order, msg) {
			*order = append(*order, msg)
		}
		word := "error"
		if c.Skipped != "" {
			word = "skipped"
		}
		return fmt.Sprintf("%s (%d)", word, slices.Index(*order, msg)+1)
	}
	return "–"
}

func latText(l Latency) string {
	if l.Requests == 0 {
		return "–"
	}
	f := func(v float64, censored bool) string {
		if censored {
			return "> " + fmtNum(v)
		}
		return fmtNum(v)
	}
	return f(l.P50, l.P50Censored) + " / " + f(l.P99, l.P99Censored)
}

// where names the cells of a note, a row at a time: "ssh -L (bbr) on every profile".
func (r *Report) where(cells []string) string {
	var parts []string
	for _, row := range r.Rows {
		var profs []string
		for _, p := range r.Profiles {
			if slices.Contains(cells, row.Name+"\x00"+p.Name) {
				profs = append(profs, p.Name)
			}
		}
		switch {
		case len(profs) == 0:
		case len(profs) == len(r.Profiles) && len(profs) > 1:
			parts = append(parts, row.Name+" on every profile")
		default:
			parts = append(parts, row.Name+" on "+strings.Join(profs, ", "))
		}
	}
	return strings.Join(parts, "; ")
}
