package wan

import (
	"fmt"
	"math"
)

// Target is one of the goals with its verdict.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Detail string  `json:"detail,omitempty"` // which profile, or why the figure is a bound
	Status string  `json:"status"`           // PASS, MISS, or n/a (a row or profile not measured)
}

// The rows the targets are about.
const (
	rowL   = "quicgate -L (bbr)"
	rowTUN = "quicgate TUN (bbr)"
)

func profileName(s string) string {
	p, err := ParseProfile(s)
	if err != nil {
		panic(err)
	}
	return p.Name
}

// Evaluate fills in the targets from the cells.
func (r *Report) Evaluate() {
	r.Targets = nil
	add := func(name, want string, got float64, ok bool, detail string, measured bool) {
		t := Target{Name: name, Want: want, Detail: detail, Status: "n/a"}
		if measured {
			t.Got, t.Status = got, verdict(ok)
		}
		r.Targets = append(r.Targets, t)
	}
	for _, loss := range []string{"0", "0.1", "1", "3"} {
		prof := profileName("100M/40ms/" + loss + "%")
		l, ssh := r.cell(rowL, prof), r.cell(Baseline, prof)
		var got float64
		if l != nil {
			got = l.Mbps1 / 100
		}
		add("-L (bbr) one flow vs the link rate, "+prof, ">= 0.90x", got, got >= 0.9, "", l != nil)
		got = 0
		if l != nil && ssh != nil && ssh.Mbps1 > 0 {
			got = l.Mbps1 / ssh.Mbps1
		}
		add("-L (bbr) one flow vs ssh -L (bbr), "+prof, ">= 1.00x", got, got >= 1, "", l != nil && ssh != nil && ssh.Mbps1 > 0)
	}

	prof := profileName("100M/40ms/1%")
	l, ssh := r.cell(rowL, prof), r.cell(Baseline, prof)
	name := "interactive p99 during a bulk flow, -L (bbr) vs ssh -L (bbr), " + prof
	switch {
	case l == nil || ssh == nil || ssh.Loaded.P99 == 0:
		add(name, "<= 0.50x", 0, false, "", false)
	case l.Loaded.P99Censored && ssh.Loaded.P99Censored:
		add(name, "<= 0.50x", 0, false, "both p99s beyond the reply grace time", false)
	default:
		got := l.Loaded.P99 / ssh.Loaded.P99
		detail := ""
		if ssh.Loaded.P99Censored {
			detail = fmt.Sprintf("ssh's p99 is over %.0f ms: the ratio is at most this", ssh.Loaded.P99)
		} else if l.Loaded.P99Censored {
			detail = fmt.Sprintf("-L's p99 is over %.0f ms: the ratio is at least this", l.Loaded.P99)
		}
		add(name, "<= 0.50x", got, got <= 0.5, detail, true)
	}

	// Worst ratio over every profile with both rows measured.
	worst := func(a, b string, get func(*Cell) float64, higherIsWorse bool) (float64, string, bool) {
		w, where, any := 0.0, "", false
		for _, p := range r.Profiles {
			x, y := r.cell(a, p.Name), r.cell(b, p.Name)
			if x == nil || y == nil || get(y) == 0 {
				continue
			}
			v := get(x) / get(y)
			if !any || (higherIsWorse && v > w) || (!higherIsWorse && v < w) {
				w, where, any = v, "worst on "+p.Name, true
			}
		}
		return w, where, any
	}
	got, where, ok := worst(rowL, Baseline, func(c *Cell) float64 { return c.TTFBMs }, true)
	add("new flow's first reply byte, -L (bbr) vs ssh -L (bbr), every profile", "<= 1.00x", got, got <= 1, where, ok)
	got, where, ok = worst(rowTUN, rowL, func(c *Cell) float64 { return c.Mbps1 }, false)
	add("TUN (bbr) one flow vs -L (bbr), every profile", ">= 0.90x", got, got >= 0.9, where, ok)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
