// Command qgbench measures quicgate next to direct TCP, raw quic-go, ssh -L, ssh -D and socat on
// this machine, and writes a markdown table (stdout), JSON and a PNG chart (bench/results/).
//
//	qgbench [-quick] [-out DIR] [-paths "quicgate -L,ssh -L"] [-quicgate BINARY]
//	        [-measure DURATION] [-flows] [-workers N] [-profile DIR]
//	qgbench serve --ip IP     (the destination servers, run by qgbench itself)
//	qgbench relay --to ADDR [--to ADDR]  (the plain Go TCP relay, run by qgbench itself)
//	qgbench wg --addr CIDR ...  (wireguard-go, the UDP rows' reference peer, run by qgbench itself)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/quicgate/quicgate/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serve(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(relay(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "wg" {
		if err := bench.WireGuard(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "{\"msg\":\"wg failed\",\"error\":%q}\n", err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "short measurements and 1,000 idle flows (under 30 s)")
	out := flag.String("out", "bench/results", "directory for latest.json, a timestamped copy and latest.png")
	only := flag.String("paths", "", "comma-separated path names to run (default: all)")
	qg := flag.String("quicgate", "", "quicgate binary to measure (default: build ./cmd/quicgate)")
	idle := flag.Int("idle", 0, "idle flows to open (default: 1,000 with -quick, else 10,000)")
	measure := flag.Duration("measure", 0, "length of each throughput, flow-rate and latency measurement (default: 400ms with -quick, else 3s)")
	workers := flag.Int("workers", 8, "workers opening flows in the flow-rate measurement (the report's figures are taken with 8)")
	flowsOnly := flag.Bool("flows", false, "measure new flows per second alone (no bulk, latency or idle flows; no UDP rows)")
	profile := flag.String("profile", "", "directory for CPU profiles of quicgate's client and server, taken while each path's flows open (PATH-PROCESS.pprof)")
	flag.Parse()
	if flag.NArg() > 0 {
		return usage("unexpected argument %q", flag.Arg(0))
	}
	var names []string
	for _, p := range bench.AllPaths() {
		names = append(names, p.Name())
	}
	names = append(names, bench.UDPPathName, bench.UDPTUNPathName, bench.UDPWireGuardPathName) // the UDP rows: direct and through -U, TUN, wireguard-go
	opt := bench.DefaultOptions(*quick)
	if *idle > 0 {
		opt.IdleFlows = *idle
	}
	if *measure > 0 {
		opt.Measure = *measure
	}
	opt.FlowsOnly = *flowsOnly
	opt.FlowWorkers = *workers
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return usage("-profile: %v", err)
		}
	}
	if *only != "" {
		opt.Only = map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(names, n) {
				return usage("-paths: no path %q (the paths: %s)", n, strings.Join(names, ", "))
			}
			opt.Only[n] = true
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return usage("-out: %v", err) // found now, not after the whole run
	}
	if *qg != "" {
		if st, err := os.Stat(*qg); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return usage("-quicgate %s: not an executable file", *qg)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "qgbench")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	if *qg == "" {
		*qg = filepath.Join(dir, "quicgate")
		fmt.Fprintln(os.Stderr, "building quicgate")
		if out, err := exec.Command("go", "build", "-o", *qg, "./cmd/quicgate").CombinedOutput(); err != nil {
			return fail(fmt.Errorf("building quicgate (run from the repository root): %v\n%s", err, out))
		}
	}
	// The destinations run in their own process, with their own descriptor budget.
	dests := exec.Command(self, "serve", "--ip", "127.0.0.1")
	dests.Stderr = os.Stderr
	stdout, err := dests.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := dests.Start(); err != nil {
		return fail(err)
	}
	defer func() { _ = dests.Process.Signal(os.Interrupt); _ = dests.Wait() }()
	var addrs struct{ Sink, Echo string }
	if err := json.NewDecoder(stdout).Decode(&addrs); err != nil {
		return fail(fmt.Errorf("destination servers: %w", err))
	}
	env := &bench.Env{Quicgate: *qg, Self: self, Dir: dir, Sink: addrs.Sink, Echo: addrs.Echo, Profile: *profile}
	rep := bench.Run(ctx, env, opt)
	rep.Command = "qgbench " + strings.Join(os.Args[1:], " ")
	rep.Markdown(os.Stdout)
	jsonPath, err := rep.Save(*out)
	if err != nil {
		return fail(err)
	}
	png := filepath.Join(*out, "latest.png")
	if err := rep.Chart(png); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s in %s\n", jsonPath, png, rep.Duration)
	return 0
}

// serve runs the sink and echo servers on ip until interrupted; their addresses go to
// stdout as one JSON line (and to stderr with "msg":"serving" for processes that read logs).
func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	ip := fs.String("ip", "127.0.0.1", "address to serve on")
	_ = fs.Parse(args)
	raiseFileLimit()
	d, err := bench.Listen(*ip)
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	line, _ := json.Marshal(map[string]string{"msg": "serving", "sink": d.Sink.Addr().String(), "echo": d.Echo.Addr().String()})
	fmt.Println(string(line))
	fmt.Fprintln(os.Stderr, string(line))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}

// relay runs the plain TCP relay (bench.Relay) on loopback, one listener per --to, until
// interrupted; it prints {"msg":"relaying","listen":[...]} on stdout once listening.
func relay(args []string) int {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	var to []string
	fs.Func("to", "target address (repeatable)", func(s string) error { to = append(to, s); return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(to) == 0 {
		return usage("relay: at least one --to")
	}
	raiseFileLimit()
	r, err := bench.ListenRelay("127.0.0.1", to)
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	line, _ := json.Marshal(map[string]any{"msg": "relaying", "listen": r.Addrs()})
	fmt.Println(string(line))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}

func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// usage reports a bad command line in one line; exit status 2, as the flag package's.
func usage(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "qgbench: "+format+"\n", a...)
	return 2
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "qgbench: %v\n", err)
	return 1
}
