package ingress

import (
	"context"
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

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/internal/quicmuxtest"
	"github.com/quicgate/quicgate/internal/testlog"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/netstack/memtun"
	"github.com/quicgate/quicgate/quicmux"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The harness: app → ingress → client → (UDP relay) → server → destination, all in the
// test process. Every flow targets flowTarget; the server's dialer takes it to the
// destination listener on loopback, so the TUN app can dial an ordinary address through
// its netstack and the three ingresses share one setup.
var (
	flowTarget = netip.MustParseAddrPort("10.99.0.5:80")
	appPrefix  = netip.MustParsePrefix("10.99.0.1/24")
)

// ingressKind is one way an application reaches the tunnel.
type ingressKind string

const (
	ingressPort  ingressKind = "-L"
	ingressTUN   ingressKind = "TUN"
	ingressDial  ingressKind = "DialContext"
	ingressProxy ingressKind = "-D"
)

var allIngresses = []ingressKind{ingressPort, ingressTUN, ingressDial, ingressProxy}

// harnessConfig is what a case changes in the setup.
type harnessConfig struct {
	clientFlowIdle time.Duration  // ClientConfig.FlowIdleTimeout
	serverFlowIdle time.Duration  // ServerConfig.FlowIdleTimeout
	clientLimits   quicmux.Limits // ClientConfig.Limits
	serverLimits   quicmux.Limits // ServerConfig.Limits
	udpRelay       bool           // put a UDP relay that can blackhole between client and server
	drainTimeout   time.Duration  // the ingress's drain timeout (Options.DrainTimeout)
	tunTCP         *netstack.TCPOptions
}

// harness is one tunnel with one ingress in front of it.
type harness struct {
	t       *testing.T
	kind    ingressKind
	server  *quicmux.Server
	client  *quicmux.Client
	dest    *destination
	relay   *udpRelay   // nil unless harnessConfig.udpRelay
	tunLink *dropDevice // the TUN ingress's device (TUN only)

	dialApp func(ctx context.Context) (appConn, error)
	// drainIngress starts the ingress's drain (-L: Serve's context ends; TUN: drain of its
	// flow group) and returns a channel closed when the drain is over.
	drainIngress func() <-chan struct{}

	// lastWrite is when open last wrote to the flow: no relay saw a byte move before it.
	lastWrite time.Time
}

// appConn is the application's end of a flow, whichever ingress it goes through.
type appConn interface {
	net.Conn
	CloseWrite() error
	Abort() // a RST (or a stream reset for DialContext)
}

// isReset reports whether the app's error is a reset as this ingress's app would see it:
// ECONNRESET from a socket (kernel or netstack), flow.IsReset from DialContext.
func (h *harness) isReset(err error) bool {
	if h.kind == ingressDial {
		return flow.IsReset(err)
	}
	return errors.Is(err, syscall.ECONNRESET)
}

func testLogger(t testing.TB) *logrus.Entry { return testlog.New(t) }

// newHarness builds destination, server, client (connected) and the ingress; t.Cleanup
// takes them down in the reverse order.
func newHarness(t *testing.T, kind ingressKind, cfg harnessConfig) *harness {
	t.Helper()
	h := &harness{t: t, kind: kind, dest: newDestination(t)}
	destAddr := h.dest.addr()
	dialer := flow.TCPDialer(0)
	var relay func(string) string
	if cfg.udpRelay {
		relay = func(serverAddr string) string {
			h.relay = looptest.NewRelay(t, serverAddr)
			return h.relay.Addr()
		}
	}
	h.server, h.client = startTunnel(t, quicmux.ServerConfig{
		Policy: quicmux.Rules{{Prefix: netip.MustParsePrefix("10.99.0.0/16"), PortLo: 1, PortHi: 65535}},
		// The one target is the destination on loopback; anything else is a bug in the test.
		Dialer: dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
			if address != flowTarget.String() {
				return nil, fmt.Errorf("test dialer: unexpected target %s", address)
			}
			return dialer.DialContext(ctx, network, destAddr)
		}),
		DialTimeout:     5 * time.Second,
		FlowIdleTimeout: cfg.serverFlowIdle,
		Limits:          cfg.serverLimits,
	}, quicmux.ClientConfig{
		DialTimeout:     5 * time.Second,
		FlowIdleTimeout: cfg.clientFlowIdle,
		Limits:          cfg.clientLimits,
	}, relay)
	client := h.client

	switch kind {
	case ingressPort:
		h.startPort(cfg.drainTimeout)
	case ingressTUN:
		h.startTUN(cfg.tunTCP, cfg.drainTimeout)
	case ingressProxy:
		h.startProxy(cfg.drainTimeout)
	case ingressDial:
		h.dialApp = func(ctx context.Context) (appConn, error) {
			c, err := client.DialContext(ctx, "tcp", flowTarget.String())
			if err != nil {
				return nil, err
			}
			return flowApp{Conn: c, flowConn: c.(flow.Conn)}, nil
		}
	}
	return h
}

// startTunnel starts a server on loopback with sc and a client with cc (the rig's: fresh
// identities that trust each other, a test logger), connects the client, and closes both
// at cleanup. via, if set, is given the server's address and returns the one the client
// dials (a relay in between).
func startTunnel(t *testing.T, sc quicmux.ServerConfig, cc quicmux.ClientConfig, via func(string) string) (*quicmux.Server, *quicmux.Client) {
	t.Helper()
	var opts []quicmuxtest.Option
	if via != nil {
		opts = append(opts, quicmuxtest.Via(via))
	}
	tn := quicmuxtest.Start(t, sc, cc, opts...)
	return tn.Server, tn.Client
}

// startPort serves a -L on an ephemeral loopback port; the app dials it with the kernel.
func (h *harness) startPort(drainTimeout time.Duration) {
	t := h.t
	fwd := LocalForward{Bind: netip.MustParseAddrPort("127.0.0.1:0"), Target: flow.TargetFromAddrPort(flowTarget)}
	p, err := ListenPort(fwd, h.client, Options{DrainTimeout: drainTimeout, Logger: testLogger(t).WithField("side", "ingress")})
	if err != nil {
		t.Fatal(err)
	}
	h.serve(p)
	h.dialApp = func(ctx context.Context) (appConn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.Addr().String())
		if err != nil {
			return nil, err
		}
		return kernelApp{c.(*net.TCPConn)}, nil
	}
}

// serve runs in's Serve until the drain (drainIngress) or the test's end, and closes it then.
func (h *harness) serve(in Ingress) {
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- in.Serve(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-served })
	h.drainIngress = func() <-chan struct{} {
		done := make(chan struct{})
		go func() { defer close(done); _ = stop() }()
		return done
	}
	h.t.Cleanup(func() {
		if err := stop(); err != nil {
			h.t.Errorf("Serve: %v", err)
		}
		_ = in.Close()
	})
}

// startTUN puts the TUN ingress's flow handling (handleTCP) behind a netstack on one end of
// an in-memory device pair, and an app's netstack on the other end.
func (h *harness) startTUN(opts *netstack.TCPOptions, drainTimeout time.Duration) {
	t := h.t
	devIngress, devApp := memtun.Pipe(9000, 64, 1024)
	h.tunLink = &dropDevice{Device: devIngress}
	flows := flow.NewGroup(context.Background())
	log := testLogger(t).WithField("side", "ingress")
	gw, err := netstack.NewTUN(h.tunLink, netstack.Config{
		Handler: netstack.HandlerFunc(func(req *netstack.TCPRequest) {
			handleTCP(h.client, flows, req, flow.TargetFromAddrPort(req.Dst()), "tun test", log)
		}),
		TCP:    opts,
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	app, err := netstack.NewTUN(devApp, netstack.Config{Addrs: []netip.Prefix{appPrefix}})
	if err != nil {
		_ = gw.Close()
		t.Fatal(err)
	}
	var drained sync.WaitGroup
	h.drainIngress = func() <-chan struct{} {
		done := make(chan struct{})
		drained.Go(func() { defer close(done); drain(flows, drainTimeout) })
		return done
	}
	t.Cleanup(func() {
		flows.Close()
		drained.Wait()
		_ = gw.Close()
		_ = app.Close()
	})
	h.dialApp = func(ctx context.Context) (appConn, error) { return dialNetstack(ctx, app, flowTarget) }
}

// dial opens a flow from the app and waits (bounded) for the destination to accept it.
func (h *harness) dial() (appConn, *net.TCPConn) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := h.dialApp(ctx)
	if err != nil {
		h.t.Fatalf("app dial: %v", err)
	}
	h.t.Cleanup(func() { _ = app.Close() })
	return app, h.dest.accept(h.t)
}

// open is dial plus a byte each way, so the flow is known to be relayed end to end.
func (h *harness) open() (appConn, *net.TCPConn) {
	h.t.Helper()
	app, dst := h.dial()
	exchange(h.t, app, dst, "ping")
	h.lastWrite = time.Now()
	exchange(h.t, dst, app, "pong")
	return app, dst
}

// exchange writes msg to w and checks that r reads exactly it.
func exchange(t *testing.T, w io.Writer, r net.Conn, msg string) {
	t.Helper()
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer r.SetReadDeadline(time.Time{})
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != msg {
		t.Fatalf("read %q, %v; want %q", buf, err, msg)
	}
}

// kernelApp is an app's kernel TCP socket (-L).
type kernelApp struct{ *net.TCPConn }

func (c kernelApp) Abort() {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// flowApp is a DialContext conn: its Abort resets the stream.
type flowApp struct {
	net.Conn
	flowConn
}

// flowConn is flow.Conn under a name of its own, to be embedded next to net.Conn.
type flowConn interface{ flow.Conn }

func (c flowApp) Read(p []byte) (int, error)  { return c.flowConn.Read(p) }
func (c flowApp) Write(p []byte) (int, error) { return c.flowConn.Write(p) }
func (c flowApp) Close() error                { return c.flowConn.Close() }

// netstackApp is an app behind the TUN: a connection of the app's own netstack, which can
// abort (RST) and whose gonet string errors are given their errno, as netstack.TCPConn does
// for the ingress's side. (netstack.Stack.DialTCP returns a bare *gonet.TCPConn, which can
// do neither, so the app dials through the gVisor stack here.)
type netstackApp struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

func dialNetstack(ctx context.Context, s *netstack.Stack, dst netip.AddrPort) (appConn, error) {
	var wq waiter.Queue
	ep, terr := s.GVisor().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("app endpoint: %s", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		}
	}
	if terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errnoOf(terr.String())}
	}
	return netstackApp{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

func (c netstackApp) Abort() {
	c.ep.Abort()
	_ = c.TCPConn.Close()
}

func (c netstackApp) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	return n, mapNetstackErr(err)
}

func (c netstackApp) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	return n, mapNetstackErr(err)
}

func mapNetstackErr(err error) error {
	var oe *net.OpError
	if err == nil || err == io.EOF || !errors.As(err, &oe) || oe.Timeout() {
		return err
	}
	oe2 := *oe
	oe2.Err = errnoOf(oe.Err.Error())
	return &oe2
}

// errnoOf maps gVisor's error text (gonet flattens errors to strings) to its errno.
func errnoOf(text string) error {
	switch text {
	case (&tcpip.ErrConnectionReset{}).String(), (&tcpip.ErrConnectionAborted{}).String():
		return syscall.ECONNRESET
	case (&tcpip.ErrConnectionRefused{}).String():
		return syscall.ECONNREFUSED
	case (&tcpip.ErrTimeout{}).String():
		return syscall.ETIMEDOUT
	}
	return errors.New(text)
}

// dropDevice is a tun.Device that loses every packet both ways once Drop is called: the
// app behind the TUN vanishes without a FIN or RST.
type dropDevice struct {
	wgtun.Device
	drop atomic.Bool
}

func (d *dropDevice) Drop() { d.drop.Store(true) }

func (d *dropDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := d.Device.Read(bufs, sizes, offset)
		if err != nil || !d.drop.Load() {
			return n, err
		}
	}
}

func (d *dropDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.drop.Load() {
		return len(bufs), nil
	}
	return d.Device.Write(bufs, offset)
}

// destination is a kernel TCP listener on loopback standing for the flows' destination.
// Accepted connections wait in a queue for the test, or, once closeNew is set, are closed
// at once (FIN).
type destination struct {
	ln       net.Listener
	conns    chan *net.TCPConn
	closeNew atomic.Bool

	mu   sync.Mutex
	open []*net.TCPConn
}

func newDestination(t *testing.T) *destination {
	t.Helper()
	lc := flow.TCPListenConfig(0)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &destination{ln: ln, conns: make(chan *net.TCPConn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*net.TCPConn)
			if d.closeNew.Load() {
				_ = tc.Close()
				continue
			}
			d.mu.Lock()
			d.open = append(d.open, tc)
			d.mu.Unlock()
			select {
			case d.conns <- tc:
			default:
				_ = tc.Close() // the test did not ask for this many
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		d.mu.Lock()
		for _, c := range d.open {
			_ = c.Close()
		}
		d.mu.Unlock()
	})
	return d
}

func (d *destination) addr() string { return d.ln.Addr().String() }

// accept returns the next connection the server dialed.
func (d *destination) accept(t *testing.T) *net.TCPConn {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case c := <-d.conns:
		return c
	case <-timer.C:
		t.Fatal("the destination got no connection within 10s")
		return nil
	}
}

// abortTCP resets a kernel TCP connection (SO_LINGER 0).
func abortTCP(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// udpRelay forwards the client's datagrams to the server and back until Blackhole, after
// which it drops everything both ways.
type udpRelay = looptest.Relay

// dialerFunc adapts a function to quicmux.Dialer.
type dialerFunc = looptest.DialerFunc
