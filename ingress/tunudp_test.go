package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/netstack/memtun"
	"github.com/quicgate/quicgate/quicmux"
)

// The TUN UDP rig: an app netstack → in-memory device → the ingress's netstack, whose UDP
// flows go through handleUDP to a real client and server on loopback. The server sends to
// what it is asked for, and loopback cannot be the destination of a packet routed into a
// TUN, so the tunnel in front of the client maps each test destination to a loopback one.
var (
	udpEchoDst   = netip.MustParseAddrPort("10.99.0.5:7")  // → the echo server
	udpEchoDst2  = netip.MustParseAddrPort("10.99.0.6:7")  // → the echo server too
	udpClosedDst = netip.MustParseAddrPort("10.99.0.7:9")  // → a loopback port nothing listens on
	udpDeniedDst = netip.MustParseAddrPort("10.99.0.8:53") // not mapped: the policy denies it
)

type tunUDPRig struct {
	app   *netstack.Stack
	gw    *netstack.Stack
	flows *flow.Group
}

// mappedTunnel sends the flows to mapped destinations elsewhere.
type mappedTunnel struct {
	UDPTunnel
	to map[string]string
}

func (m mappedTunnel) OpenUDP(ctx context.Context, t flow.Target, ingress, peer string) (flow.PacketConn, error) {
	if a, ok := m.to[t.String()]; ok {
		mapped, err := flow.ParseTarget(a)
		if err != nil {
			return nil, err
		}
		t = mapped
	}
	return m.UDPTunnel.OpenUDP(ctx, t, ingress, peer)
}

func newTUNUDPRig(t *testing.T, maxFlows int, serverIdle time.Duration) *tunUDPRig {
	t.Helper()
	echo := udpEchoServer(t)
	closed := closedUDPAddr(t)
	rules, err := quicmux.ParseRules([]string{"udp:" + echo, "udp:" + closed})
	if err != nil {
		t.Fatal(err)
	}
	_, client := startTunnel(t, quicmux.ServerConfig{Policy: rules, DialTimeout: 5 * time.Second, UDPIdleTimeout: serverIdle},
		quicmux.ClientConfig{DialTimeout: 5 * time.Second}, nil)
	tunnel := mappedTunnel{UDPTunnel: client, to: map[string]string{
		udpEchoDst.String(): echo, udpEchoDst2.String(): echo, udpClosedDst.String(): closed,
	}}

	r := &tunUDPRig{flows: flow.NewGroup(context.Background())}
	devIngress, devApp := memtun.Pipe(9000, 64, 1024)
	log := testLogger(t).WithField("side", "ingress")
	r.gw, err = netstack.NewTUN(devIngress, netstack.Config{
		UDPHandler: netstack.UDPHandlerFunc(func(c *netstack.UDPConn) {
			handleUDP(tunnel, r.flows, c, flow.TargetFromAddrPort(c.Dst()), "tun test", log)
		}),
		MaxUDPFlows: maxFlows,
		Logger:      log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.app, err = netstack.NewTUN(devApp, netstack.Config{Addrs: []netip.Prefix{appPrefix}})
	if err != nil {
		_ = r.gw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.flows.Close()
		_ = r.gw.Close()
		_ = r.app.Close()
	})
	return r
}

// dial opens a connected UDP socket of the app to dst.
func (r *tunUDPRig) dial(t *testing.T, dst netip.AddrPort) *netstack.UDPConn {
	t.Helper()
	c, err := r.app.DialUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedUDPAddr is a loopback UDP address nothing listens on now.
func closedUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	_ = c.Close()
	return addr
}

// tunUDPWait bounds a wait for what must come; it is no measure of speed.
const tunUDPWait = 30 * time.Second

// roundTrip sends p on c until a reply comes (UDP may lose a packet: it is sent again
// every 200 ms, for up to tunUDPWait), and checks that the reply is p and comes from want.
func roundTrip(t *testing.T, c *netstack.UDPConn, p []byte, want netip.AddrPort) {
	t.Helper()
	if err := tryRoundTrip(c, p, want); err != nil {
		t.Fatal(err)
	}
}

// tryRoundTrip is roundTrip for any goroutine: it returns what went wrong.
func tryRoundTrip(c *netstack.UDPConn, p []byte, want netip.AddrPort) error {
	deadline := time.Now().Add(tunUDPWait)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if _, err := c.Write(p); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		_ = c.SetReadDeadline(time.Time{})
		if got := from.(*net.UDPAddr).AddrPort(); got != want {
			return fmt.Errorf("reply from %s, want %s", got, want)
		}
		if !bytes.Equal(buf[:n], p) {
			return fmt.Errorf("reply of %d bytes differs from the %d sent", n, len(p))
		}
		return nil
	}
	return fmt.Errorf("no reply to %s within %v", want, tunUDPWait)
}

// expectRefused sends p on c until a Read fails with ECONNREFUSED (the app got ICMP port
// unreachable); any reply fails the test.
func expectRefused(t *testing.T, c *netstack.UDPConn) {
	t.Helper()
	deadline := time.Now().Add(tunUDPWait)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("anyone?")); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return
			}
			t.Fatalf("write: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Read(buf)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err == nil:
			t.Fatal("a reply; want ECONNREFUSED")
		default:
			t.Fatalf("read: %v, want ECONNREFUSED", err)
		}
	}
	t.Fatalf("no ECONNREFUSED within %v", tunUDPWait)
}

// TestTUNUDPEcho: two 5-tuples at once through the TUN, each echoed with the original
// destination as the reply's source, small packets and one of 20,000 bytes (over the TUN's
// MTU of 9000: fragmented by the app's stack, reassembled by the ingress's, and too large
// for a QUIC datagram, so it crosses the tunnel on the flow's stream).
func TestTUNUDPEcho(t *testing.T) {
	r := newTUNUDPRig(t, 0, 0)
	a, b := r.dial(t, udpEchoDst), r.dial(t, udpEchoDst2)
	a2 := r.dial(t, udpEchoDst) // a second source port to the same destination
	big := bytes.Repeat([]byte("0123456789"), 2000)
	other := make(chan error, 1)
	go func() {
		for i := range 20 {
			if err := tryRoundTrip(b, []byte{byte(i)}, udpEchoDst2); err != nil {
				other <- err
				return
			}
		}
		other <- nil
	}()
	for i := range 20 {
		roundTrip(t, a, []byte{'a', byte(i)}, udpEchoDst)
		roundTrip(t, a2, []byte{'b', byte(i)}, udpEchoDst)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	roundTrip(t, a, big, udpEchoDst)
	if n := r.gw.Stats().UDPFlows; n != 3 {
		t.Fatalf("%d UDP flows in the stack, want 3", n)
	}
	if n := r.flows.Open(); n != 3 {
		t.Fatalf("%d flows in the ingress, want 3", n)
	}
}

// TestTUNUDPRefused: a target the policy denies, and one whose port is closed (the server
// gets ICMP port unreachable), reach the app as ICMP port unreachable: ECONNREFUSED on its
// connected socket. Both flows are released.
func TestTUNUDPRefused(t *testing.T) {
	r := newTUNUDPRig(t, 0, 0)
	for _, dst := range []netip.AddrPort{udpDeniedDst, udpClosedDst} {
		t.Run(dst.String(), func(t *testing.T) {
			expectRefused(t, r.dial(t, dst))
		})
	}
	waitUntil(t, func() bool { return r.gw.Stats().UDPFlows == 0 && r.flows.Open() == 0 }, "the refused flows released")
}

// TestTUNUDPFlowBound: with MaxUDPFlows open, a new 5-tuple's packets are dropped (and
// counted); the server's idle timeout ends a flow, which releases its place, and the new
// 5-tuple then gets through.
func TestTUNUDPFlowBound(t *testing.T) {
	r := newTUNUDPRig(t, 1, 500*time.Millisecond)
	a, b := r.dial(t, udpEchoDst), r.dial(t, udpEchoDst2)
	roundTrip(t, a, []byte("first"), udpEchoDst)
	if _, err := b.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return r.gw.Stats().DroppedUDP > 0 }, "the second 5-tuple dropped at the bound")
	// a is left idle: the server ends its flow, the ingress releases it everywhere.
	waitUntil(t, func() bool { return r.gw.Stats().UDPFlows == 0 && r.flows.Open() == 0 }, "the idle flow released")
	roundTrip(t, b, []byte("second"), udpEchoDst2)
}
