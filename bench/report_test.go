package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestEvaluateTargetsAndRelayColumn(t *testing.T) {
	rep := &Report{Results: []Result{
		{Path: "raw quic-go", Gbps1: 10},
		{Path: "Go TCP relay", Gbps1: 6, Gbps64: 8, FlowsPerS: 3000},
		{Path: "quicgate -L", Gbps1: 4, Gbps64: 3, FlowsPerS: 2500, IdleFlows: 1000, IdleRSSMiB: 8},
		{Path: "quicgate TUN", Gbps1: 3, IdleFlows: 10000, IdleRSSMiB: 250},
		{Path: "ssh -L", Gbps1: 2, Gbps64: 2, FlowsPerS: 2000},
	}}
	rep.Evaluate()
	want := map[string]struct {
		got, relay float64
		status     string
	}{
		"-L one flow vs ssh -L":      {2, 3, "PASS"},
		"-L one flow vs raw quic-go": {0.4, 0.6, "MISS"},
		"-L 64 flows vs ssh -L":      {1.5, 4, "PASS"},
		"-L new-flow rate vs ssh -L": {1.25, 1.5, "MISS"},
		"TUN one flow vs -L":         {0.75, 0, "PASS"},
		"-L idle flows: client+server RSS growth (measured 1000, scaled)": {80, 0, "PASS"},
		"TUN idle flows: client+server RSS growth":                        {250, 0, "MISS"},
	}
	if len(rep.Targets) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(rep.Targets), len(want), rep.Targets)
	}
	for _, tg := range rep.Targets {
		w, ok := want[tg.Name]
		if !ok {
			t.Errorf("unexpected target %q", tg.Name)
			continue
		}
		if math.Abs(tg.Got-w.got) > 1e-9 || math.Abs(tg.Relay-w.relay) > 1e-9 || tg.Status != w.status {
			t.Errorf("%s: got %.2f relay %.2f %s, want %.2f relay %.2f %s", tg.Name, tg.Got, tg.Relay, tg.Status, w.got, w.relay, w.status)
		}
	}
	var md bytes.Buffer
	rep.Markdown(&md)
	if !strings.Contains(md.String(), "| -L new-flow rate vs ssh -L | >= 2.0x | 1.25x | MISS | 1.50x |") {
		t.Errorf("markdown lacks the relay's column:\n%s", md.String())
	}
}

// Without the relay's row (or with the path skipped), the column says so instead of a ratio.
func TestEvaluateWithoutRelayOrPeers(t *testing.T) {
	rep := &Report{Results: []Result{
		{Path: "Go TCP relay", Skipped: "not run"},
		{Path: "quicgate -L", Gbps1: 4},
	}}
	rep.Evaluate()
	for _, tg := range rep.Targets {
		if tg.Relay != 0 {
			t.Errorf("%s: relay ratio %.2f from a skipped relay", tg.Name, tg.Relay)
		}
		if strings.Contains(tg.Name, "ssh") && tg.Status != "n/a" {
			t.Errorf("%s: %s without ssh", tg.Name, tg.Status)
		}
	}
}
