package quicmux

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// withListenPolicy lets the server listen where allow says.
func withListenPolicy(allow func(Fingerprint, netip.AddrPort) bool) tunnelOption {
	return withServerConfig(func(c *ServerConfig) { c.ListenPolicy = allow })
}

func listenAnywhere(Fingerprint, netip.AddrPort) bool { return true }

// listen is Client.Listen with the test's bound, closed at cleanup.
func listen(t *testing.T, c *Client, addr string) (net.Listener, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	ln, err := c.Listen(ctx, "tcp", addr)
	if err == nil {
		t.Cleanup(func() { _ = ln.Close() })
	}
	return ln, err
}

// accept is ln.Accept bounded by hangLimit.
func accept(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() { c, err := ln.Accept(); ch <- result{c, err} }()
	r := await(t, ch, "accept on the reverse listener")
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return r.c
}

// A reverse forward: the server listens where its policy lets the client, and a connection
// made to it there reaches the client's listener with its bytes both ways, its half-close
// and its reset, and with the address it came from.
func TestReverseListen(t *testing.T) {
	var asked atomic.Pointer[netip.AddrPort]
	tn := newTunnel(t, withListenPolicy(func(fp Fingerprint, ap netip.AddrPort) bool {
		asked.Store(&ap)
		return true
	}))
	addr := closedPort(t)
	ln, err := listen(t, tn.client, addr)
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().String() != addr || asked.Load().String() != addr {
		t.Fatalf("listener at %v, policy asked about %v, want %s", ln.Addr(), asked.Load(), addr)
	}

	app, err := net.Dial("tcp", addr) // on the server's side
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	got := accept(t, ln)
	if got.RemoteAddr().String() != app.LocalAddr().String() {
		t.Fatalf("accepted from %v, want the app's %v", got.RemoteAddr(), app.LocalAddr())
	}
	if _, err := app.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = app.(*net.TCPConn).CloseWrite()
	_ = got.SetDeadline(time.Now().Add(hangLimit))
	b, err := io.ReadAll(got)
	if err != nil || string(b) != "ping" {
		t.Fatalf("client side read %q, %v; want ping then EOF", b, err)
	}
	if _, err := got.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = got.(flow.Conn).CloseWrite()
	_ = app.SetDeadline(time.Now().Add(hangLimit))
	if b, err := io.ReadAll(app); err != nil || string(b) != "pong" {
		t.Fatalf("app read %q, %v; want pong then EOF", b, err)
	}

	// An abort on the client's side is a reset for the app.
	app2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer app2.Close()
	accept(t, ln).(flow.Conn).Abort()
	expectReset(t, app2, resetLimit)

	// Close ends the listener on the server: the port refuses.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}, "the server's listener closed")
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// The server listens only where its policy says; a port already taken (here by another
// connection of the same client) is "in use"; a name is not an address to listen on.
func TestReverseListenRefused(t *testing.T) {
	allowed := netip.MustParseAddrPort(closedPort(t))
	tn := newTunnel(t, withListenPolicy(func(_ Fingerprint, ap netip.AddrPort) bool { return ap == allowed }))
	if _, err := listen(t, tn.client, closedPort(t)); !errors.Is(err, ErrDenied) {
		t.Fatalf("listen where the policy does not allow: %v, want ErrDenied", err)
	}
	if _, err := listen(t, tn.client, allowed.String()); err != nil {
		t.Fatal(err)
	}
	other := tn.newClient(tn.clientID, tn.serverID.Fingerprint)
	_, err := listen(t, other, allowed.String())
	if !errors.Is(err, ErrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen on the same port: %v, want ErrInUse (EADDRINUSE)", err)
	}
	if _, err := listen(t, tn.client, "example.com:80"); !errors.Is(err, ErrBadTarget) {
		t.Fatalf("listen on a name: %v, want ErrBadTarget", err)
	}
}

// Without a ListenPolicy the server listens nowhere.
func TestReverseListenOffByDefault(t *testing.T) {
	tn := newTunnel(t)
	if _, err := listen(t, tn.client, closedPort(t)); !errors.Is(err, ErrDenied) {
		t.Fatalf("listen on a server without a listen policy: %v, want ErrDenied", err)
	}
}

// A reverse forward survives a server restart: the client asks for its listener again once
// it has reconnected, and the same net.Listener accepts again.
func TestReverseListenAfterReconnect(t *testing.T) {
	log, events := watchLog(t)
	tn := newTunnel(t, withListenPolicy(listenAnywhere), withClientConfig(func(c *ClientConfig) { c.Logger = log.WithField("side", "client") }))
	addr := closedPort(t)
	ln, err := listen(t, tn.client, addr)
	if err != nil {
		t.Fatal(err)
	}
	serverAddr := tn.serverAddr
	_ = tn.server.Close()
	tn.startServer(serverAddr)
	events.wait(t, "reconnected to server", 1)
	events.wait(t, "reverse forward back", 1)
	app, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	checkEchoVia(t, app, accept(t, ln))
}

// A reload that no longer allows a listen closes it on the server (Recheck counts it); the
// client keeps asking, and gets it back once allowed again.
func TestReverseListenRecheck(t *testing.T) {
	var allow atomic.Bool
	allow.Store(true)
	log, events := watchLog(t)
	tn := newTunnel(t, withListenPolicy(func(Fingerprint, netip.AddrPort) bool { return allow.Load() }),
		withClientConfig(func(c *ClientConfig) { c.Logger = log.WithField("side", "client") }))
	addr := closedPort(t)
	ln, err := listen(t, tn.client, addr)
	if err != nil {
		t.Fatal(err)
	}
	allow.Store(false)
	if _, _, lns := tn.server.Recheck(); lns != 1 {
		t.Fatalf("Recheck closed %d listeners, want 1", lns)
	}
	events.wait(t, "reverse forward refused or not reachable; retrying", 1)
	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.Close()
		t.Fatal("the denied listener still accepts")
	}
	allow.Store(true)
	events.wait(t, "reverse forward back", 1)
	app, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	checkEchoVia(t, app, accept(t, ln))
}

// Carry with a Reverse: the accepted connection is carried to a local destination, and a
// destination that refuses makes the app's connection a reset.
func TestReverseCarry(t *testing.T) {
	tn := newTunnel(t, withListenPolicy(listenAnywhere))
	addr := closedPort(t)
	ln, err := listen(t, tn.client, addr)
	if err != nil {
		t.Fatal(err)
	}
	dst := destination(t, echo)
	carry := func(target string) <-chan error {
		done := make(chan error, 1)
		conn := accept(t, ln)
		tgt, _ := flow.ParseTarget(target)
		tn.client.Carry(context.Background(), Reverse{Target: tgt, Remote: conn.(flow.Conn), Ingress: "-R test", Dial: func() (flow.Conn, error) {
			c, err := net.Dial("tcp", target)
			if err != nil {
				return nil, err
			}
			return flow.AsConn(c), nil
		}}, func(_ flow.Stats, err error) { done <- err })
		return done
	}
	app, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := carry(dst)
	checkEcho(t, app, "through -R")
	_ = app.Close()
	if err := await(t, done, "the reverse flow's end"); err != nil {
		t.Fatalf("reverse flow ended with %v, want nil", err)
	}

	app, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	done = carry(closedPort(t))
	if err := await(t, done, "the refused reverse flow"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("reverse flow to a closed port: %v, want ECONNREFUSED", err)
	}
	expectReset(t, app, resetLimit)
}

// checkEchoVia checks that bytes from app reach got and back.
func checkEchoVia(t *testing.T, app, got net.Conn) {
	t.Helper()
	_ = app.SetDeadline(time.Now().Add(hangLimit))
	_ = got.SetDeadline(time.Now().Add(hangLimit))
	if _, err := app.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(got, b); err != nil || string(b) != "hello" {
		t.Fatalf("client side read %q, %v", b, err)
	}
	if _, err := got.Write(b); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(app, b); err != nil || string(b) != "hello" {
		t.Fatalf("app read %q, %v", b, err)
	}
}

// The server's drain closes its reverse forwards' listeners at once, and lets a flow they
// accepted finish.
func TestReverseListenDrain(t *testing.T) {
	tn := newTunnel(t, withListenPolicy(listenAnywhere))
	addr := closedPort(t)
	ln, err := listen(t, tn.client, addr)
	if err != nil {
		t.Fatal(err)
	}
	app, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	got := accept(t, ln)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		drained <- tn.server.Shutdown(ctx)
	}()
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}, "the listener closed by the drain")
	// The probes above that got in before the listener closed are flows too, queued on ln
	// and never accepted: Close resets them, so the drain waits for the one flow below only.
	_ = ln.Close()
	checkEchoVia(t, app, got) // the accepted flow goes on
	_ = app.Close()
	_ = got.Close()
	if err := await(t, drained, "the drain"); err != nil {
		t.Fatalf("Shutdown: %v, want nil once the flow ended", err)
	}
}
