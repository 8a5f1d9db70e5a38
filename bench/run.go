package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Options sizes a run.
type Options struct {
	Quick     bool
	Measure   time.Duration // per throughput, flow-rate and latency measurement
	IdleFlows int
	Only      map[string]bool // run only these paths (all if empty)
	// FlowsOnly measures new flows per second alone (after the warm-up): no bulk, latency or
	// idle flows.
	FlowsOnly bool
	// FlowWorkers is how many workers open flows in the flow-rate measurement; 0 means 8.
	FlowWorkers int
	Progress    io.Writer
}

// DefaultOptions are the default and quick sizes.
func DefaultOptions(quick bool) Options {
	if quick {
		return Options{Quick: true, Measure: 400 * time.Millisecond, IdleFlows: 1000, Progress: os.Stderr}
	}
	return Options{Measure: 3 * time.Second, IdleFlows: 10000, Progress: os.Stderr}
}

// AllPaths in report order.
func AllPaths() []Path {
	return []Path{directPath{}, &rawQUICPath{}, &goRelayPath{}, &quicgateLPath{}, &quicgateLPath{tcp: true}, &tunPath{}, newRootlessPath(), &quicgateDPath{}, &sshPath{}, &sshDPath{}, &socatPath{}}
}

// Run measures every path in turn and returns the report (with targets evaluated).
func Run(ctx context.Context, env *Env, opt Options) *Report {
	rep := &Report{When: time.Now(), Quick: opt.Quick, Machine: machine()}
	start := time.Now()
	for _, p := range AllPaths() {
		if len(opt.Only) > 0 && !opt.Only[p.Name()] {
			continue
		}
		rep.Results = append(rep.Results, runPath(ctx, env, p, opt))
	}
	if !opt.FlowsOnly && (len(opt.Only) == 0 || opt.Only[UDPPathName] || opt.Only[UDPTUNPathName] || opt.Only[UDPWireGuardPathName]) {
		rep.UDP = RunUDP(ctx, env, opt)
	}
	rep.Duration = time.Since(start).Round(time.Second).String()
	rep.Evaluate()
	return rep
}

func runPath(ctx context.Context, env *Env, p Path, opt Options) Result {
	res := Result{Path: p.Name()}
	say := func(format string, a ...any) {
		fmt.Fprintf(opt.Progress, "[%6.1fs] %-13s %s\n", time.Since(runStart).Seconds(), p.Name(), fmt.Sprintf(format, a...))
	}
	defer p.Close()
	dial, err := p.Setup(ctx, env)
	if err != nil {
		if errors.Is(err, ErrSkip) {
			res.Skipped = err.Error()[len(ErrSkip.Error())+2:]
			say("skipped: %s", res.Skipped)
		} else {
			res.Error = err.Error()
			say("failed to set up: %v", err)
		}
		return res
	}
	fail := func(what string, err error) Result {
		res.Error = what + ": " + err.Error()
		say("%s failed: %v", what, err)
		return res
	}
	// Warm up: a connection, windows, caches.
	if _, _, err := Bulk(ctx, dial, 1, opt.Measure/4); err != nil {
		return fail("warm-up", err)
	}
	measureRate := func() error {
		return profileWhile(ctx, env.Profile, p, opt.Measure, opt.Progress, func() (err error) {
			workers := opt.FlowWorkers
			if workers <= 0 {
				workers = 8
			}
			res.FlowsPerS, err = FlowRate(ctx, dial, workers, opt.Measure)
			return err
		})
	}
	if opt.FlowsOnly {
		pids := p.PIDs()
		cpu0 := CPUSeconds(pids)
		if err := measureRate(); err != nil {
			return fail("flow rate", err)
		}
		if flows := res.FlowsPerS * opt.Measure.Seconds(); len(pids) > 0 && flows > 0 {
			// The path's processes' CPU a flow: steadier than the rate on a shared machine.
			say("new flows: %.0f/s, %.0f µs CPU a flow", res.FlowsPerS, (CPUSeconds(pids)-cpu0)/flows*1e6)
		} else {
			say("new flows: %.0f/s", res.FlowsPerS)
		}
		return res
	}
	pids := p.PIDs()
	cpu0 := CPUSeconds(pids)
	bps, moved, err := Bulk(ctx, dial, 1, opt.Measure)
	if err != nil {
		return fail("1 flow", err)
	}
	res.Gbps1 = bps / 1e9
	if len(pids) > 0 && moved > 0 {
		res.CPUsPerGB = (CPUSeconds(pids) - cpu0) / (float64(moved) / 1e9)
	}
	say("1 flow: %.2f Gbit/s", res.Gbps1)
	_, dynamicOnly := p.(dynamicPath)
	for _, n := range []int{8, 64} {
		if dynamicOnly {
			break
		}
		bps, _, err := Bulk(ctx, dial, n, opt.Measure)
		if err != nil {
			return fail(fmt.Sprintf("%d flows", n), err)
		}
		if n == 8 {
			res.Gbps8 = bps / 1e9
		} else {
			res.Gbps64 = bps / 1e9
		}
		say("%d flows: %.2f Gbit/s", n, bps/1e9)
	}
	if err := measureRate(); err != nil {
		return fail("flow rate", err)
	}
	say("new flows: %.0f/s", res.FlowsPerS)
	if dynamicOnly {
		return res
	}
	p50, p99, err := Latency(ctx, dial, opt.Measure/2)
	if err != nil {
		return fail("latency", err)
	}
	res.P50us, res.P99us = float64(p50.Nanoseconds())/1e3, float64(p99.Nanoseconds())/1e3
	say("round trip: p50 %v, p99 %v", p50, p99)
	n := opt.IdleFlows
	if capped, ok := p.(interface{ MaxIdleFlows() int }); ok {
		n = min(n, capped.MaxIdleFlows())
	}
	if len(pids) > 0 && n > 0 {
		time.Sleep(300 * time.Millisecond)
		before := rssBytes(p.PIDs())
		err := Idle(ctx, dial, n, func() {
			res.IdleFlows = n
			res.IdleRSSMiB = float64(rssBytes(p.PIDs())-before) / (1 << 20)
		})
		if err != nil {
			return fail("idle flows", err)
		}
		say("%d idle flows: RSS +%.0f MiB", n, res.IdleRSSMiB)
	}
	return res
}

var runStart = time.Now()

func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n := 0
	model := ""
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
