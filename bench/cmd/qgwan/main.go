// Command qgwan is the WAN-profile benchmark (make bench-wan): direct TCP, ssh -L and
// quicgate carrying TCP flows across a userspace-emulated link (rate, queue, delay, loss)
// between two network namespaces. It needs root. Markdown on stdout, progress on stderr,
// JSON and a PNG chart in bench/results/ (wan-<time>.json, wan-latest.json, wan-latest.png).
//
//	qgwan [-quick] [-profiles 100M/40ms/1%,...] [-rows ssh-bbr,quicgate-bbr,...|none] [-udp direct,quicgate,tun|none] [-out DIR]
//	      [-quicgate BINARY] [-congestion-flag=false] [-seed N]
//	qgwan link --client-ns NS --server-ns NS --rate R --rtt D --loss P%   (the emulator)
//	qgwan serve --ip IP        (the metering sink and the echo, in the server namespace)
//	qgwan gen --spec JSON      (one measurement, in the client namespace)
//	qgwan render REPORT.json [CHART.png]   (the markdown and chart of a saved run again)
//
// link, serve and gen are run by qgwan itself.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/quicgate/quicgate/bench/wan"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "link":
			os.Exit(wan.LinkCommand(os.Args[2:]))
		case "serve":
			os.Exit(wan.ServeCommand(os.Args[2:]))
		case "gen":
			os.Exit(wan.GenCommand(os.Args[2:]))
		case "render":
			os.Exit(render(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("qgwan", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "short measurements (about 10 minutes for every row and profile; rougher figures)")
	out := fs.String("out", "bench/results", "directory for wan-latest.json, a timestamped copy and wan-latest.png")
	profiles := fs.String("profiles", "", "comma-separated RATE/RTT/LOSS% profiles (default: "+names(wan.DefaultProfiles())+")")
	rows := fs.String("rows", "", "comma-separated rows by id or name, or none (default: all: "+rowIDs()+")")
	udp := fs.String("udp", "", "comma-separated UDP ways by id or name, or none (default: all: "+udpIDs()+")")
	qg := fs.String("quicgate", "", "quicgate binary to measure (default: build ./cmd/quicgate)")
	ccFlag := fs.Bool("congestion-flag", true, "pass --congestion to quicgate (false: its rows run with quicgate's default congestion control)")
	seed := fs.Uint64("seed", 1, "seed of the emulated loss")
	fs.SetOutput(discard{})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "qgwan: TCP and UDP flows' ways across an emulated WAN link (needs root). Flags:")
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
			return 0
		}
		return usage("%v", err)
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	opt := wan.DefaultOptions(*quick)
	opt.Seed = *seed
	if *profiles != "" {
		opt.Profiles = nil
		for _, s := range strings.Split(*profiles, ",") {
			p, err := wan.ParseProfile(s)
			if err != nil {
				return usage("-profiles: %v", err)
			}
			opt.Profiles = append(opt.Profiles, p)
		}
	}
	if *rows == "none" {
		opt.Rows = nil
	} else if *rows != "" {
		opt.Rows = nil
		for _, s := range strings.Split(*rows, ",") {
			r, ok := wan.FindRow(strings.TrimSpace(s))
			if !ok {
				return usage("-rows: no row %q (the rows: %s)", s, rowIDs())
			}
			opt.Rows = append(opt.Rows, r)
		}
	}
	if *udp == "none" {
		opt.UDP = nil
	} else if *udp != "" {
		opt.UDP = nil
		for _, s := range strings.Split(*udp, ",") {
			w, ok := wan.FindUDPWay(strings.TrimSpace(s))
			if !ok {
				return usage("-udp: no UDP way %q (the ways: %s)", s, udpIDs())
			}
			opt.UDP = append(opt.UDP, w)
		}
	}
	if len(opt.Rows) == 0 && len(opt.UDP) == 0 {
		return usage("-rows none -udp none: nothing to measure")
	}
	if *qg != "" {
		if st, err := os.Stat(*qg); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return usage("-quicgate %s: not an executable file", *qg)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return usage("-out: %v", err)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "qgwan: needs root (it makes network namespaces, TUN devices and sets sysctls)")
		return 1
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Fprintln(os.Stderr, "qgwan: needs ip (iproute2; 'make deps' installs it)")
		return 1
	}

	// Signals end the run through ctx; the deferred cleanup then removes everything.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "qgwan")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	env := wan.Env{Quicgate: *qg, Self: self, Dir: dir, CongestionFlag: *ccFlag, QuicgateDesc: *qg}
	if env.Quicgate == "" {
		env.QuicgateDesc = sourceState()
		env.Quicgate = filepath.Join(dir, "quicgate")
		fmt.Fprintln(os.Stderr, "building quicgate")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", env.Quicgate, "./cmd/quicgate").CombinedOutput(); err != nil {
			// The other rows still run; the quicgate ones report this.
			env.QuicgateErr = fmt.Errorf("building quicgate (run from the repository root, or give -quicgate): %v: %s", err, strings.TrimSpace(string(out)))
			fmt.Fprintln(os.Stderr, env.QuicgateErr)
		}
	}
	rep, err := wan.Run(ctx, env, opt)
	rep.Command = strings.TrimSpace("qgwan " + strings.Join(args, " "))
	rep.Markdown(os.Stdout)
	if err != nil {
		return fail(err)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "qgwan: interrupted; nothing written to", *out)
		return 1
	}
	jsonPath, err := rep.Save(*out)
	if err != nil {
		return fail(err)
	}
	if len(rep.Rows) == 0 { // -rows none: the chart draws the TCP rows only
		fmt.Fprintf(os.Stderr, "wrote %s (no chart: no TCP rows) in %s\n", jsonPath, rep.Duration)
		return 0
	}
	png := filepath.Join(*out, "wan-latest.png")
	if err := rep.Chart(png); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s in %s\n", jsonPath, png, rep.Duration)
	return 0
}

// render prints a saved report's markdown (targets evaluated again) and draws its chart.
func render(args []string) int {
	if len(args) < 1 || len(args) > 2 {
		return usage("render REPORT.json [CHART.png]")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return fail(err)
	}
	var rep wan.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fail(fmt.Errorf("%s: %w", args[0], err))
	}
	rep.Evaluate()
	rep.Markdown(os.Stdout)
	if len(args) == 2 {
		if err := rep.Chart(args[1]); err != nil {
			return fail(err)
		}
	}
	return 0
}

// sourceState says what the quicgate it builds is made of: the commit, and how many files
// outside bench/ differ from it (other work in progress in the same tree).
func sourceState() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "built from ./cmd/quicgate (not a git checkout)"
	}
	st, _ := exec.Command("git", "status", "--porcelain", "--", ".", ":!bench").Output()
	n := len(strings.Fields(strings.TrimSpace(string(st)))) / 2
	desc := "built from the working tree at " + strings.TrimSpace(string(head))
	if n > 0 {
		desc += fmt.Sprintf(" with %d uncommitted changes outside bench/", n)
	}
	return desc
}

func names(ps []wan.Profile) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name)
	}
	return strings.Join(s, ",")
}

func rowIDs() string {
	var s []string
	for _, r := range wan.AllRows() {
		s = append(s, r.ID)
	}
	return strings.Join(s, ", ")
}

func udpIDs() string {
	var s []string
	for _, w := range wan.AllUDPWays() {
		s = append(s, w.ID)
	}
	return strings.Join(s, ", ")
}

// usage reports a bad command line in one line; exit status 2, as the flag package's.
func usage(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "qgwan: "+format+"\n", a...)
	return 2
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "qgwan: %v\n", err)
	return 1
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
