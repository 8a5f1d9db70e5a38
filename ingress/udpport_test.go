package ingress

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/quicmuxtest"
	"github.com/quicgate/quicgate/quicmux"
)

// udpWait bounds a wait for something that must come; it is no measure of speed.
const udpWait = 20 * time.Second

func TestParseUDPForward(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"5353:127.0.0.1:53", "127.0.0.1:5353:127.0.0.1:53"},
		{"*:5353:dns.example:53", "0.0.0.0:5353:dns.example:53"},
		{"[::1]:0:[fd00::53]:53", "[::1]:0:[fd00::53]:53"},
		{"5353:127.0.0.1", ""},
		{"5353:127.0.0.1:0", ""},
		{"x:5353:h:53", ""},
	} {
		f, err := ParseUDPForward(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadUDPForward) {
				t.Errorf("ParseUDPForward(%q) = %v, %v; want ErrBadUDPForward", tt.in, f, err)
			}
			continue
		}
		if err != nil || f.String() != tt.want {
			t.Errorf("ParseUDPForward(%q) = %q, %v; want %q", tt.in, f, err, tt.want)
		}
	}
}

// udpRig is a tunnel with a -U in front of it, whose target is a UDP echo server on
// loopback unless the case says otherwise.
type udpRig struct {
	t       *testing.T
	port    *UDPPort
	client  *quicmux.Client
	echo    string // the echo server's address
	reg     *prometheus.Registry
	logs    *logtest.Hook // the ingress's log lines
	stop    func() error  // ends Serve's context and returns what Serve returned
	served  chan error
	tcpEcho string // a TCP echo server, allowed too
}

type udpRigConfig struct {
	target     string        // the -U target; default the echo server
	maxFlows   int           // UDPPortConfig.MaxFlows
	serverIdle time.Duration // ServerConfig.UDPIdleTimeout
	retryAfter time.Duration // UDPPort.retryAfter, if set
}

func newUDPRig(t *testing.T, cfg udpRigConfig) *udpRig {
	t.Helper()
	r := &udpRig{t: t, echo: udpEchoServer(t), tcpEcho: tcpEchoServer(t), reg: prometheus.NewRegistry()}
	rules := quicmuxtest.Rules(t, "udp:"+r.echo, "udp:127.0.0.1:9", "tcp:"+r.tcpEcho)
	m, err := quicmux.NewMetrics(r.reg, "server")
	if err != nil {
		t.Fatal(err)
	}
	_, r.client = startTunnel(t, quicmux.ServerConfig{
		Policy:         rules,
		DialTimeout:    5 * time.Second,
		UDPIdleTimeout: cfg.serverIdle,
		Metrics:        m,
	}, quicmux.ClientConfig{DialTimeout: 5 * time.Second}, nil)
	target := cfg.target
	if target == "" {
		target = r.echo
	}
	tgt, err := flow.ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	log.Logger.SetLevel(logrus.DebugLevel)
	r.logs = logtest.NewLocal(log.Logger)
	r.port, err = ListenUDPPort(UDPForward{Bind: netip.MustParseAddrPort("127.0.0.1:0"), Target: tgt}, r.client,
		Options{Logger: log.WithField("side", "ingress")}, UDPPortConfig{MaxFlows: cfg.maxFlows})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.retryAfter > 0 {
		r.port.retryAfter = cfg.retryAfter
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.served = make(chan error, 1)
	go func() { r.served <- r.port.Serve(ctx) }()
	r.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-r.served:
			return err
		case <-time.After(udpWait):
			return fmt.Errorf("Serve did not return within %v", udpWait)
		}
	})
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = r.port.Close()
	})
	return r
}

// app is a UDP socket of the app, connected to the -U port.
func (r *udpRig) app() *net.UDPConn {
	r.t.Helper()
	c, err := net.DialUDP("udp", nil, r.port.Addr().(*net.UDPAddr))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// lines returns how many ingress log lines have msg and, if result is set, that result.
func (r *udpRig) lines(msg, result string) int {
	n := 0
	for _, e := range r.logs.AllEntries() {
		if e.Message == msg && (result == "" || e.Data["result"] == result) {
			n++
		}
	}
	return n
}

// serverFlows is the server's quicgate_flows_active.
func (r *udpRig) serverFlows() float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "quicgate_flows_active" {
			for _, m := range mf.GetMetric() {
				n += m.GetGauge().GetValue()
			}
		}
	}
	return n
}

// waitUntil polls cond (every 10 ms, up to udpWait).
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(udpWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, udpWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// udpEchoServer is a UDP echo server on loopback.
func udpEchoServer(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(1 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	return c.LocalAddr().String()
}

// tcpEchoServer is a TCP echo server on loopback.
func tcpEchoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// echoVia sends p from c and waits for it to come back, sending it again every 200 ms
// (UDP may lose it). Answers to earlier sends of c's (late duplicates) are skipped; an
// answer that is not c's (no prefix tag) is an error.
func echoVia(c *net.UDPConn, tag string, p []byte) error {
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(udpWait)
	for time.Now().Before(deadline) {
		if _, err := c.Write(p); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if !bytes.HasPrefix(buf[:n], []byte(tag)) {
				return fmt.Errorf("source %s got a packet of another source's: %.20q", tag, buf[:n])
			}
			if bytes.Equal(buf[:n], p) {
				_ = c.SetReadDeadline(time.Time{})
				return nil
			}
		}
	}
	return fmt.Errorf("no echo of %d bytes within %v", len(p), udpWait)
}

// Two sources at once each get a flow of their own and only their own answers.
func TestUDPPortEcho(t *testing.T) {
	r := newUDPRig(t, udpRigConfig{})
	errs := make(chan error, 2)
	for _, tag := range []string{"A:", "B:"} {
		c := r.app()
		go func() {
			for i := range 50 {
				if err := echoVia(c, tag, fmt.Appendf(nil, "%s%d", tag, i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := r.port.Flows(); n != 2 {
		t.Fatalf("%d flows for two sources", n)
	}
	if n := r.serverFlows(); n != 2 {
		t.Fatalf("the server has %v flows for two sources", n)
	}
}

// A packet too large for a QUIC datagram goes on the flow's stream, both ways; an empty one
// is a packet too.
func TestUDPPortLargePacket(t *testing.T) {
	r := newUDPRig(t, udpRigConfig{})
	c := r.app()
	big := make([]byte, 60000)
	_, _ = rand.Read(big)
	copy(big, "L:")
	for _, p := range [][]byte{big, []byte("L:small"), big[:2]} {
		if err := echoVia(c, "L:", p); err != nil {
			t.Fatal(err)
		}
	}
}

// A target the server's policy denies: the source's packets are dropped, as they would be
// past a firewall (the app's reads time out; nothing tells it more), the failure is one log
// line, and the packets that follow within retryAfter neither ask the server again nor log.
// Once retryAfter has passed, the next packet asks again.
func TestUDPPortDenied(t *testing.T) {
	t.Run("held", func(t *testing.T) {
		r := newUDPRig(t, udpRigConfig{target: "127.0.0.2:53", retryAfter: time.Hour})
		c := r.app()
		waitUntil(t, func() bool {
			_, _ = c.Write([]byte("D:question"))
			return r.lines("flow failed", "denied") == 1
		}, "'flow failed' line with result denied")
		before := r.port.read.Load()
		for range 20 {
			_, _ = c.Write([]byte("D:question"))
		}
		waitUntil(t, func() bool { return r.port.read.Load() >= before+20 }, "the 20 packets read")
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("a denied target answered %d bytes", n)
		}
		if n := r.lines("flow failed", "denied"); n != 1 {
			t.Fatalf("%d 'flow failed' lines with result denied for one source, want 1", n)
		}
		if n := r.port.Flows(); n != 1 {
			t.Fatalf("%d flows held, want 1", n)
		}
		// Close ends the hold at once (its timer is an hour).
		_ = r.port.Close()
		if n := r.port.Flows(); n != 0 {
			t.Fatalf("%d flows after Close", n)
		}
	})
	t.Run("asked again", func(t *testing.T) {
		r := newUDPRig(t, udpRigConfig{target: "127.0.0.2:53", retryAfter: 50 * time.Millisecond})
		c := r.app()
		waitUntil(t, func() bool {
			_, _ = c.Write([]byte("D:again?"))
			return r.lines("flow failed", "denied") >= 2
		}, "second request after the hold")
	})
}

// A target whose port is closed answers ICMP port unreachable: the flow ends (the app sees
// its question unanswered) and is removed; the server's socket is closed.
func TestUDPPortRefused(t *testing.T) {
	r := newUDPRig(t, udpRigConfig{target: "127.0.0.1:9"}) // discard: nothing listens
	c := r.app()
	waitUntil(t, func() bool {
		_, _ = c.Write([]byte("R:anyone?"))
		return r.lines("flow failed", "refused") >= 1
	}, "'flow failed' line with result refused")
	waitUntil(t, func() bool { return r.port.Flows() == 0 && r.serverFlows() == 0 }, "end of the refused flow")
}

// Past MaxFlows sources, new sources' packets are dropped with one warning for the whole
// burst, however many sources and packets; the table and the server never hold more flows.
// A source whose flow ended (the server's idle timeout) leaves room for a new one.
func TestUDPPortFlowLimit(t *testing.T) {
	const maxFlows = 2
	r := newUDPRig(t, udpRigConfig{maxFlows: maxFlows, serverIdle: time.Second})
	for _, tag := range []string{"A:", "B:"} {
		if err := echoVia(r.app(), tag, []byte(tag+"hello")); err != nil {
			t.Fatal(err)
		}
	}
	// A flood of new source addresses (each a socket), several packets each.
	before := r.port.read.Load()
	var flood []*net.UDPConn
	for range 100 {
		c := r.app()
		flood = append(flood, c)
		for range 3 {
			_, _ = c.Write([]byte("F:flood"))
		}
		if n := r.port.Flows(); n > maxFlows {
			t.Fatalf("%d flows, limit %d", n, maxFlows)
		}
		if n := r.serverFlows(); n > maxFlows {
			t.Fatalf("the server has %v flows, limit %d", n, maxFlows)
		}
	}
	waitUntil(t, func() bool { return r.port.read.Load() >= before+300 }, "the flood's packets read")
	if n := r.port.Flows(); n > maxFlows {
		t.Fatalf("%d flows after the flood, limit %d", n, maxFlows)
	}
	if n := r.lines("udp source limit reached: dropping new sources' packets", ""); n != 1 {
		t.Fatalf("%d warnings for one burst, want 1", n)
	}
	// Once A's and B's flows end at the server's idle timeout, a new source gets through.
	if err := echoVia(r.app(), "C:", []byte("C:let me in")); err != nil {
		t.Fatal(err)
	}
	if n := r.lines("flow ended", "idle"); n == 0 {
		t.Fatal("a new source got through, but no flow ended idle")
	}
	for _, c := range flood {
		_ = c.Close()
	}
}

// Serve's context ending closes the socket and every flow, on both sides, and Serve
// returns; the app's next packet finds the port closed. Close does the same at once.
func TestUDPPortShutdown(t *testing.T) {
	for _, how := range []string{"drain", "Close"} {
		t.Run(how, func(t *testing.T) {
			r := newUDPRig(t, udpRigConfig{})
			c := r.app()
			if err := echoVia(c, "S:", []byte("S:before")); err != nil {
				t.Fatal(err)
			}
			if how == "drain" {
				if err := r.stop(); err != nil {
					t.Fatalf("Serve: %v", err)
				}
			} else {
				if err := r.port.Close(); err != nil {
					t.Fatal(err)
				}
				if err := r.stop(); err != nil {
					t.Fatalf("Serve after Close: %v", err)
				}
			}
			if n := r.port.Flows(); n != 0 {
				t.Fatalf("%d flows after the shutdown", n)
			}
			waitUntil(t, func() bool { return r.serverFlows() == 0 }, "end of the flow on the server")
			// The port is closed: the kernel answers port unreachable, so the app's
			// connected socket reads ECONNREFUSED.
			if err := echoVia(c, "S:", []byte("S:after")); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("after the shutdown: %v, want ECONNREFUSED", err)
			}
		})
	}
}

// Datagrams lost to a flood never stall a TCP flow on the same connection: while sources
// flood -U (far more than the connection carries, so datagrams are dropped at its queues),
// a TCP flow through -L moves 4 MiB each way and completes, and the UDP flows still answer.
func TestUDPFloodDoesNotStallTCP(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood")
	}
	r := newUDPRig(t, udpRigConfig{})
	tgt, err := flow.ParseTarget(r.tcpEcho)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := ListenPort(LocalForward{Bind: netip.MustParseAddrPort("127.0.0.1:0"), Target: tgt}, r.client, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- lp.Serve(ctx) }()
	defer func() { cancel(); <-served; _ = lp.Close() }()

	var sent, got atomic.Int64
	stopFlood := make(chan struct{})
	var flood sync.WaitGroup
	var flooders []*net.UDPConn
	for i := range 4 {
		c := r.app()
		flooders = append(flooders, c)
		_ = c.SetReadBuffer(1 << 20)
		tag := fmt.Sprintf("%d:", i)
		if err := echoVia(c, tag, []byte(tag+"start")); err != nil {
			t.Fatal(err)
		}
		p := append([]byte(tag), make([]byte, 1200)...)
		flood.Go(func() {
			for {
				select {
				case <-stopFlood:
					return
				default:
				}
				if _, err := c.Write(p); err == nil {
					sent.Add(1)
				}
			}
		})
		flood.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, err := c.Read(buf); err != nil {
					return // closed at the end of the test
				}
				got.Add(1)
			}
		})
	}

	begin := time.Now()
	tc, err := net.Dial("tcp", lp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	_ = tc.SetDeadline(time.Now().Add(2 * udpWait))
	wrote := make(chan error, 1)
	go func() { _, err := tc.Write(data); wrote <- err }()
	back := make([]byte, len(data))
	if _, err := io.ReadFull(tc, back); err != nil {
		t.Fatalf("TCP flow during the flood: %v after %v", err, time.Since(begin))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, data) {
		t.Fatal("the TCP flow's bytes came back changed")
	}
	tcpTime := time.Since(begin)
	close(stopFlood)
	t.Logf("TCP 4 MiB each way in %v during the flood; UDP: %d packets sent, %d answers (%.1f%%)",
		tcpTime.Round(time.Millisecond), sent.Load(), got.Load(), 100*float64(got.Load())/float64(max(sent.Load(), 1)))
	// The UDP flows still answer after the flood.
	if err := echoVia(r.app(), "after:", []byte("after:flood")); err != nil {
		t.Fatal(err)
	}
	for _, c := range flooders {
		_ = c.Close() // ends the readers
	}
	flood.Wait()
}
