// Command qgflood measures a quicgate server's memory under floods: Initial packets from many
// loopback source addresses (that never answer, or that answer a Retry and then go silent),
// and one authorized client opening streams as fast as it can (with valid requests to a
// loopback echo, or sending nothing). Each flood gets a fresh server process, whose VmRSS
// and VmHWM it samples from /proc; every second a legitimate client connects and moves
// 64 KiB through the server. Markdown on stdout.
//
//	qgflood [-floods initials,initials-retry,streams,silent-streams] [-duration 20s]
//	        [-settle 12s] [-quicgate BINARY] [-workers N] [-sources N] [-conns N]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/quicgate/quicgate/bench"
	"github.com/quicgate/quicgate/quicmux"
)

type options struct {
	duration, settle time.Duration
	workers          int // Initial floods; the stream floods use 4 a connection
	sources          int
	conns            int
	serverArgs       []string
}

// result is one flood's row.
type result struct {
	kind                          bench.FloodKind
	sent                          int64
	rate                          float64
	base, peak, steady, hwm, post int64
	probes                        []bench.Probe
	floodLog                      []string // the server's lines about the flood
}

func main() { os.Exit(run()) }

func run() int {
	floods := flag.String("floods", "initials,initials-retry,streams,silent-streams", "comma-separated floods to run")
	qg := flag.String("quicgate", "", "quicgate binary to measure (default: build ./cmd/quicgate)")
	var opt options
	flag.DurationVar(&opt.duration, "duration", 20*time.Second, "how long each flood runs")
	flag.DurationVar(&opt.settle, "settle", 12*time.Second, "wait after a flood before the RSS after it is read (the handshake timeout is 10s)")
	flag.IntVar(&opt.workers, "workers", 32, "goroutines sending Initials")
	flag.IntVar(&opt.sources, "sources", 65536, "loopback source addresses the Initials come from (127.16.0.0/12)")
	flag.IntVar(&opt.conns, "conns", 1, "connections the stream-flooding client opens (the server allows 8 a client)")
	serverArgs := flag.String("server-args", "", "extra flags for quicgate server, space-separated")
	flag.Parse()
	if flag.NArg() > 0 {
		return usage("unexpected argument %q", flag.Arg(0))
	}
	opt.serverArgs = strings.Fields(*serverArgs)
	var kinds []bench.FloodKind
	for n := range strings.SplitSeq(*floods, ",") {
		k := bench.FloodKind(strings.TrimSpace(n))
		if !slices.Contains(bench.FloodKinds, k) {
			return usage("-floods: no flood %q (the floods: %v)", k, bench.FloodKinds)
		}
		kinds = append(kinds, k)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "qgflood")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	if *qg == "" {
		*qg = filepath.Join(dir, "quicgate")
		fmt.Fprintln(os.Stderr, "building quicgate")
		if out, err := exec.Command("go", "build", "-o", *qg, "./cmd/quicgate").CombinedOutput(); err != nil {
			return fail(fmt.Errorf("building quicgate (run from the repository root): %w\n%s", err, out))
		}
	}
	dests, err := bench.Listen("127.0.0.1")
	if err != nil {
		return fail(err)
	}
	defer dests.Close()

	var results []result
	for _, k := range kinds {
		fmt.Fprintf(os.Stderr, "flood %s for %v\n", k, opt.duration)
		r, err := flood(ctx, *qg, filepath.Join(dir, string(k)), dests.Echo.Addr().String(), k, opt)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", k, err))
		}
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	report(results, opt, *qg)
	return 0
}

// flood runs one flood against a fresh server.
func flood(ctx context.Context, qg, dir, echo string, kind bench.FloodKind, opt options) (result, error) {
	r := result{kind: kind}
	pin, auth, err := bench.Identities(qg, dir)
	if err != nil {
		return r, err
	}
	// The flooding client has the authorized identity; the probes are another authorized
	// client, whose service the flood must not take away (a flooder's own identity is held
	// to its limits: --max-conns-per-client, --max-flows-per-client).
	id, err := quicmux.LoadOrCreateIdentity(filepath.Join(dir, "client"))
	if err != nil {
		return r, err
	}
	probeID, err := quicmux.LoadOrCreateIdentity(filepath.Join(dir, "probe"))
	if err != nil {
		return r, err
	}
	f, err := os.OpenFile(auth, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return r, err
	}
	_, err = fmt.Fprintln(f, probeID.Fingerprint.String()+" probe")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return r, err
	}
	serverPin, err := quicmux.ParseFingerprint(pin)
	if err != nil {
		return r, err
	}
	args := append([]string{"server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", auth, "--allow", "127.0.0.1/32", "--log-format", "json", "--log-level", "info"}, opt.serverArgs...)
	srv, err := bench.StartProc("quicgate server", exec.Command(qg, args...))
	if err != nil {
		return r, err
	}
	defer srv.Stop()
	ready, err := srv.WaitJSON("server ready", 10*time.Second)
	if err != nil {
		return r, err
	}
	addr, _ := ready["addr"].(string)
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return r, fmt.Errorf("server address %q: %w", addr, err)
	}

	samples := bench.Sample(srv.PID(), 100*time.Millisecond)
	defer samples.Stop()
	// The baseline: the server after one client came and went, idle for a second.
	if _, err := bench.ProbeOnce(ctx, addr, probeID, serverPin, echo); err != nil {
		return r, fmt.Errorf("probe before the flood: %w", err)
	}
	if err := sleep(ctx, time.Second); err != nil {
		return r, err
	}
	r.base = bench.MedianRSS(samples.Take())

	fctx, cancel := context.WithTimeout(ctx, opt.duration)
	defer cancel()
	probes := make(chan []bench.Probe, 1)
	go func() { probes <- probeEvery(fctx, addr, probeID, serverPin, echo) }()
	start := time.Now()
	var last time.Time // the stream floods' last stream, for their rate
	switch kind {
	case bench.FloodInitials, bench.FloodInitialsRetry:
		r.sent = bench.InitialFlood(fctx, udpAddr, opt.sources, opt.workers, kind == bench.FloodInitialsRetry)
	case bench.FloodStreams, bench.FloodSilentStreams:
		r.sent, last, err = bench.StreamFlood(fctx, addr, id, echo, opt.conns, 4, kind == bench.FloodSilentStreams)
	}
	elapsed := time.Since(start)
	if last.After(start) {
		elapsed = last.Sub(start) // held streams stop at MAX_STREAMS: the rate until then
	}
	r.probes = <-probes
	during := samples.Take()
	if err != nil {
		return r, err
	}
	r.rate = float64(r.sent) / elapsed.Seconds()
	r.peak = bench.PeakRSS(during)
	r.steady = bench.MedianRSS(during[len(during)/2:])
	if len(during) > 0 {
		r.hwm = during[len(during)-1].HWM
	}
	if err := sleep(ctx, opt.settle); err != nil {
		return r, err
	}
	if after := samples.Take(); len(after) > 0 {
		r.post = after[len(after)-1].RSS
	}
	for _, l := range srv.Lines() {
		if strings.Contains(l, "handshake") && !strings.Contains(l, "failed") {
			r.floodLog = append(r.floodLog, l)
		}
	}
	return r, nil
}

// probeEvery runs a probe every second until ctx ends.
func probeEvery(ctx context.Context, addr string, id *quicmux.Identity, pin quicmux.Fingerprint, echo string) []bench.Probe {
	var out []bench.Probe
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		at := time.Since(start)
		d, err := bench.ProbeOnce(context.WithoutCancel(ctx), addr, id, pin, echo)
		out = append(out, bench.Probe{At: at, Connect: d, Err: err})
	}
}

func report(results []result, opt options, qg string) {
	fmt.Printf("Server RSS under floods (%s, each flood %v, %d Initial workers, %d sources, %d flooding connection(s); `quicgate server %s`):\n\n",
		qg, opt.duration, opt.workers, opt.sources, opt.conns, strings.Join(opt.serverArgs, " "))
	fmt.Println("| flood | sent | rate /s | RSS before MiB | peak MiB | steady MiB | VmHWM MiB | after MiB | probes ok | connect p50 / max ms |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		ok := 0
		var connects []time.Duration
		for _, p := range r.probes {
			if p.Err == nil {
				ok++
				connects = append(connects, p.Connect)
			}
		}
		slices.Sort(connects)
		lat := "–"
		if len(connects) > 0 {
			lat = fmt.Sprintf("%.1f / %.1f", ms(connects[len(connects)/2]), ms(connects[len(connects)-1]))
		}
		fmt.Printf("| %s | %d | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %d/%d | %s |\n", r.kind, r.sent, r.rate,
			mib(r.base), mib(r.peak), mib(r.steady), mib(r.hwm), mib(r.post), ok, len(r.probes), lat)
	}
	for _, r := range results {
		for _, p := range r.probes {
			if p.Err != nil {
				fmt.Printf("\n%s: probe at %v failed: %v", r.kind, p.At.Round(time.Millisecond), p.Err)
			}
		}
		for _, l := range r.floodLog {
			fmt.Printf("\n%s: server: %s", r.kind, l)
		}
	}
	fmt.Println()
}

func mib(b int64) float64          { return float64(b) / (1 << 20) }
func ms(d time.Duration) float64   { return float64(d) / float64(time.Millisecond) }
func usage(f string, a ...any) int { fmt.Fprintf(os.Stderr, "qgflood: "+f+"\n", a...); return 2 }
func fail(err error) int           { fmt.Fprintf(os.Stderr, "qgflood: %v\n", err); return 1 }
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
