package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Result is one path's figures; zero values mean "not measured".
type Result struct {
	Path       string  `json:"path"`
	Skipped    string  `json:"skipped,omitempty"`
	Error      string  `json:"error,omitempty"`
	Gbps1      float64 `json:"gbps_1_flow"`
	Gbps8      float64 `json:"gbps_8_flows"`
	Gbps64     float64 `json:"gbps_64_flows"`
	FlowsPerS  float64 `json:"flows_per_second"`
	P50us      float64 `json:"latency_p50_us"`
	P99us      float64 `json:"latency_p99_us"`
	IdleFlows  int     `json:"idle_flows,omitempty"`
	IdleRSSMiB float64 `json:"idle_rss_growth_mib,omitempty"`
	CPUsPerGB  float64 `json:"cpu_seconds_per_gb,omitempty"`
}

// Report is a whole run.
type Report struct {
	When     time.Time   `json:"when"`
	Command  string      `json:"command"`
	Quick    bool        `json:"quick"`
	Machine  string      `json:"machine"`
	Results  []Result    `json:"results"`
	Targets  []Target    `json:"targets"`
	UDP      []UDPResult `json:"udp,omitempty"`
	Duration string      `json:"duration"`
}

// Target is one of the goals with its verdict.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Unit   string  `json:"unit"`
	Status string  `json:"status"` // PASS, MISS, or n/a (a path was skipped)
	// Relay is what the Go TCP relay gets on the same ratio, for the targets on -L: it does
	// -L's TCP work and nothing else, so a target it misses too is out of reach of any Go
	// relay on this machine. Zero when not measured.
	Relay float64 `json:"relay_got,omitempty"`
}

func (r *Report) find(path string) *Result {
	for i := range r.Results {
		if r.Results[i].Path == path && r.Results[i].Skipped == "" && r.Results[i].Error == "" {
			return &r.Results[i]
		}
	}
	return nil
}

// Evaluate fills in the targets from the results.
func (r *Report) Evaluate() {
	l, ssh, raw, tun := r.find("quicgate -L"), r.find("ssh -L"), r.find("raw quic-go"), r.find("quicgate TUN")
	relay := r.find("Go TCP relay")
	ratio := func(name string, a, b *Result, get func(*Result) float64, want float64) {
		t := Target{Name: name, Want: fmt.Sprintf(">= %.1fx", want), Unit: "x"}
		if a == nil || b == nil || get(b) == 0 {
			t.Status = "n/a"
		} else {
			t.Got = get(a) / get(b)
			t.Status = verdict(t.Got >= want)
		}
		if a != nil && a == l && relay != nil && b != nil && get(b) > 0 {
			t.Relay = get(relay) / get(b)
		}
		r.Targets = append(r.Targets, t)
	}
	ratio("-L one flow vs ssh -L", l, ssh, func(x *Result) float64 { return x.Gbps1 }, 1.0)
	ratio("-L one flow vs raw quic-go", l, raw, func(x *Result) float64 { return x.Gbps1 }, 0.8)
	ratio("-L 64 flows vs ssh -L", l, ssh, func(x *Result) float64 { return x.Gbps64 }, 1.0)
	ratio("-L new-flow rate vs ssh -L", l, ssh, func(x *Result) float64 { return x.FlowsPerS }, 2.0)
	ratio("TUN one flow vs -L", tun, l, func(x *Result) float64 { return x.Gbps1 }, 0.7)
	idle := func(name string, x *Result, limit float64) {
		t := Target{Name: name + " idle flows: client+server RSS growth", Want: fmt.Sprintf("<= %.0f MiB for 10,000", limit), Unit: "MiB"}
		if x == nil || x.IdleFlows == 0 {
			t.Status = "n/a"
		} else {
			t.Got = x.IdleRSSMiB * 10000 / float64(x.IdleFlows)
			t.Status = verdict(t.Got <= limit)
			if x.IdleFlows != 10000 {
				t.Name += fmt.Sprintf(" (measured %d, scaled)", x.IdleFlows)
			}
		}
		r.Targets = append(r.Targets, t)
	}
	// Idle flows hold no relay buffer and, on the app side of a TUN flow, no goroutine
	// (issue 12); the TUN's are dearer by a gVisor endpoint each.
	idle("-L", l, 100)
	idle("TUN", tun, 200)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// Markdown writes the table with ratios to ssh -L, then the targets.
func (r *Report) Markdown(w io.Writer) {
	ssh := r.find("ssh -L")
	rel := func(v float64, get func(*Result) float64) string {
		if v == 0 {
			return "–"
		}
		s := fmtNum(v)
		if ssh != nil && get(ssh) > 0 {
			s += fmt.Sprintf(" (%.2fx)", v/get(ssh))
		}
		return s
	}
	fmt.Fprintf(w, "| path | 1 flow Gbit/s | 8 flows Gbit/s | 64 flows Gbit/s | new flows/s | p50 µs | p99 µs | idle flows: RSS growth MiB | CPU s/GB |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		if x.Skipped != "" || x.Error != "" {
			why := x.Skipped
			if x.Error != "" {
				why = "error: " + x.Error
			}
			fmt.Fprintf(w, "| %s | skipped: %s |||||||| \n", x.Path, strings.ReplaceAll(why, "|", "/"))
			continue
		}
		idle := "–"
		if x.IdleFlows > 0 {
			idle = fmt.Sprintf("%.0f (%d flows)", x.IdleRSSMiB, x.IdleFlows)
		}
		cpu := "–"
		if x.CPUsPerGB > 0 {
			cpu = fmt.Sprintf("%.2f", x.CPUsPerGB)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Path,
			rel(x.Gbps1, func(r *Result) float64 { return r.Gbps1 }),
			rel(x.Gbps8, func(r *Result) float64 { return r.Gbps8 }),
			rel(x.Gbps64, func(r *Result) float64 { return r.Gbps64 }),
			rel(x.FlowsPerS, func(r *Result) float64 { return r.FlowsPerS }),
			fmtNum(x.P50us), fmtNum(x.P99us), idle, cpu)
	}
	fmt.Fprintf(w, "\nRatios in parentheses are to ssh -L in the same run.")
	if d, sshD := r.find("quicgate -D"), r.find("ssh -D"); d != nil && sshD != nil && sshD.Gbps1 > 0 && sshD.FlowsPerS > 0 {
		fmt.Fprintf(w, " quicgate -D to ssh -D (SOCKS5 CONNECT, a flow per connection): one flow %.2fx, new flows/s %.2fx.", d.Gbps1/sshD.Gbps1, d.FlowsPerS/sshD.FlowsPerS)
	}
	fmt.Fprintf(w, "\n\n| target | want | got | | Go TCP relay gets |\n|---|---|---|---|---|\n")
	for _, t := range r.Targets {
		got, rel := "–", "–"
		if t.Status != "n/a" {
			got = fmt.Sprintf("%.2f%s", t.Got, t.Unit)
		}
		if t.Relay > 0 {
			rel = fmt.Sprintf("%.2f%s", t.Relay, t.Unit)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.Name, t.Want, got, t.Status, rel)
	}
	fmt.Fprintf(w, "\nThe Go TCP relay does -L's TCP work (an accept and a dial a flow, a userspace copy each way) and nothing else; where it misses a target too, no Go tunnel reaches it on this machine.\n")
	udpMarkdown(w, r.UDP)
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", math.Round(v*100)/100)
}

// Save writes the report as JSON to dir/latest.json and a timestamped copy.
func (r *Report) Save(dir string) (string, error) {
	return SaveJSON(dir, "", r.When, r)
}

// SaveJSON writes v as indented JSON to dir/<prefix><UTC time of when>.json and to
// dir/<prefix>latest.json (creating dir), and returns the latter's path.
func SaveJSON(dir, prefix string, when time.Time, v any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	stamped := filepath.Join(dir, prefix+when.UTC().Format("20060102T150405Z")+".json")
	if err := os.WriteFile(stamped, b, 0o644); err != nil {
		return "", err
	}
	latest := filepath.Join(dir, prefix+"latest.json")
	return latest, os.WriteFile(latest, b, 0o644)
}
