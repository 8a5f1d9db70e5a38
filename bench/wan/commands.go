package wan

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/quicgate/quicgate/bench/wanlink"
)

// The modes of qgwan that the harness runs as processes of their own: the link emulator
// (in the host namespace), the destinations (server namespace) and the load generator
// (client namespace). Each takes its arguments and returns an exit status; they live here,
// not in the command, so that tests can run their own binary in these modes.

// LinkCommand runs the emulator between two existing namespaces until its stdin closes or
// a signal comes. It prints {"msg":"link ready",...} once packets move; each "stats" line
// on stdin gets a {"msg":"stats","up":{...},"down":{...}} line back; the last line is
// {"msg":"closed",...} with the final counts.
func LinkCommand(args []string) int {
	fs := flag.NewFlagSet("link", flag.ContinueOnError)
	cns := fs.String("client-ns", "", "client namespace (ip netns)")
	sns := fs.String("server-ns", "", "server namespace")
	caddr := fs.String("client-addr", ClientIP+"/24", "client device address")
	saddr := fs.String("server-addr", ServerIP+"/24", "server device address")
	dev := fs.String("dev", "wan0", "TUN device name in each namespace")
	mtu := fs.Int("mtu", 1500, "MTU of both devices")
	rateS := fs.String("rate", "100M", "rate each way, bit/s (k, M, G suffixes)")
	rtt := fs.Duration("rtt", 40*time.Millisecond, "round trip (each way gets half as delay)")
	lossS := fs.String("loss", "0%", "random loss each way (a percentage)")
	queue := fs.Int("queue", 0, "bottleneck queue, bytes (default: one bandwidth-delay product)")
	seed := fs.Uint64("seed", 1, "loss seed (the server-to-client direction uses seed+1)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the emulator to this file")
	rt := fs.Int("rt-priority", 10, "run in the SCHED_FIFO class at this priority, so that busy endpoints do not delay packets (0: the normal class)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rate, err := ParseRate(*rateS)
	if err != nil {
		return usage("link --rate: %v", err)
	}
	pct, ok := strings.CutSuffix(*lossS, "%")
	loss, err := strconv.ParseFloat(pct, 64)
	if !ok || err != nil || loss < 0 || loss >= 100 {
		return usage("link --loss %q: want a percentage such as 1%%", *lossS)
	}
	ca, err1 := netip.ParsePrefix(*caddr)
	sa, err2 := netip.ParsePrefix(*saddr)
	if *cns == "" || *sns == "" || err1 != nil || err2 != nil {
		return usage("link: --client-ns and --server-ns are required, addresses as CIDR")
	}
	up := wanlink.Symmetric(rate, *rtt, loss/100, *mtu, *seed)
	down := wanlink.Symmetric(rate, *rtt, loss/100, *mtu, *seed+1)
	if *queue > 0 {
		up.Queue, down.Queue = *queue, *queue
	}
	if *rt > 0 {
		if err := wanlink.Realtime(*rt); err != nil {
			return fail(fmt.Errorf("link --rt-priority: %w", err))
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	l, err := wanlink.Open(wanlink.Config{ClientNS: *cns, ServerNS: *sns, Device: *dev, ClientAddr: ca, ServerAddr: sa, MTU: *mtu, Up: up, Down: down})
	if err != nil {
		return fail(err)
	}
	defer l.Close()
	emit := func(msg string) {
		line := StatsLine{Msg: msg, Stats: l.Stats()}
		if err := l.Err(); err != nil {
			line.Err = err.Error()
		}
		b, _ := json.Marshal(line)
		fmt.Println(string(b))
	}
	b, _ := json.Marshal(map[string]any{"msg": "link ready", "up": up, "down": down, "mtu": *mtu, "rt_priority": *rt})
	fmt.Println(string(b))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "stats" {
				emit("stats")
			}
		}
		stop() // stdin closed: the harness is gone or done
	}()
	<-ctx.Done()
	emit("closed")
	return 0
}

// ServeCommand runs the destinations on ip until interrupted; their addresses go to stdout as one
// JSON line.
func ServeCommand(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	ip := fs.String("ip", "0.0.0.0", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	d, err := ListenDests(*ip)
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	line, _ := json.Marshal(map[string]string{"msg": "serving", "sink": d.Sink.Addr().String(), "echo": d.Echo.Addr().String()})
	fmt.Println(string(line))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}

// GenCommand runs one measurement and prints a GenOutput line; exit status 1 on error.
func GenCommand(args []string) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	specJSON := fs.String("spec", "", "the measurement, a Spec in JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var spec Spec
	if err := json.Unmarshal([]byte(*specJSON), &spec); err != nil {
		return usage("gen --spec: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Generate(ctx, spec)
	out := GenOutput{Result: &res}
	if err != nil {
		out = GenOutput{Error: err.Error(), Unsettled: errors.Is(err, ErrUnsettled)}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	if err != nil {
		return 1
	}
	return 0
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
