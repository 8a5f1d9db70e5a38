package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"
)

// UDPPathName names the UDP rows in -paths.
const UDPPathName = "quicgate -U"

// UDPResult is one UDP row: packets of UDPPacketSize sent at an offered rate for a while,
// one way, and what arrived.
type UDPResult struct {
	Path        string  `json:"path"` // "direct UDP" or "quicgate -U"
	OfferedMbps float64 `json:"offered_mbps"`
	Mbps        float64 `json:"delivered_mbps"`
	LossPct     float64 `json:"loss_pct"`
	Error       string  `json:"error,omitempty"`
}

// UDPPacketSize is the UDP rows' payload: it fits a QUIC datagram on loopback's path, as a
// DNS or game packet would (a larger one would go on the flow's stream).
const UDPPacketSize = 1200

// udpRates are the offered rates, in Mbit/s.
func udpRates(quick bool) []float64 {
	if quick {
		return []float64{100, 500}
	}
	return []float64{100, 500, 1000, 2000}
}

// RunUDP measures UDP one way at a few offered rates, directly and through quicgate -U, to a
// UDP sink in this process.
func RunUDP(ctx context.Context, env *Env, opt Options) []UDPResult {
	sink, err := newUDPSink()
	if err != nil {
		return []UDPResult{{Path: "direct UDP", Error: err.Error()}}
	}
	defer sink.Close()
	say := func(path, format string, a ...any) {
		fmt.Fprintf(opt.Progress, "[%6.1fs] %-13s %s\n", time.Since(runStart).Seconds(), path, fmt.Sprintf(format, a...))
	}
	var out []UDPResult
	measure := func(path, to string) {
		for _, rate := range udpRates(opt.Quick) {
			r := UDPResult{Path: path, OfferedMbps: rate}
			sent, got, err := udpLoad(ctx, to, sink, rate, opt.Measure)
			if err != nil {
				r.Error = err.Error()
				say(path, "%v Mbit/s offered: %v", rate, err)
			} else {
				r.Mbps = float64(got) * UDPPacketSize * 8 / opt.Measure.Seconds() / 1e6
				if sent > 0 {
					r.LossPct = 100 * float64(sent-got) / float64(sent)
				}
				say(path, "%v Mbit/s offered: %.0f delivered, %.2f%% lost", rate, r.Mbps, r.LossPct)
			}
			out = append(out, r)
		}
	}
	measure("direct UDP", sink.addr())

	dir := filepath.Join(env.Dir, "qg-udp")
	srv, cli, err := startQuicgate(env, dir, "-U", "0:"+sink.addr())
	if err != nil {
		return append(out, UDPResult{Path: UDPPathName, Error: err.Error()})
	}
	defer func() { cli.Stop(); srv.Stop() }()
	fwd, err := cli.WaitJSON("forwarding udp", 10*time.Second)
	if err != nil {
		return append(out, UDPResult{Path: UDPPathName, Error: err.Error()})
	}
	measure(UDPPathName, fwd["listen"].(string))
	return out
}

// udpSink counts the packets it receives.
type udpSink struct {
	c    *net.UDPConn
	got  atomic.Int64
	done chan struct{}
}

func newUDPSink() (*udpSink, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	s := &udpSink{c: c, done: make(chan struct{})}
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

func (s *udpSink) addr() string { return s.c.LocalAddr().String() }
func (s *udpSink) Close()       { _ = s.c.Close(); <-s.done }

// udpLoad sends UDPPacketSize packets to addr at rate Mbit/s for dur (paced per
// millisecond), waits for stragglers, and returns the packets sent and those the sink got.
// The first packets open the flow: a warm-up of 200 ms at the same rate is not counted.
func udpLoad(ctx context.Context, addr string, sink *udpSink, rate float64, dur time.Duration) (sent, got int64, err error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.(*net.UDPConn).SetWriteBuffer(4 << 20)
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
	settle(sink)
	before := sink.got.Load()
	if sent, err = send(dur); err != nil {
		return 0, 0, err
	}
	settle(sink)
	return sent, sink.got.Load() - before, nil
}

// settle waits until the sink has received nothing for 200 ms (packets in queues, up to 2 s).
func settle(s *udpSink) {
	last := s.got.Load()
	for range 10 {
		time.Sleep(200 * time.Millisecond)
		now := s.got.Load()
		if now == last {
			return
		}
		last = now
	}
}

// udpMarkdown writes the UDP rows: delivered rate and loss per offered rate, each path.
func udpMarkdown(w io.Writer, rows []UDPResult) {
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
		if r, ok := byPath[p][0]; ok && r.Error != "" {
			fmt.Fprintf(w, " error: %s |\n", r.Error)
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
