package wan

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func testReport() *Report {
	var profs []Profile
	for _, s := range []string{"100M/40ms/0%", "100M/40ms/1%", "20M/200ms/1%"} {
		p, _ := ParseProfile(s)
		profs = append(profs, p)
	}
	rows := []Row{}
	for _, id := range []string{"ssh-bbr", "quicgate-bbr", "quicgate-tcp", "tun-bbr", "ssh-cubic"} {
		r, _ := FindRow(id)
		rows = append(rows, r)
	}
	return &Report{CongestionFlag: true, Profiles: profs, Rows: rows, Cells: []Cell{
		{Row: "ssh -L (bbr)", Profile: "100M/40ms/0%", Mbps1: 90, Mbps8: 92, TTFBMs: 120, Loaded: Latency{P50: 100, P99: 400, Requests: 100}},
		{Row: "quicgate -L (bbr)", Profile: "100M/40ms/0%", Mbps1: 93, Mbps8: 94, TTFBMs: 41, Loaded: Latency{P50: 45, P99: 60, Requests: 100}},
		{Row: "quicgate TUN (bbr)", Profile: "100M/40ms/0%", Mbps1: 92, TTFBMs: 82},
		{Row: "quicgate -L over TCP (bbr)", Profile: "100M/40ms/0%", Mbps1: 91, Mbps8: 93, TTFBMs: 44, Loaded: Latency{P50: 60, P99: 120, Requests: 100}},
		{Row: "quicgate -L over TCP (bbr)", Profile: "100M/40ms/1%", Mbps1: 72, TTFBMs: 45, Loaded: Latency{P50: 90, P99: 1000, Requests: 100}},
		{Row: "quicgate -L over TCP (bbr)", Profile: "20M/200ms/1%", Mbps1: 12, TTFBMs: 650},
		{Row: "ssh -L (bbr)", Profile: "100M/40ms/1%", Mbps1: 80, TTFBMs: 125, Loaded: Latency{P50: 900, P99: 5000, P99Censored: true, Requests: 100, Unanswered: 3}},
		{Row: "quicgate -L (bbr)", Profile: "100M/40ms/1%", Mbps1: 85, TTFBMs: 42, Loaded: Latency{P50: 50, P99: 200, Requests: 100}},
		{Row: "quicgate TUN (bbr)", Profile: "100M/40ms/1%", Mbps1: 70, TTFBMs: 84},
		{Row: "ssh -L (bbr)", Profile: "20M/200ms/1%", Mbps1: 15, TTFBMs: 600},
		{Row: "quicgate -L (bbr)", Profile: "20M/200ms/1%", Mbps1: 18, TTFBMs: 660},
		{Row: "quicgate TUN (bbr)", Profile: "20M/200ms/1%", Error: "setting up: boom"},
		{Row: "ssh -L (cubic)", Profile: "100M/40ms/0%", Skipped: "no sshd"},
		{Row: "ssh -L (cubic)", Profile: "100M/40ms/1%", Skipped: "no sshd"},
		{Row: "ssh -L (cubic)", Profile: "20M/200ms/1%", Skipped: "no sshd"},
	}}
}

func TestEvaluate(t *testing.T) {
	r := testReport()
	r.Evaluate()
	want := map[string]struct {
		got    float64
		status string
		detail string
	}{
		"-L (bbr) one flow vs the link rate, 100M/40ms/0%":                           {0.93, "PASS", ""},
		"-L (bbr) one flow vs ssh -L (bbr), 100M/40ms/0%":                            {93.0 / 90, "PASS", ""},
		"-L (bbr) one flow vs the link rate, 100M/40ms/0.1%":                         {0, "n/a", ""},
		"-L (bbr) one flow vs ssh -L (bbr), 100M/40ms/0.1%":                          {0, "n/a", ""},
		"-L (bbr) one flow vs the link rate, 100M/40ms/1%":                           {0.85, "MISS", ""},
		"-L (bbr) one flow vs ssh -L (bbr), 100M/40ms/1%":                            {85.0 / 80, "PASS", ""},
		"-L (bbr) one flow vs the link rate, 100M/40ms/3%":                           {0, "n/a", ""},
		"-L (bbr) one flow vs ssh -L (bbr), 100M/40ms/3%":                            {0, "n/a", ""},
		"interactive p99 during a bulk flow, -L (bbr) vs ssh -L (bbr), 100M/40ms/1%": {0.04, "PASS", "ssh's p99 is over 5000 ms: the ratio is at most this"},
		"new flow's first reply byte, -L (bbr) vs ssh -L (bbr), every profile":       {1.1, "MISS", "worst on 20M/200ms/1%"},
		"TUN (bbr) one flow vs -L (bbr), every profile":                              {70.0 / 85, "MISS", "worst on 100M/40ms/1%"},
	}
	if len(r.Targets) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(r.Targets), len(want), r.Targets)
	}
	for _, tg := range r.Targets {
		w, ok := want[tg.Name]
		if !ok {
			t.Errorf("unexpected target %q", tg.Name)
			continue
		}
		if math.Abs(tg.Got-w.got) > 1e-9 || tg.Status != w.status || tg.Detail != w.detail {
			t.Errorf("%s: %.3f %s %q, want %.3f %s %q", tg.Name, tg.Got, tg.Status, tg.Detail, w.got, w.status, w.detail)
		}
	}
}

func TestMarkdown(t *testing.T) {
	r := testReport()
	r.Evaluate()
	var b bytes.Buffer
	r.Markdown(&b)
	md := b.String()
	for _, want := range []string{
		"from the client side to the server side",
		"| row | 100M/40ms/0% | 100M/40ms/1% | 20M/200ms/1% |",
		"| quicgate -L (bbr) | 93.0 (1.03x) | 85.0 (1.06x) | 18.0 (1.20x) |",
		"| ssh -L (bbr) | 100 / 400 (1.00x) | 900 / > 5000 (1.00x) |", // a censored p99 says so
		"| quicgate TUN (bbr) | 92.0 (1.02x) | 70.0 (0.88x) | error (1) |",
		"| quicgate -L over TCP (bbr) | 91.0 (1.01x) | 72.0 (0.90x) | 12.0 (0.80x) |",
		"| quicgate -L over TCP (bbr) | 60.0 / 120 (0.30x) | 90.0 / 1000 (0.20x) | – |",
		"| ssh -L (cubic) | skipped (2) | skipped (2) | skipped (2) |",
		"1. error: setting up: boom — quicgate TUN (bbr) on 20M/200ms/1%",
		"2. skipped: no sshd — ssh -L (cubic) on every profile",
		"| TUN (bbr) one flow vs -L (bbr), every profile | >= 0.90x | 0.82x | MISS | worst on 100M/40ms/1% |",
		"| -L (bbr) one flow vs the link rate, 100M/40ms/3% | >= 0.90x | – | n/a |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "without --congestion") {
		t.Error("markdown warns about --congestion though the flag was passed")
	}
	r.CongestionFlag = false
	b.Reset()
	r.Markdown(&b)
	if !strings.Contains(b.String(), "without --congestion") {
		t.Error("no warning that quicgate ran without --congestion")
	}
}

func TestEmulatorBusy(t *testing.T) {
	for _, tt := range []struct {
		e    EmuFigs
		busy bool
	}{
		{EmuFigs{Max: 50, Packets: 1000, Late: 10}, false},
		{EmuFigs{Max: 90, Packets: 1000}, true},
		{EmuFigs{Max: 20, Packets: 1000, Late: 60}, true},
		{EmuFigs{Max: 20, Packets: 1000, TxDropped: 1}, true},
	} {
		tt.e.judge()
		if tt.e.Busy != tt.busy {
			t.Errorf("%+v: busy %v, want %v", tt.e, tt.e.Busy, tt.busy)
		}
	}
}

func TestUDPMarkdown(t *testing.T) {
	r := testReport()
	r.Windows.UDP = Dur(3 * time.Second)
	r.UDPWays = AllUDPWays()[:2]
	r.UDP = []UDPCell{
		{Way: "direct UDP", Profile: "100M/40ms/0%", Share: 0.5, OfferedMbps: 50, Mbps: 50, LossPct: 0},
		{Way: "direct UDP", Profile: "100M/40ms/0%", Share: 0.9, OfferedMbps: 90, Mbps: 89.5, LossPct: 0.5},
		{Way: "quicgate -U (bbr)", Profile: "100M/40ms/1%", Error: "setting up: boom"},
	}
	var b bytes.Buffer
	r.Markdown(&b)
	md := b.String()
	for _, want := range []string{
		"1200-byte packets paced per ms for 3s",
		"Offered at 90 % of the link rate:",
		"| way | 100M/40ms/0% | 100M/40ms/1% | 20M/200ms/1% |",
		"| direct UDP | 89.5 (0.50%) | – | – |",
		"| quicgate -U (bbr) | – | error: setting up: boom | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
