package wan

import (
	"strings"
	"testing"
	"time"
)

func TestParseProfile(t *testing.T) {
	tests := []struct {
		in, name string
		rate     int64
		rtt      time.Duration
		loss     float64
	}{
		{"100M/40ms/0.1%", "100M/40ms/0.1%", 100e6, 40 * time.Millisecond, 0.001},
		{" 1G/10ms/0% ", "1G/10ms/0%", 1e9, 10 * time.Millisecond, 0},
		{"20M/0.2s/1%", "20M/200ms/1%", 20e6, 200 * time.Millisecond, 0.01},
		{"1500k/1s/3%", "1500k/1s/3%", 1.5e6, time.Second, 0.03},
		{"2.5G/5ms/0%", "2500M/5ms/0%", 2.5e9, 5 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		p, err := ParseProfile(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if p.Name != tt.name || p.Rate != tt.rate || p.RTT != tt.rtt || p.Loss != tt.loss {
			t.Errorf("%q: %+v, want %s %d %v %v", tt.in, p, tt.name, tt.rate, tt.rtt, tt.loss)
		}
		if again, err := ParseProfile(p.Name); err != nil || again != p {
			t.Errorf("%q: its name %q reads back as %+v, %v", tt.in, p.Name, again, err)
		}
	}
	for _, bad := range []string{"", "100M/40ms", "100M/40ms/1", "fast/40ms/1%", "100M/-1ms/1%", "100M/40ms/100%", "100M/40/1%", "0M/40ms/0%"} {
		if _, err := ParseProfile(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDefaultProfilesAndParams(t *testing.T) {
	var names []string
	for _, p := range DefaultProfiles() {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "100M/40ms/0% 100M/40ms/0.1% 100M/40ms/1% 100M/40ms/3% 20M/200ms/1% 1G/10ms/0%" {
		t.Errorf("default profiles %s", got)
	}
	p, _ := ParseProfile("100M/40ms/1%")
	up := p.Params(1)
	// One bandwidth-delay product of queue, half the round trip each way.
	if up.Rate != 100e6 || up.Queue != 500_000 || up.Delay != 20*time.Millisecond || up.Loss != 0.01 || up.Seed != 1 {
		t.Errorf("params %+v", up)
	}
	if p.Label() != "100 Mbit/s, 40ms, 1 %" {
		t.Errorf("label %q", p.Label())
	}
}

func TestFindRow(t *testing.T) {
	for _, s := range []string{"ssh-bbr", "ssh -L (bbr)", "SSH-BBR"} {
		if r, ok := FindRow(s); !ok || r.Name != Baseline {
			t.Errorf("FindRow(%q) = %v, %v", s, r, ok)
		}
	}
	if _, ok := FindRow("ssh"); ok {
		t.Error("FindRow(ssh) matched")
	}
	seen := map[string]bool{}
	for _, r := range AllRows() {
		if seen[r.ID] || seen[r.Name] {
			t.Errorf("row %s/%s twice", r.ID, r.Name)
		}
		seen[r.ID], seen[r.Name] = true, true
	}
	if r, ok := FindRow("quicgate-tcp"); !ok || r.Name != "quicgate -L over TCP (bbr)" || r.Transport != "tcp" || r.TCP != "bbr" || r.QUIC != "bbr" || r.kind != kindQuicgateL {
		t.Errorf("FindRow(quicgate-tcp) = %+v, %v", r, ok)
	}
	if r, _ := FindRow("quicgate-bbr"); r.Transport != "" {
		t.Errorf("quicgate-bbr has transport %q", r.Transport)
	}
	order := runOrder(AllRows())
	for i, r := range order {
		if r.TCP == "cubic" && i > 0 && order[i-1].TCP != "cubic" {
			t.Errorf("run order changes congestion control more than once: %v", order)
		}
	}
}
