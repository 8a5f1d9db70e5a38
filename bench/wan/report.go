package wan

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/quicgate/quicgate/bench"
)

// Direction says which way the bulk data goes, for the report.
const Direction = "bulk data goes from the client side to the server side (an upload, as iperf3's default)"

// Report is a whole run.
type Report struct {
	When      time.Time `json:"when"`
	Command   string    `json:"command"`
	Quick     bool      `json:"quick"`
	Machine   string    `json:"machine"`
	Direction string    `json:"direction"`
	Quicgate  string    `json:"quicgate"`
	// CongestionFlag: whether quicgate got --congestion (else the quicgate rows ran with
	// its default congestion control, whatever their names say).
	CongestionFlag bool      `json:"congestion_flag"`
	Windows        Windows   `json:"windows"`
	Profiles       []Profile `json:"profiles"`
	Rows           []Row     `json:"rows"`
	Cells          []Cell    `json:"cells"`
	UDPWays        []UDPWay  `json:"udp_ways,omitempty"`
	UDP            []UDPCell `json:"udp,omitempty"`
	Targets        []Target  `json:"targets"`
	Notes          []string  `json:"notes,omitempty"` // what the run found about the host
	Duration       string    `json:"duration"`
}

// Cell is one row on one profile.
type Cell struct {
	Row     string `json:"row"`
	Profile string `json:"profile"`
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
	// Goodput at the receiver, Mbit/s.
	Mbps1     float64   `json:"mbps_1_flow,omitempty"`
	Mbps8     float64   `json:"mbps_8_flows,omitempty"`
	FlowMbps8 []float64 `json:"mbps_8_flows_each,omitempty"`
	// The interactive flow (64 bytes each way every 50 ms), alone and during one bulk flow.
	Alone  Latency `json:"interactive_alone"`
	Loaded Latency `json:"interactive_loaded"`
	// LoadedBulkMbps is the bulk flow's goodput while Loaded was measured.
	LoadedBulkMbps float64 `json:"loaded_bulk_mbps,omitempty"`
	// TTFBMs is the median time from a new flow's connect to its first reply byte.
	TTFBMs      float64   `json:"ttfb_ms,omitempty"`
	TTFBSamples []float64 `json:"ttfb_samples_ms,omitempty"`
	// TunnelCPU is the tunnel's processes' CPU during the one-flow bulk, % of one core.
	TunnelCPU float64 `json:"tunnel_cpu_pct,omitempty"`
	Emu       EmuFigs `json:"emulator"`
	// Restarts counts the times the path was set up again because data from a previous
	// measurement was still in it.
	Restarts int `json:"restarts,omitempty"`
}

// Latency is an interactive flow's round trips, in milliseconds; a censored percentile is
// at least the value (replies that never came within the grace time).
type Latency struct {
	P50         float64 `json:"p50_ms,omitempty"`
	P99         float64 `json:"p99_ms,omitempty"`
	P50Censored bool    `json:"p50_censored,omitempty"`
	P99Censored bool    `json:"p99_censored,omitempty"`
	Requests    int     `json:"requests,omitempty"`
	Unanswered  int     `json:"unanswered,omitempty"`
}

// EmuFigs is the emulator's load while a cell ran.
type EmuFigs struct {
	// CPU is the emulator's CPU use, % of one core, per phase; Max the highest.
	CPU map[string]float64 `json:"cpu_pct"`
	Max float64            `json:"cpu_pct_max"`
	// UserCPU is the user-space part of CPU: the emulator's own work, without the kernel's
	// (see emulator.cpu).
	UserCPU map[string]float64 `json:"user_cpu_pct"`
	// Summed over the cell's phases, both directions.
	Packets   int64 `json:"packets"`
	Lost      int64 `json:"lost"`
	QueueFull int64 `json:"queue_full"`
	Late      int64 `json:"late"`
	Oversize  int64 `json:"oversize"`
	TxDropped int64 `json:"tx_dropped"`
	MaxSize   int64 `json:"max_packet"`
	MaxLateUs int64 `json:"max_late_us"`
	// Busy flags a cell where the emulator may have been the bottleneck: near a full core,
	// more than BusyLate of its packets late, or packets dropped before it could read them.
	Busy bool `json:"busy,omitempty"`
}

// BusyCPU is the emulator CPU use (% of one core) from which a result is flagged.
const BusyCPU = 85

// BusyLate is the fraction of late packets (wanlink.LateAfter) from which a result is
// flagged. It is not near zero because this VM alone makes some: even an idle process's
// sleeps of 0.3-1 ms overshoot by more than 2 ms about 0.5 % of the time here (nanosleep,
// timerfd and Python's time.sleep alike, up to 15-19 ms).
const BusyLate = 0.05

// LateFraction is the share of the cell's packets delivered late.
func (e *EmuFigs) LateFraction() float64 {
	if e.Packets == 0 {
		return 0
	}
	return float64(e.Late) / float64(e.Packets)
}

// QueueFullFraction is the share of the cell's packets tail-dropped at the bottleneck.
func (e *EmuFigs) QueueFullFraction() float64 {
	if e.Packets == 0 {
		return 0
	}
	return float64(e.QueueFull) / float64(e.Packets)
}

func (e *EmuFigs) judge() {
	e.Busy = e.Max >= BusyCPU || e.LateFraction() > BusyLate || e.TxDropped > 0
}

// Windows are the measurement lengths of the run.
type Windows struct {
	Bulk1       Dur `json:"bulk_1_flow"`
	Bulk8       Dur `json:"bulk_8_flows"`
	Alone       Dur `json:"interactive_alone"`
	Ramp        Dur `json:"loaded_ramp"`
	Loaded      Dur `json:"interactive_loaded"`
	Interval    Dur `json:"interactive_interval"`
	Grace       Dur `json:"reply_grace"`
	TTFBSamples int `json:"ttfb_samples"`
	UDP         Dur `json:"udp,omitempty"` // each UDP measurement (after a 200 ms warm-up)
}

// Dur is a duration that reads and writes as "3s" in JSON.
type Dur time.Duration

func (d Dur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }
func (d *Dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Dur(v)
	return err
}

func (r *Report) cell(row, profile string) *Cell {
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Row == row && c.Profile == profile && c.Skipped == "" && c.Error == "" {
			return c
		}
	}
	return nil
}

// Save writes the report as JSON to dir/wan-<UTC time>.json and dir/wan-latest.json, and
// returns the latter.
func (r *Report) Save(dir string) (string, error) {
	return bench.SaveJSON(dir, "wan-", r.When, r)
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
