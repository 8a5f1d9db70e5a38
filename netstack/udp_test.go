package netstack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/netstack/memtun"
)

// newUDPPair links an app stack (10.99.0.1/24, fd00:99::1/64) to a stack whose UDP flows go
// to h, over an in-memory device pair with MTU mtu.
func newUDPPair(t testing.TB, mtu int, cfg Config) (app, gw *Stack) {
	t.Helper()
	devGW, devApp := memtun.Pipe(mtu, 64, 1024)
	gw, err := NewTUN(devGW, cfg)
	if err != nil {
		t.Fatal(err)
	}
	app, err = NewTUN(devApp, Config{Addrs: []netip.Prefix{
		netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("fd00:99::1/64"),
	}})
	if err != nil {
		_ = gw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = app.Close()
		_ = gw.Close()
	})
	return app, gw
}

// udpEcho echoes each conn's packets until it fails, then closes it; its 5-tuples come on
// flows (if not nil).
func udpEcho(flows chan<- *UDPConn) UDPHandler {
	return UDPHandlerFunc(func(c *UDPConn) {
		defer c.Close()
		if flows != nil {
			flows <- c
		}
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
}

// udpRoundTrip sends p on c until a packet comes back (UDP may lose one: it is sent again
// every 200 ms), checks it is p from want, and fails after hangLimit.
func udpRoundTrip(t testing.TB, c *UDPConn, p []byte, want netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(hangLimit)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if _, err := c.Write(p); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		_ = c.SetReadDeadline(time.Time{})
		if got := from.(*net.UDPAddr).AddrPort(); got != want {
			t.Fatalf("reply from %s, want %s", got, want)
		}
		if !bytes.Equal(buf[:n], p) {
			t.Fatalf("reply of %d bytes differs from the %d sent", n, len(p))
		}
		return
	}
	t.Fatalf("no reply within %v", hangLimit)
}

// TestUDPForwarder: each 5-tuple becomes one UDPConn with the app's address and the
// original destination; replies leave with the destination as their source, for IPv4 and
// IPv6, and a packet larger than the MTU (fragmented by the app's stack) both ways.
func TestUDPForwarder(t *testing.T) {
	flows := make(chan *UDPConn, 8)
	app, _ := newUDPPair(t, 1500, Config{UDPHandler: udpEcho(flows)})
	for _, dst := range []string{"10.99.0.5:7", "[fd00:99::5]:7", "10.99.0.6:53"} {
		t.Run(dst, func(t *testing.T) {
			to := netip.MustParseAddrPort(dst)
			c, err := app.DialUDP(to)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			udpRoundTrip(t, c, []byte("ping"), to)
			gw := <-flows
			if gw.Dst() != to || gw.Src() != c.Src() {
				t.Fatalf("flow %s, want %s->%s", gw, c.Src(), to)
			}
			if la := gw.LocalAddr().(*net.UDPAddr).AddrPort(); la != to {
				t.Fatalf("LocalAddr %s, want %s", la, to)
			}
			big := bytes.Repeat([]byte("0123456789"), 2000) // 20,000 bytes > MTU 1500
			udpRoundTrip(t, c, big, to)
			select {
			case f := <-flows:
				t.Fatalf("a second flow %s for one 5-tuple", f)
			default:
			}
		})
	}
}

// TestUDPRefuse: Refuse sends the app ICMP port unreachable, which a connected socket
// reports as ECONNREFUSED (IPv4 and IPv6).
func TestUDPRefuse(t *testing.T) {
	app, gw := newUDPPair(t, 1500, Config{UDPHandler: UDPHandlerFunc(func(c *UDPConn) { c.Refuse() })})
	for _, dst := range []string{"10.99.0.5:9", "[fd00:99::5]:9"} {
		t.Run(dst, func(t *testing.T) {
			c, err := app.DialUDP(netip.MustParseAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello?")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(hangLimit))
			if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("read: %v, want ECONNREFUSED", err)
			}
		})
	}
	waitFor(t, func() bool { return gw.Stats().UDPFlows == 0 }, "refused flows released")
}

// TestUDPFlowBound: beyond MaxUDPFlows open flows the packets of a new 5-tuple are
// dropped and counted; once a flow ends, a new one starts.
func TestUDPFlowBound(t *testing.T) {
	flows := make(chan *UDPConn, 8)
	app, gw := newUDPPair(t, 1500, Config{UDPHandler: udpEcho(flows), MaxUDPFlows: 2})
	var conns []*UDPConn
	for _, dst := range []string{"10.99.0.5:1", "10.99.0.5:2", "10.99.0.5:3"} {
		c, err := app.DialUDP(netip.MustParseAddrPort(dst))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	udpRoundTrip(t, conns[0], []byte("a"), netip.MustParseAddrPort("10.99.0.5:1"))
	udpRoundTrip(t, conns[1], []byte("b"), netip.MustParseAddrPort("10.99.0.5:2"))
	first := <-flows
	<-flows
	if _, err := conns[2].Write([]byte("c")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return gw.Stats().DroppedUDP > 0 }, "the third 5-tuple's packet dropped")
	if n := gw.Stats().UDPFlows; n != 2 {
		t.Fatalf("%d flows open, want 2", n)
	}
	_ = first.Close() // the echo's Read fails; its flow ends
	udpRoundTrip(t, conns[2], []byte("c"), netip.MustParseAddrPort("10.99.0.5:3"))
}
