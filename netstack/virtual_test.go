package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/quicgate/quicgate/netstack/memtun"
)

var (
	virtAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("fd00::1/64")}
	peerAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24"), netip.MustParsePrefix("fd00::2/64")}
)

func newVirtual(t testing.TB, cfg Config, addrs ...netip.Prefix) *Stack {
	t.Helper()
	s, err := NewVirtual(cfg, addrs...)
	if err != nil {
		t.Fatalf("NewVirtual: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listenEcho serves echo on ln until it is closed.
func listenEcho(t testing.TB, s *Stack, addr netip.AddrPort) {
	t.Helper()
	ln, err := s.ListenTCP(addr)
	if err != nil {
		t.Fatalf("ListenTCP(%v): %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echo(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// TestVirtualEcho dials a listener of the same virtual stack, and of another stack linked
// by a memtun pipe, and checks the echo and the half-close.
func TestVirtualEcho(t *testing.T) {
	same := newVirtual(t, Config{}, virtAddrs...)
	listenEcho(t, same, netip.MustParseAddrPort("10.0.0.1:7"))
	listenEcho(t, same, netip.MustParseAddrPort("[fd00::1]:7"))

	a, b := memtun.Pipe(9000, 64, 1024)
	left, err := NewTUN(a, Config{Addrs: virtAddrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { left.Close() })
	right, err := NewTUN(b, Config{Addrs: peerAddrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { right.Close() })
	listenEcho(t, right, netip.MustParseAddrPort("0.0.0.0:7"))
	listenEcho(t, right, netip.MustParseAddrPort("[fd00::2]:7"))

	for _, tc := range []struct {
		name string
		from *Stack
		to   string
	}{
		{"same-v4", same, "10.0.0.1:7"},
		{"same-v6", same, "[fd00::1]:7"},
		{"pipe-v4", left, "10.0.0.2:7"},
		{"pipe-v6", left, "[fd00::2]:7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
			defer cancel()
			c, err := tc.from.DialTCP(ctx, netip.MustParseAddrPort(tc.to))
			if err != nil {
				t.Fatalf("DialTCP: %v", err)
			}
			defer c.Close()
			checkEcho(t, c, payloadSize()/4)
		})
	}
}

// TestHalfClose checks that CloseWrite reaches the peer as EOF while the other direction
// still carries data.
func TestHalfClose(t *testing.T) {
	s := newVirtual(t, Config{}, virtAddrs...)
	ln, err := s.ListenTCP(netip.MustParseAddrPort("10.0.0.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := s.DialTCP(context.Background(), netip.MustParseAddrPort("10.0.0.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(p)
	if err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v; want \"ping\" then EOF", got, err)
	}
	if _, err := p.Write([]byte("pong")); err != nil {
		t.Fatalf("write after peer's half-close: %v", err)
	}
	p.Close()
	got, err = io.ReadAll(c)
	if err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v; want \"pong\" then EOF", got, err)
	}
}

// TestPipeHandler dials an address no stack owns through a memtun pipe: the Handler of
// the promiscuous stack gets the flow with Dst as dialed.
func TestPipeHandler(t *testing.T) {
	dsts := make(chan netip.AddrPort, 1)
	a, b := memtun.Pipe(1500, 16, 256)
	app, err := NewTUN(a, Config{Addrs: virtAddrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	gw, err := NewTUN(b, Config{Handler: HandlerFunc(func(r *TCPRequest) {
		dsts <- r.Dst()
		c, err := r.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		echo(c)
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })

	dst := netip.MustParseAddrPort("192.0.2.7:443")
	c, err := app.DialTCP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-dsts; got != dst {
		t.Errorf("Dst() = %v, want %v", got, dst)
	}
	checkEcho(t, c, 64<<10)
}

// TestDialRefused checks the errno of a refused DialTCP and a dial on a closed stack.
func TestDialRefused(t *testing.T) {
	s := newVirtual(t, Config{}, virtAddrs...)
	_, err := s.DialTCP(context.Background(), netip.MustParseAddrPort("10.0.0.1:1"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("DialTCP to a closed port: %v, want ECONNREFUSED", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("error %T is not a *net.OpError", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestVirtualUnreachable(t *testing.T) {
	s := newVirtual(t, Config{}, virtAddrs...)
	_, err := s.DialTCP(context.Background(), netip.MustParseAddrPort("192.0.2.1:80"))
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("DialTCP off-subnet: %v, want ENETUNREACH", err)
	}
	if _, err := NewVirtual(Config{Handler: HandlerFunc(func(r *TCPRequest) {})}); err == nil {
		t.Error("NewVirtual accepted a Handler")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, mtu := range []int{10, MaxMTU + 1} {
		if s, err := NewVirtual(Config{MTU: mtu}); err == nil {
			s.Close()
			t.Errorf("MTU %d accepted", mtu)
		}
	}
}
