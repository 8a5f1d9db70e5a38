package ingress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/privtest"
	"github.com/quicgate/quicgate/quicmux"
)

// A TCP end whose peer vanishes without a packet (its host powered off, its NAT state gone)
// is found by keepalive and its flow reset, on the -L socket and on the socket the server
// dialed. The test runs in its own network namespace, where a routing rule blackholes one
// peer's address: nothing, not even a RST, reaches it any more.
func TestKeepAliveFindsVanishedPeers(t *testing.T) {
	if !privtest.ReexecInNewNetns(t) {
		return
	}
	// Move the local table behind a slot for blackhole rules, which would otherwise never
	// see loopback traffic.
	privtest.IP(t, "rule", "add", "pref", "10", "table", "local")
	privtest.IP(t, "rule", "del", "pref", "0")

	const keepalive = time.Second // probes after 1 s, then 4 more 1 s apart: about 5 s
	const limit = 30 * time.Second

	_, client := startTunnel(t, quicmux.ServerConfig{
		TCPKeepAlive: keepalive,
	}, quicmux.ClientConfig{}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// forward starts an echo destination on dstIP, which reports how its connection ended,
	// and a -L port to it.
	forward := func(dstIP string) (*Port, <-chan error) {
		ln, err := net.Listen("tcp", dstIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		ended := make(chan error, 1)
		accepted := make(chan net.Conn, 1)
		t.Cleanup(func() {
			select {
			case c := <-accepted:
				_ = c.Close() // a vanished destination's conn never ends on its own
			default:
			}
		})
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
			_, err = io.Copy(c, c)
			ended <- err
		}()
		target := flow.TargetFromAddrPort(netip.MustParseAddrPort(ln.Addr().String()))
		port, err := ListenPort(LocalForward{Bind: netip.MustParseAddrPort("127.0.0.1:0"), Target: target}, client, Options{TCPKeepAlive: keepalive})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- port.Serve(ctx) }()
		t.Cleanup(func() { cancel(); <-served })
		return port, ended
	}

	// open dials the -L port from the app address src and proves the flow with an echo.
	open := func(port *Port, src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, KeepAlive: -1}
		c, err := d.Dial("tcp", port.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(limit))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Both peers vanish at once, each on its own flow: the app behind -L (127.0.0.3) of a
	// flow to 127.0.0.6, and the destination (127.0.0.4) of another flow.
	// A third flow's destination (127.0.0.8) vanishes while the app is sending to it: its
	// bytes stay unacknowledged, so no probe goes out, and TCP_USER_TIMEOUT (set to the same
	// bound) ends the server's socket instead.
	port1, dstEnded := forward("127.0.0.6")
	port2, _ := forward("127.0.0.4")
	port3, _ := forward("127.0.0.8")
	vanished := open(port1, "127.0.0.3")
	defer vanished.Close()
	app := open(port2, "127.0.0.5")
	defer app.Close()
	sender := open(port3, "127.0.0.9")
	defer sender.Close()
	start := time.Now()
	privtest.IP(t, "rule", "add", "pref", "5", "to", "127.0.0.3", "blackhole")
	privtest.IP(t, "rule", "add", "pref", "6", "to", "127.0.0.4", "blackhole")
	privtest.IP(t, "rule", "add", "pref", "7", "to", "127.0.0.8", "blackhole")
	defer privtest.IP(t, "rule", "del", "pref", "7")
	defer privtest.IP(t, "rule", "del", "pref", "6")
	defer privtest.IP(t, "rule", "del", "pref", "5")
	if _, err := sender.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	senderGone := make(chan error, 1)
	go func() {
		_, err := sender.Read(make([]byte, 1))
		senderGone <- err
	}()

	// The vanished app: the -L socket's probes go unanswered, the relay resets the stream,
	// and the server resets that flow's destination connection (which still answers).
	appGone := make(chan time.Duration, 1)
	go func() {
		err := <-dstEnded
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("destination of the vanished app saw %v, want a reset", err)
		}
		appGone <- time.Since(start)
	}()
	// The vanished destination: the server's probes go unanswered, it resets the stream, and
	// the -L socket resets the app.
	_, err := app.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app saw %v, want a reset", err)
	}
	t.Logf("app reset %v after its destination vanished", time.Since(start).Round(time.Millisecond))
	select {
	case d := <-appGone:
		t.Logf("destination reset %v after its app vanished", d.Round(time.Millisecond))
	case <-time.After(limit):
		t.Fatalf("flow of the vanished app still open after %v", limit)
	}
	select {
	case err := <-senderGone:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("app sending to a vanished destination saw %v, want a reset", err)
		}
		t.Logf("app sending to its vanished destination reset %v after it vanished", time.Since(start).Round(time.Millisecond))
	case <-time.After(limit):
		t.Fatalf("flow with bytes in flight to a vanished destination still open after %v", limit)
	}
}
