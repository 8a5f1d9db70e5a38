package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
)

// UDPPathName and UDPTUNPathName name the UDP rows in -paths: the first selects direct UDP
// and quicgate -U, the second direct UDP and quicgate TUN.
const (
	UDPPathName    = "quicgate -U"
	UDPTUNPathName = "quicgate TUN UDP"
)

// UDPResult is one UDP row: packets of UDPPacketSize sent at an offered rate for a while,
// one way, and what arrived.
type UDPResult struct {
	Path        string  `json:"path"` // "direct UDP", "quicgate -U" or "quicgate TUN"
	OfferedMbps float64 `json:"offered_mbps"`
	Mbps        float64 `json:"delivered_mbps"`
	LossPct     float64 `json:"loss_pct"`
	// Seconds is the measured window (the TUN row's is shorter, to keep the run short).
	Seconds float64 `json:"seconds,omitempty"`
	// IdleFlows, on the idle row ("quicgate -U idle"), is how many idle UDP flows were held
	// open, and ClientKiB and ServerKiB what each cost the client's and the server's RSS.
	IdleFlows int     `json:"idle_flows,omitempty"`
	ClientKiB float64 `json:"client_kib_per_idle_flow,omitempty"`
	ServerKiB float64 `json:"server_kib_per_idle_flow,omitempty"`
	Error     string  `json:"error,omitempty"`
	Skipped   string  `json:"skipped,omitempty"`
}

// UDPPacketSize is the UDP rows' payload: it fits a QUIC datagram on loopback's path, as a
// DNS or game packet would (a larger one would go on the flow's stream).
const UDPPacketSize = 1200

// udpRates are the offered rates, in Mbit/s.
func udpRates(quick bool) []float64 {
	if quick {
		return []float64{100, 500}
	}
	// 1500 and 3000: the issue-22 target (1.5 Gbit/s delivered, and at twice that offered
	// no collapse below 0.9 of it).
	return []float64{100, 500, 1000, 1500, 2000, 3000}
}

// udpTUNWindow caps the TUN row's measurement: its namespaces and processes already cost a
// second or two to set up, and a second at each rate is over 10,000 packets at 100 Mbit/s.
const udpTUNWindow = time.Second

// RunUDP measures UDP one way at a few offered rates, directly and through quicgate -U, to a
// UDP sink in this process, and through quicgate TUN (as root) to a sink in the TUN path's
// server namespace.
func RunUDP(ctx context.Context, env *Env, opt Options) []UDPResult {
	sink, err := ListenUDPSink("127.0.0.1:0")
	if err != nil {
		return []UDPResult{{Path: "direct UDP", Error: err.Error()}}
	}
	defer sink.Close()
	say := func(path, format string, a ...any) {
		fmt.Fprintf(opt.Progress, "[%6.1fs] %-13s %s\n", time.Since(runStart).Seconds(), path, fmt.Sprintf(format, a...))
	}
	var out []UDPResult
	measure := func(path string, dial func() (net.Conn, error), sink *UDPSink, window time.Duration) {
		for _, rate := range udpRates(opt.Quick) {
			r := UDPResult{Path: path, OfferedMbps: rate, Seconds: window.Seconds()}
			sent, got, err := UDPLoad(ctx, dial, sink, rate, window, 200*time.Millisecond)
			if err != nil {
				r.Error = err.Error()
				say(path, "%v Mbit/s offered: %v", rate, err)
			} else {
				r.Mbps, r.LossPct = UDPFigures(sent, got, window)
				say(path, "%v Mbit/s offered: %.0f delivered, %.2f%% lost", rate, r.Mbps, r.LossPct)
			}
			out = append(out, r)
		}
	}
	all := len(opt.Only) == 0
	measure("direct UDP", dialUDP(sink.Addr()), sink, opt.Measure)
	if all || opt.Only[UDPPathName] {
		out = append(out, udpThroughU(env, sink, opt.Measure, measure)...)
		out = append(out, udpIdleThroughU(ctx, env, opt.IdleFlows, say))
	}
	if all || opt.Only[UDPTUNPathName] {
		out = append(out, udpThroughTUN(ctx, env, opt, measure)...)
	}
	if all || opt.Only[UDPWireGuardPathName] {
		out = append(out, udpThroughWireGuard(ctx, env, opt, measure)...)
	}
	return out
}

type udpMeasure func(path string, dial func() (net.Conn, error), sink *UDPSink, window time.Duration)

func dialUDP(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.Dial("udp", addr) }
}

// udpThroughU measures quicgate -U on loopback; it returns only a row that failed to set up.
func udpThroughU(env *Env, sink *UDPSink, window time.Duration, measure udpMeasure) []UDPResult {
	dir := filepath.Join(env.Dir, "qg-udp")
	srv, cli, err := startQuicgate(env, dir, "-U", "0:"+sink.Addr())
	if err != nil {
		return []UDPResult{{Path: UDPPathName, Error: err.Error()}}
	}
	defer func() { cli.Stop(); srv.Stop() }()
	fwd, err := cli.WaitJSON("forwarding udp", 10*time.Second)
	if err != nil {
		return []UDPResult{{Path: UDPPathName, Error: err.Error()}}
	}
	measure(UDPPathName, dialUDP(fwd["listen"].(string)), sink, window)
	return nil
}

// UDPIdlePathName names the idle UDP flows row.
const UDPIdlePathName = "quicgate -U idle"

// udpIdlePerPort is how many sources each -U port of the idle row takes (a -U's default
// bound on its flows is 1,024).
const udpIdlePerPort = 1000

// udpIdleThroughU opens n UDP flows through quicgate -U to a UDP echo server (each from a
// socket of its own, so a source and a flow of its own; over n/1000 ports), proves each with
// one echoed packet, and reports what the idle flows cost the client's and the server's RSS.
func udpIdleThroughU(ctx context.Context, env *Env, n int, say func(path, format string, a ...any)) UDPResult {
	r := UDPResult{Path: UDPIdlePathName, IdleFlows: n}
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer echo.Close()
	_ = echo.SetReadBuffer(4 << 20)
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	ports := (n + udpIdlePerPort - 1) / udpIdlePerPort
	var args []string
	for range ports {
		args = append(args, "-U", "0:"+echo.LocalAddr().String())
	}
	srv, cli, err := startQuicgate(env, filepath.Join(env.Dir, "qg-udp-idle"), args...)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer func() { cli.Stop(); srv.Stop() }()
	var listen []string
	for range ports {
		fwd, err := cli.WaitJSON("forwarding udp", 10*time.Second)
		if err != nil {
			r.Error = err.Error()
			return r
		}
		listen = append(listen, fwd["listen"].(string))
	}
	// One flow first, so that the measure leaves out the connection's own set-up.
	warm, err := udpIdleFlow(listen[0])
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer warm.Close()
	cliBefore, srvBefore := rssBytes([]int{cli.PID()}), rssBytes([]int{srv.PID()})
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	work := make(chan int)
	errc := make(chan error, 16)
	for range 16 {
		go func() {
			for i := range work {
				c, err := udpIdleFlow(listen[i/udpIdlePerPort])
				if err != nil {
					errc <- fmt.Errorf("idle flow %d: %w", i, err)
					return
				}
				conns[i] = c
			}
			errc <- nil
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	for range 16 {
		if e := <-errc; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.ClientKiB = float64(rssBytes([]int{cli.PID()})-cliBefore) / 1024 / float64(n)
	r.ServerKiB = float64(rssBytes([]int{srv.PID()})-srvBefore) / 1024 / float64(n)
	say(UDPIdlePathName, "%d idle flows: client +%.1f KiB a flow, server +%.1f KiB a flow", n, r.ClientKiB, r.ServerKiB)
	return r
}

// udpIdleFlow opens one flow through a -U port: a socket of its own, proven with an echo
// (sent again every 200 ms, UDP may lose it; at most 5 s).
func udpIdleFlow(port string) (net.Conn, error) {
	c, err := net.Dial("udp", port)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64)
	for try := 0; try < 25; try++ {
		if _, err := c.Write([]byte("idle")); err != nil {
			_ = c.Close()
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			return c, nil
		}
	}
	_ = c.Close()
	return nil, errors.New("no echo within 5 s")
}

// udpThroughTUN measures quicgate TUN in the TCP TUN row's topology: the sender's socket is
// made in namespace A, where 10.98.0.0/16 is routed into the TUN, and the sink's in B on
// 10.98.0.5, behind the quicgate server. It returns only a row that could not set up.
func udpThroughTUN(ctx context.Context, env *Env, opt Options, measure udpMeasure) []UDPResult {
	const name = "quicgate TUN"
	p := &tunPath{}
	defer p.Close()
	if _, err := p.Setup(ctx, env); err != nil {
		if errors.Is(err, ErrSkip) {
			return []UDPResult{{Path: name, Skipped: strings.TrimPrefix(err.Error(), ErrSkip.Error()+": ")}}
		}
		return []UDPResult{{Path: name, Error: err.Error()}}
	}
	if err := measureAcross(name, p.nsA, p.b, opt, measure); err != nil {
		return []UDPResult{{Path: name, Error: err.Error()}}
	}
	return nil
}

// measureAcross measures UDP through a tunnel in the TUN row's topology (twoNamespaces):
// the sink on 10.98.0.5 in namespace b, the sender's sockets made in nsA. An error is one
// before the measurement.
func measureAcross(name string, nsA netns.NsHandle, b string, opt Options, measure udpMeasure) error {
	nsB, err := netns.GetFromName(b)
	if err != nil {
		return err
	}
	defer nsB.Close()
	var sink *UDPSink
	if err := inNetns(nsB, func() (err error) { sink, err = ListenUDPSink("10.98.0.5:0"); return err }); err != nil {
		return err
	}
	defer sink.Close()
	dial := func() (c net.Conn, err error) {
		err = inNetns(nsA, func() error { c, err = net.Dial("udp", sink.Addr()); return err })
		return c, err
	}
	measure(name, dial, sink, min(opt.Measure, udpTUNWindow))
	return nil
}

// UDPSink counts the packets it receives.
type UDPSink struct {
	c    *net.UDPConn
	got  atomic.Int64
	done chan struct{}
}

// ListenUDPSink listens on addr (in the calling thread's network namespace) and counts.
func ListenUDPSink(addr string) (*UDPSink, error) {
	la, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	s := &UDPSink{c: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1<<16)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				return
			}
			s.got.Add(1)
		}
	}()
	return s, nil
}

// Addr is the address the sink listens on.
func (s *UDPSink) Addr() string { return s.c.LocalAddr().String() }

// Close stops the sink and waits for its reader.
func (s *UDPSink) Close() { _ = s.c.Close(); <-s.done }

// UDPFigures turns a measurement's packet counts into the delivered rate (Mbit/s of payload
// over window) and the loss (% of the packets sent).
func UDPFigures(sent, got int64, window time.Duration) (mbps, lossPct float64) {
	mbps = float64(got) * UDPPacketSize * 8 / window.Seconds() / 1e6
	if sent > 0 {
		lossPct = 100 * float64(sent-got) / float64(sent)
	}
	return mbps, lossPct
}

// UDPLoad sends UDPPacketSize packets on a socket from dial (a connected UDP socket) at
// rate Mbit/s for dur (paced per millisecond), waits for stragglers, and returns the packets
// sent and those the sink got. The first packets open the flow: a warm-up of 200 ms at the
// same rate is not counted. Before and after the measured window it waits until the sink
// has had nothing for quiet (200 ms on loopback; a few round trips on a long path, where a
// tunnel may hold packets for a retransmission timeout).
func UDPLoad(ctx context.Context, dial func() (net.Conn, error), sink *UDPSink, rate float64, dur, quiet time.Duration) (sent, got int64, err error) {
	c, err := dial()
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetWriteBuffer(4 << 20)
	}
	pps := rate * 1e6 / 8 / UDPPacketSize
	send := func(d time.Duration) (int64, error) {
		p := make([]byte, UDPPacketSize)
		start := time.Now()
		var n int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			el := time.Since(start)
			if el >= d {
				return n, nil
			}
			for owed := int64(el.Seconds()*pps) + 1; n < owed; n++ {
				if _, err := c.Write(p); err != nil {
					return n, err // ECONNREFUSED: the path is not up
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return n, ctx.Err()
			}
		}
	}
	if _, err := send(200 * time.Millisecond); err != nil {
		return 0, 0, err
	}
	settle(sink, quiet)
	before := sink.got.Load()
	if sent, err = send(dur); err != nil {
		return 0, 0, err
	}
	settle(sink, quiet)
	return sent, sink.got.Load() - before, nil
}

// settle waits until the sink has received nothing for quiet (packets in queues; at most
// ten times quiet).
func settle(s *UDPSink, quiet time.Duration) {
	last := s.got.Load()
	for range 10 {
		time.Sleep(quiet)
		now := s.got.Load()
		if now == last {
			return
		}
		last = now
	}
}

// udpMarkdown writes the UDP rows: delivered rate and loss per offered rate, each path.
func udpMarkdown(w io.Writer, rows []UDPResult) {
	var idle []UDPResult
	rows = slices.DeleteFunc(slices.Clone(rows), func(r UDPResult) bool {
		if r.Path == UDPIdlePathName {
			idle = append(idle, r)
			return true
		}
		return false
	})
	defer func() {
		for _, r := range idle {
			if r.Error != "" {
				fmt.Fprintf(w, "\nIdle UDP flows through quicgate -U: error: %s\n", r.Error)
				continue
			}
			fmt.Fprintf(w, "\nIdle UDP flows through quicgate -U (%d, each proven with one echoed packet): client +%.1f KiB a flow, server +%.1f KiB a flow (RSS).\n", r.IdleFlows, r.ClientKiB, r.ServerKiB)
		}
	}()
	if len(rows) == 0 {
		return
	}
	var rates []float64
	seen := map[float64]bool{}
	byPath := map[string]map[float64]UDPResult{}
	var paths []string
	for _, r := range rows {
		if !seen[r.OfferedMbps] && r.OfferedMbps > 0 {
			seen[r.OfferedMbps] = true
			rates = append(rates, r.OfferedMbps)
		}
		if byPath[r.Path] == nil {
			byPath[r.Path] = map[float64]UDPResult{}
			paths = append(paths, r.Path)
		}
		byPath[r.Path][r.OfferedMbps] = r
	}
	fmt.Fprintf(w, "\n\nUDP, one flow one way, %d-byte packets: delivered Mbit/s (loss %%) at each offered rate.\n\n| path |", UDPPacketSize)
	for _, rate := range rates {
		fmt.Fprintf(w, " %.0f Mbit/s |", rate)
	}
	fmt.Fprintf(w, "\n|---|")
	for range rates {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintln(w)
	for _, p := range paths {
		fmt.Fprintf(w, "| %s |", p)
		if r, ok := byPath[p][0]; ok && (r.Error != "" || r.Skipped != "") {
			if r.Skipped != "" {
				fmt.Fprintf(w, " skipped: %s |\n", r.Skipped)
			} else {
				fmt.Fprintf(w, " error: %s |\n", r.Error)
			}
			continue
		}
		for _, rate := range rates {
			r, ok := byPath[p][rate]
			switch {
			case !ok:
				fmt.Fprintf(w, " – |")
			case r.Error != "":
				fmt.Fprintf(w, " error: %s |", r.Error)
			default:
				fmt.Fprintf(w, " %.0f (%.2f%%) |", r.Mbps, r.LossPct)
			}
		}
		fmt.Fprintln(w)
	}
}
