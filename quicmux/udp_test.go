package quicmux

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// udpEcho is a UDP echo server on loopback.
func udpEcho(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDP(buf[:n], from)
		}
	}()
	return c.LocalAddr().String()
}

// closedUDPPort is a loopback UDP port nothing listens on now.
func closedUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	_ = c.Close()
	return addr
}

func dialUDP(t *testing.T, c *Client, addr string) (*UDPFlow, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	f, err := c.DialUDP(ctx, "udp", addr)
	if err == nil {
		t.Cleanup(func() { _ = f.Close() })
	}
	return f, err
}

// echoPacket sends p and expects it back. UDP may lose a packet: it is sent again every
// 200 ms until the answer comes.
func echoPacket(t *testing.T, f *UDPFlow, p []byte) {
	t.Helper()
	buf := make([]byte, flow.MaxUDPPacket)
	deadline := time.Now().Add(hangLimit)
	for time.Now().Before(deadline) {
		if _, err := f.Write(p); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := f.Read(buf)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err) {
			continue
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(buf[:n], p) {
			t.Fatalf("echo of %d bytes came back as %d bytes", len(p), n)
		}
		_ = f.SetReadDeadline(time.Time{})
		return
	}
	t.Fatalf("no echo of %d bytes within %v", len(p), hangLimit)
}

// A UDP flow carries packets both ways: small ones as datagrams, one too large for a
// datagram on the flow's stream; the client's Close ends it on the server.
func TestUDPFlowEcho(t *testing.T) {
	tn := newTunnel(t)
	f := mustDialUDP(t, tn.client, udpEcho(t))
	echoPacket(t, f, []byte("hello over a datagram"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 4000) // 64,000 bytes: no datagram holds it
	echoPacket(t, f, big)
	echoPacket(t, f, []byte{})
	_ = f.Close()
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
	waitFor(t, func() bool { return tn.server.flows.Open() == 0 }, "the server's end of the flow")
}

// A UDP target the policy does not allow is denied; a rule for TCP only does not allow UDP,
// and one for UDP only does not allow TCP.
func TestUDPFlowPolicy(t *testing.T) {
	echo := netip.MustParseAddrPort(udpEcho(t))
	tn := newTunnel(t, withRules("udp:"+echo.String(), "tcp:127.0.0.2/32"))
	if _, err := dialUDP(t, tn.client, echo.String()); err != nil {
		t.Fatalf("an allowed UDP target: %v", err)
	}
	if _, err := dialUDP(t, tn.client, "127.0.0.2:53"); !errors.Is(err, ErrDenied) {
		t.Fatalf("UDP where only TCP is allowed: %v, want ErrDenied", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	if _, err := tn.client.DialContext(ctx, "tcp", echo.String()); !errors.Is(err, ErrDenied) {
		t.Fatalf("TCP where only UDP is allowed: %v, want ErrDenied", err)
	}
}

// A destination that answers ICMP port unreachable ends the flow, and the app's Read says
// ECONNREFUSED, as on a connected UDP socket.
func TestUDPFlowPortUnreachable(t *testing.T) {
	tn := newTunnel(t)
	f := mustDialUDP(t, tn.client, closedUDPPort(t))
	_ = f.SetReadDeadline(time.Now().Add(hangLimit))
	buf := make([]byte, 16)
	for {
		if _, err := f.Write([]byte("anyone?")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("write: %v", err)
		}
		_, err := f.Read(buf)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			t.Fatal("a closed port answered")
		}
		if !isTimeout(err) {
			t.Fatalf("read: %v, want ECONNREFUSED", err)
		}
	}
}

// A UDP flow that carries nothing for its idle timeout ends: the app's Read says so.
func TestUDPFlowIdle(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.UDPIdleTimeout = 200 * time.Millisecond }))
	f := mustDialUDP(t, tn.client, udpEcho(t))
	echoPacket(t, f, []byte("once"))
	_ = f.SetReadDeadline(time.Now().Add(hangLimit))
	if _, err := f.Read(make([]byte, 16)); !errors.Is(err, flow.ErrIdle) {
		t.Fatalf("read on an idle flow: %v, want flow.ErrIdle", err)
	}
}

// FuzzParseDatagram: any datagram either fails to parse, or names a flow whose stream ID is
// a multiple of 4 (a client-opened bidirectional stream) and carries the rest, which
// appendDatagram gives back as it came.
func FuzzParseDatagram(f *testing.F) {
	for _, seed := range [][]byte{{}, {0}, make([]byte, 64), {0x40, 0x01, 'h', 'i'}, {0xc0}, {0x3f, 0xff}, appendDatagram(nil, 1<<40, []byte("x"))} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, p, err := parseDatagram(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		if id%4 != 0 {
			t.Fatalf("stream ID %d is not a client-opened bidirectional stream's", id)
		}
		again, q, err := parseDatagram(appendDatagram(nil, id, p))
		if err != nil || again != id || !bytes.Equal(q, p) {
			t.Fatalf("%x parsed as flow %d with %x, which round-trips to %d, %x, %v", b, id, p, again, q, err)
		}
	})
}

// A reload that no longer allows a UDP flow's target ends the flow (Recheck counts it).
func TestUDPFlowRecheck(t *testing.T) {
	echo := netip.MustParseAddrPort(udpEcho(t))
	rules := Rules{{Prefix: netip.PrefixFrom(echo.Addr(), 32), PortLo: echo.Port(), PortHi: echo.Port()}}
	var denied atomic.Bool
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) {
		c.Policy = policyFunc(func(tg flow.Target) bool { return !denied.Load() && rules.Allow(tg) })
	}))
	f := mustDialUDP(t, tn.client, echo.String())
	echoPacket(t, f, []byte("before"))
	denied.Store(true)
	if _, flows, _ := tn.server.Recheck(); flows != 1 {
		t.Fatalf("Recheck reset %d flows, want the UDP flow", flows)
	}
	_ = f.SetReadDeadline(time.Now().Add(hangLimit))
	if _, err := f.Read(make([]byte, 16)); !flow.IsReset(err) {
		t.Fatalf("read on a flow the new rules deny: %v, want a reset", err)
	}
}

// UDP flows count in the client's metrics under their ingress, and end there as they end.
func TestUDPFlowMetrics(t *testing.T) {
	creg, cm := newTestMetrics(t, "client")
	tn := newTunnel(t, withClientConfig(func(c *ClientConfig) { c.Metrics = cm }))
	target, _ := flow.ParseTarget(udpEcho(t))
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	end, err := tn.client.OpenUDP(ctx, target, "-U test", "127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	f := newUDPFlow(end, target)
	echoPacket(t, f, []byte("counted"))
	waitMetric(t, creg, "quicgate_flows_active", map[string]string{"ingress": "-U test"}, 1)
	_ = f.Close()
	waitMetric(t, creg, "quicgate_flows_active", map[string]string{"ingress": "-U test"}, 0)
	waitMetric(t, creg, "quicgate_flows_total", map[string]string{"result": "ok"}, 1)
	denied, _ := flow.ParseTarget("10.255.0.1:53")
	if _, err := tn.client.OpenUDP(ctx, denied, "-U test", "127.0.0.1:5001"); !errors.Is(err, ErrDenied) {
		t.Fatalf("a denied UDP target: %v", err)
	}
	if got := cm.RecentFailures(); len(got) != 1 || got[0].Ingress != "-U test" || got[0].Target != "10.255.0.1:53" {
		t.Fatalf("recent failures %+v, want the denied UDP flow", got)
	}
}

// Open UDP flows that move nothing hold no goroutine on either side of the tunnel: the
// server's sockets wait in its parker, the tunnel's ends are handed their datagrams on the
// connection's loop and read their streams only once readable.
func TestIdleUDPFlowsHoldNoGoroutine(t *testing.T) {
	tn := newTunnel(t)
	addr := udpEcho(t)
	echoPacket(t, mustDialUDP(t, tn.client, addr), []byte("warm"))
	before := runtime.NumGoroutine()
	const n = 100
	for i := range n {
		echoPacket(t, mustDialUDP(t, tn.client, addr), []byte{byte(i)})
	}
	// Each flow's set-up and first packets run on goroutines that end: wait for them.
	if !poll(func() bool { return runtime.NumGoroutine() < before+n/10 }) {
		t.Fatalf("%d goroutines with %d idle UDP flows open, %d before", runtime.NumGoroutine(), n, before)
	}
}

func mustDialUDP(t *testing.T, c *Client, addr string) *UDPFlow {
	t.Helper()
	f, err := dialUDP(t, c, addr)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A UDP flow's request is cut short when its context is canceled while the server has not
// answered yet (its lookup of the target's name hangs), not only at the dial timeout.
func TestDialUDPCanceledWhileWaiting(t *testing.T) {
	entered := make(chan struct{})
	tn := newTunnel(t, withRules("*.test"), withDialTimeout(10*hangLimit),
		withClientConfig(func(c *ClientConfig) { c.DialTimeout = 10 * hangLimit }),
		withResolver(resolverFunc(func(ctx context.Context, _, _ string) ([]netip.Addr, error) {
			close(entered)
			<-ctx.Done()
			return nil, ctx.Err()
		})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := tn.client.DialUDP(ctx, "udp", "hang.test:53")
		done <- err
	}()
	await(t, entered, "the server's lookup")
	cancel()
	if err := await(t, done, "DialUDP after its context was canceled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("DialUDP: %v, want context.Canceled", err)
	}
}
