package wan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/quicgate/quicgate/bench"
	"github.com/quicgate/quicgate/bench/wanlink"
)

// Options size and filter a run.
type Options struct {
	Quick    bool
	Profiles []Profile
	Rows     []Row
	UDP      []UDPWay
	Windows  Windows
	Seed     uint64
	Progress io.Writer
}

// DefaultOptions are a full run (about 30 s a cell: 8 rows x 6 profiles in about 23
// minutes, and the 3 UDP ways about 30 s a profile) or a quick one (for development;
// figures are rougher).
func DefaultOptions(quick bool) Options {
	o := Options{Quick: quick, Profiles: DefaultProfiles(), Rows: AllRows(), UDP: AllUDPWays(), Seed: 1, Progress: os.Stderr}
	o.Windows = Windows{Bulk1: Dur(8 * time.Second), Bulk8: Dur(6 * time.Second), Alone: Dur(3 * time.Second),
		Ramp: Dur(2 * time.Second), Loaded: Dur(5 * time.Second), Interval: Dur(50 * time.Millisecond),
		Grace: Dur(5 * time.Second), TTFBSamples: 5, UDP: Dur(3 * time.Second)}
	if quick {
		o.Windows = Windows{Bulk1: Dur(3 * time.Second), Bulk8: Dur(2 * time.Second), Alone: Dur(time.Second),
			Ramp: Dur(time.Second), Loaded: Dur(2 * time.Second), Interval: Dur(50 * time.Millisecond),
			Grace: Dur(2 * time.Second), TTFBSamples: 3, UDP: Dur(2 * time.Second)}
	}
	return o
}

type harness struct {
	env                Env
	opt                Options
	topo               *Topology
	emu                *emulator
	sinkPort, echoPort string
	start              time.Time

	idOnce    sync.Once
	pin, auth string
	idErr     error
}

func (h *harness) say(who, format string, a ...any) {
	fmt.Fprintf(h.opt.Progress, "[%6.1fs] %-20s %s\n", time.Since(h.start).Seconds(), who, fmt.Sprintf(format, a...))
}

func (h *harness) identities(dir string) (string, string, error) {
	h.idOnce.Do(func() { h.pin, h.auth, h.idErr = bench.Identities(h.env.Quicgate, dir) })
	return h.pin, h.auth, h.idErr
}

// Run measures every row on every profile and returns the report, also when ctx ends it
// early (with what was measured). Everything it set up is gone when it returns; an error
// means it could not set up at all, or could not undo all it did.
func Run(ctx context.Context, env Env, opt Options) (rep *Report, err error) {
	h := &harness{env: env, opt: opt, start: time.Now()}
	rep = &Report{When: time.Now(), Quick: opt.Quick, Machine: machine(), Direction: Direction, Quicgate: env.QuicgateDesc,
		CongestionFlag: env.CongestionFlag, Windows: opt.Windows, Profiles: opt.Profiles, Rows: opt.Rows, UDPWays: opt.UDP}
	defer func() {
		rep.Duration = time.Since(h.start).Round(time.Second).String()
		rep.Evaluate()
	}()
	h.topo, err = NewTopology(fmt.Sprint(os.Getpid()))
	if err != nil {
		return rep, err
	}
	defer func() {
		if cerr := h.topo.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
		}
		h.say("cleanup", "namespaces %s and %s deleted%s", h.topo.Client, h.topo.Server, map[bool]string{true: ", cubic removed from the allowed list again"}[h.topo.AddedCubic])
	}()
	rep.Notes = append(rep.Notes, fmt.Sprintf("net.ipv4.tcp_allowed_congestion_control was %q%s; each row's algorithm is set per namespace.",
		h.topo.AllowedBefore, map[bool]string{true: " (cubic added for the run, then restored)"}[h.topo.AddedCubic]))
	dests, err := bench.StartProc("destinations in "+h.topo.Server, inNS(h.topo.Server, env.Self, "serve", "--ip", "0.0.0.0"))
	if err != nil {
		return rep, err
	}
	defer dests.Stop()
	m, err := dests.WaitJSON("serving", 10*time.Second)
	if err != nil {
		return rep, err
	}
	_, h.sinkPort, _ = net.SplitHostPort(fmt.Sprint(m["sink"]))
	_, h.echoPort, _ = net.SplitHostPort(fmt.Sprint(m["echo"]))
	var udpSink *bench.UDPSink // in this process, its socket made in the server namespace
	var udpPort string
	if len(opt.UDP) > 0 {
		if err := wanlink.InNetns(h.topo.Server, func() (err error) { udpSink, err = bench.ListenUDPSink("0.0.0.0:0"); return err }); err != nil {
			return rep, fmt.Errorf("UDP sink: %w", err)
		}
		defer udpSink.Close()
		_, udpPort, _ = net.SplitHostPort(udpSink.Addr())
	}

	for _, prof := range opt.Profiles {
		if ctx.Err() != nil {
			break
		}
		h.emu, err = startEmulator(env.Self, h.topo, prof, opt.Seed)
		if err != nil {
			h.say(prof.Name, "link emulator failed: %v", err)
			for _, row := range opt.Rows {
				rep.Cells = append(rep.Cells, Cell{Row: row.Name, Profile: prof.Name, Error: "link emulator: " + err.Error()})
			}
			for _, way := range opt.UDP {
				rep.UDP = append(rep.UDP, UDPCell{Way: way.Name, Profile: prof.Name, Error: "link emulator: " + err.Error()})
			}
			continue
		}
		h.say(prof.Name, "link up: %s", prof.Label())
		for _, row := range runOrder(opt.Rows) {
			if ctx.Err() != nil {
				break
			}
			rep.Cells = append(rep.Cells, h.runCell(ctx, row, prof))
		}
		for _, way := range opt.UDP {
			if ctx.Err() != nil {
				break
			}
			rep.UDP = append(rep.UDP, h.runUDP(ctx, way, prof, udpSink, udpPort)...)
		}
		if st, err := h.emu.stats(); err == nil {
			h.say(prof.Name, "link totals: up %d packets (%d lost, %d queue drops, largest %d B, %d over the MTU), down %d packets",
				st.Up.Packets, st.Up.Lost, st.Up.QueueFull, st.Up.MaxSize, st.Up.Oversize, st.Down.Packets)
		}
		h.emu.stop()
		h.emu = nil
	}
	if ctx.Err() != nil {
		rep.Notes = append(rep.Notes, "The run was interrupted: the report has what was measured before.")
	}
	return rep, nil
}

// runOrder groups the rows by kernel congestion control (cubic first) so that it changes at
// most twice a profile; the report keeps the rows' own order.
func runOrder(rows []Row) []Row {
	var out []Row
	for _, cc := range []string{"cubic", "bbr"} {
		for _, r := range rows {
			if r.TCP == cc {
				out = append(out, r)
			}
		}
	}
	for _, r := range rows {
		if r.TCP != "cubic" && r.TCP != "bbr" {
			out = append(out, r)
		}
	}
	return out
}

type phase struct {
	name string
	spec Spec
	put  func(*Cell, Result)
}

func (h *harness) phases() []phase {
	w := h.opt.Windows
	return []phase{
		// First on a fresh, idle path: the new-flow time and the interactive flow alone.
		{"ttfb", Spec{Kind: "ttfb", Samples: w.TTFBSamples}, func(c *Cell, r Result) { c.TTFBMs, c.TTFBSamples = r.MedianTTFBMs, r.TTFBMs }},
		{"alone", Spec{Kind: "latency", Duration: time.Duration(w.Alone), Interval: time.Duration(w.Interval), Grace: time.Duration(w.Grace)},
			func(c *Cell, r Result) { c.Alone = latencyOf(r) }},
		{"bulk1", Spec{Kind: "bulk", Flows: 1, Duration: time.Duration(w.Bulk1)}, func(c *Cell, r Result) { c.Mbps1 = r.Mbps }},
		{"loaded", Spec{Kind: "latency", WithBulk: true, Ramp: time.Duration(w.Ramp), Duration: time.Duration(w.Loaded),
			Interval: time.Duration(w.Interval), Grace: time.Duration(w.Grace)},
			func(c *Cell, r Result) { c.Loaded, c.LoadedBulkMbps = latencyOf(r), r.BulkMbps }},
		{"bulk8", Spec{Kind: "bulk", Flows: 8, Duration: time.Duration(w.Bulk8)}, func(c *Cell, r Result) { c.Mbps8, c.FlowMbps8 = r.Mbps, r.FlowMbps }},
	}
}

func latencyOf(r Result) Latency {
	return Latency{P50: r.P50Ms, P99: r.P99Ms, P50Censored: r.P50Censored, P99Censored: r.P99Censored, Requests: r.Requests, Unanswered: r.Unanswered}
}

func (h *harness) runCell(ctx context.Context, row Row, prof Profile) Cell {
	c := Cell{Row: row.Name, Profile: prof.Name, Emu: EmuFigs{CPU: map[string]float64{}, UserCPU: map[string]float64{}}}
	who := row.Name
	if err := h.topo.SetCongestion(row.TCP); err != nil {
		c.Error = err.Error()
		h.say(who, "%v", err)
		return c
	}
	p := h.newPath(row)
	defer p.stop()
	sink, echo, err := p.start(ctx)
	if err != nil {
		if errors.Is(err, bench.ErrSkip) {
			c.Skipped = strings.TrimPrefix(err.Error(), bench.ErrSkip.Error()+": ")
			h.say(who, "skipped: %s", c.Skipped)
		} else {
			c.Error = "setting up: " + err.Error()
			h.say(who, "failed to set up: %v", err)
		}
		return c
	}
	settle := max(3*time.Second, 10*prof.RTT)
	for _, ph := range h.phases() {
		spec := ph.spec
		spec.Sink, spec.Echo, spec.Settle = sink, echo, settle
		st0, err0 := h.emu.stats()
		u0, k0 := h.emu.cpu()
		tcpu0, t0 := bench.CPUSeconds(p.pids()), time.Now()
		res, err := h.gen(ctx, spec)
		if errors.Is(err, ErrUnsettled) && ctx.Err() == nil {
			// Data of the last measurement is still queued in the tunnel (ssh buffers up
			// to its channel window per flow): start it afresh rather than wait.
			h.say(who, "%s: %v; setting the path up again", ph.name, err)
			c.Restarts++
			p.stop()
			if sink, echo, err = p.start(ctx); err == nil {
				spec.Sink, spec.Echo = sink, echo
				st0, err0 = h.emu.stats()
				u0, k0 = h.emu.cpu()
				tcpu0, t0 = bench.CPUSeconds(p.pids()), time.Now()
				res, err = h.gen(ctx, spec)
			}
		}
		if err != nil {
			c.Error = ph.name + ": " + err.Error()
			h.say(who, "%s failed: %v", ph.name, err)
			return c
		}
		wall := time.Since(t0).Seconds()
		ph.put(&c, res)
		u1, k1 := h.emu.cpu()
		cpu := (u1 - u0 + k1 - k0) / wall * 100
		c.Emu.CPU[ph.name] = round2(cpu)
		c.Emu.UserCPU[ph.name] = round2((u1 - u0) / wall * 100)
		c.Emu.Max = max(c.Emu.Max, round2(cpu))
		if ph.name == "bulk1" {
			c.TunnelCPU = round2((bench.CPUSeconds(p.pids()) - tcpu0) / wall * 100)
		}
		if st1, err1 := h.emu.stats(); err0 == nil && err1 == nil {
			c.Emu.add(st0, st1)
		}
		h.say(who, "%-6s %s (emulator %.0f%% CPU)", ph.name, summary(ph.name, res), cpu)
	}
	c.Emu.judge()
	return c
}

func summary(name string, r Result) string {
	switch name {
	case "ttfb":
		return fmt.Sprintf("first reply byte: median %.1f ms of %v", r.MedianTTFBMs, r.TTFBMs)
	case "alone", "loaded":
		s := fmt.Sprintf("round trip p50/p99 %s ms (%d requests, %d unanswered)", latText(latencyOf(r)), r.Requests, r.Unanswered)
		if name == "loaded" {
			s += fmt.Sprintf(", bulk meanwhile %.1f Mbit/s", r.BulkMbps)
		}
		return s
	}
	return fmt.Sprintf("%.1f Mbit/s", r.Mbps)
}

func (e *EmuFigs) add(a, b wanlink.Stats) {
	for _, d := range [][2]wanlink.DirStats{{a.Up, b.Up}, {a.Down, b.Down}} {
		e.Packets += d[1].Packets - d[0].Packets
		e.Lost += d[1].Lost - d[0].Lost
		e.QueueFull += d[1].QueueFull - d[0].QueueFull
		e.Late += d[1].Late - d[0].Late
		e.Oversize += d[1].Oversize - d[0].Oversize
		e.TxDropped += int64(d[1].TxDropped - d[0].TxDropped)
		e.MaxSize = max(e.MaxSize, d[1].MaxSize)
		e.MaxLateUs = max(e.MaxLateUs, d[1].MaxLateUs)
	}
}

// GenOutput is what qgwan gen prints: a result or an error.
type GenOutput struct {
	Result    *Result `json:"result,omitempty"`
	Error     string  `json:"error,omitempty"`
	Unsettled bool    `json:"unsettled,omitempty"`
}

// gen runs one measurement in the client namespace (qgwan gen) and returns its result.
func (h *harness) gen(ctx context.Context, spec Spec) (Result, error) {
	b, _ := json.Marshal(spec)
	limit := spec.Settle + spec.Duration + spec.Ramp + spec.Grace + time.Duration(spec.Samples)*30*time.Second + time.Minute
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.topo.Client, h.env.Self, "gen", "--spec", string(b))
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out GenOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return Result{}, fmt.Errorf("qgwan gen: %v: %s%s", runErr, strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	switch {
	case out.Unsettled:
		return Result{}, fmt.Errorf("%w%s", ErrUnsettled, strings.TrimPrefix(out.Error, ErrUnsettled.Error()))
	case out.Error != "":
		return Result{}, errors.New(out.Error)
	case out.Result == nil:
		return Result{}, fmt.Errorf("qgwan gen: no result: %v", runErr)
	}
	return *out.Result, nil
}

func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n, model := 0, ""
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			n++
			if _, v, found := strings.Cut(name, ": "); found && model == "" {
				model = v
			}
		}
	}
	return fmt.Sprintf("%d × %s", n, model)
}
