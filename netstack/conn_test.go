package netstack

import (
	"errors"
	"io"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/quicgate/quicgate/netstack/memtun"
)

// newFlow links an app stack and a gateway stack (with a Handler) by a memtun pipe and
// returns both ends of one TCP flow: the app's (a TCPConn over an endpoint of the app
// stack, so that the app can half-close and reset too) and the gateway's, from Accept.
func newFlow(t testing.TB) (app, gw *TCPConn) {
	t.Helper()
	a, b := memtun.Pipe(1500, 16, 256)
	appStack, err := NewTUN(a, Config{Addrs: virtAddrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { appStack.Close() })
	conns := make(chan *TCPConn, 1)
	gwStack, err := NewTUN(b, Config{Handler: HandlerFunc(func(r *TCPRequest) {
		c, err := r.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			close(conns)
			return
		}
		conns <- c
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gwStack.Close() })

	fa, proto := fullAddr(netip.MustParseAddrPort("192.0.2.7:443"))
	var wq waiter.Queue
	ep, terr := appStack.GVisor().NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		t.Fatalf("NewEndpoint: %s", terr)
	}
	entry, connected := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-connected:
			terr = ep.LastError()
		case <-time.After(hangLimit):
			t.Fatalf("connect: not within %v", hangLimit)
		}
	}
	wq.EventUnregister(&entry)
	if terr != nil {
		ep.Close()
		t.Fatalf("Connect: %s", terr)
	}
	app = newTCPConn(gonet.NewTCPConn(&wq, ep), &wq, ep)
	t.Cleanup(func() { app.Close() })
	select {
	case gw = <-conns:
		if gw == nil {
			t.FailNow()
		}
	case <-time.After(hangLimit):
		t.Fatalf("accept: not within %v", hangLimit)
	}
	t.Cleanup(func() { gw.Close() })
	return app, gw
}

// notifier counts its calls and signals each on a channel, without blocking.
type notifier struct {
	calls atomic.Int32
	ch    chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{}, 16)} }

func (n *notifier) f() {
	n.calls.Add(1)
	n.ch <- struct{}{}
}

// wait waits for a call of n.f.
func (n *notifier) wait(t testing.TB, what string) {
	t.Helper()
	select {
	case <-n.ch:
	case <-time.After(hangLimit):
		t.Fatalf("%s: no NotifyReadable call within %v", what, hangLimit)
	}
}

func (n *notifier) check(t testing.TB, what string, want int32) {
	t.Helper()
	if got := n.calls.Load(); got != want {
		t.Errorf("%s: f called %d times, want %d", what, got, want)
	}
}

func write(t testing.TB, c *TCPConn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

func readString(t testing.TB, c *TCPConn, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("read %q, %v; want %q", buf, err, want)
	}
}

// TestNotifyReadableData checks that f waits for the app's bytes and runs once when they
// come, and that a NotifyReadable with bytes already there calls f before it returns.
func TestNotifyReadableData(t *testing.T) {
	app, gw := newFlow(t)
	n := newNotifier()
	gw.NotifyReadable(n.f)
	n.check(t, "nothing sent", 0)
	write(t, app, "ping")
	n.wait(t, "after the app's bytes")

	// The bytes are there (f said so): the next f runs at once.
	now := newNotifier()
	gw.NotifyReadable(now.f)
	now.check(t, "bytes already there", 1)
	readString(t, gw, "ping")

	// A second round, on the same registered entry.
	again := newNotifier()
	gw.NotifyReadable(again.f)
	again.check(t, "all read", 0)
	write(t, app, "pong")
	again.wait(t, "second burst")
	readString(t, gw, "pong")

	gw.Close()
	n.check(t, "first f", 1)
	now.check(t, "immediate f", 1)
	again.check(t, "second f", 1)
}

// TestNotifyReadableFIN checks that the app's FIN wakes the waiter and Read then says EOF.
func TestNotifyReadableFIN(t *testing.T) {
	app, gw := newFlow(t)
	n := newNotifier()
	gw.NotifyReadable(n.f)
	if err := app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "after the app's FIN")
	if got, err := gw.Read(make([]byte, 8)); got != 0 || err != io.EOF {
		t.Fatalf("Read after FIN: %d, %v; want 0, EOF", got, err)
	}
	// Still readable (EOF): at once.
	now := newNotifier()
	gw.NotifyReadable(now.f)
	now.check(t, "after EOF", 1)
	gw.Close()
	n.check(t, "FIN f", 1)
}

// TestNotifyReadableRST checks that the app's RST wakes the waiter and Read then says
// ECONNRESET.
func TestNotifyReadableRST(t *testing.T) {
	app, gw := newFlow(t)
	n := newNotifier()
	gw.NotifyReadable(n.f)
	app.Abort()
	n.wait(t, "after the app's RST")
	if _, err := gw.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after RST: %v; want ECONNRESET", err)
	}
	gw.Close()
	n.check(t, "RST f", 1)
}

// TestNotifyReadableLocalEnd checks that Abort and Close call a pending f (a relay
// direction waiting on the conn ends) and that NotifyReadable after them calls f at once.
func TestNotifyReadableLocalEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*TCPConn)
	}{
		{"abort", (*TCPConn).Abort},
		{"close", func(c *TCPConn) { c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, gw := newFlow(t)
			n := newNotifier()
			gw.NotifyReadable(n.f)
			tc.end(gw)
			n.check(t, "pending at "+tc.name, 1) // on the caller's goroutine, or gVisor's within it
			after := newNotifier()
			gw.NotifyReadable(after.f)
			after.check(t, "after "+tc.name, 1)
			gw.Close()
			gw.Abort()
			n.check(t, "pending f, finally", 1)
		})
	}
}

// TestNotifyReadableReplace checks that a second NotifyReadable replaces an f not yet called.
func TestNotifyReadableReplace(t *testing.T) {
	app, gw := newFlow(t)
	first, second := newNotifier(), newNotifier()
	gw.NotifyReadable(first.f)
	gw.NotifyReadable(second.f)
	write(t, app, "x")
	second.wait(t, "the replacing f")
	readString(t, gw, "x")
	gw.Close()
	first.check(t, "replaced f", 0)
	second.check(t, "replacing f", 1)
}

// TestNotifyReadableRace arms and sends concurrently, many times: the app's byte comes
// before, during or after NotifyReadable, and each f must run exactly once (a missed
// wake-up hangs the test until hangLimit).
func TestNotifyReadableRace(t *testing.T) {
	app, gw := newFlow(t)
	iters := 10000
	if testing.Short() || raceEnabled {
		iters = 2000
	}
	send := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		for range send {
			_, err := app.Write([]byte{'x'})
			sent <- err
		}
	}()
	defer close(send)
	calls := make([]atomic.Int32, iters)
	var arming atomic.Bool
	var during atomic.Int32 // calls made while NotifyReadable ran: the byte came first
	woke := make(chan int, 2)
	buf := make([]byte, 2)
	for i := range iters {
		send <- struct{}{}
		wrote := i%2 == 0 // half the time arm only once Write returned: the byte is closer
		if wrote {
			if err := <-sent; err != nil {
				t.Fatalf("iteration %d: Write: %v", i, err)
			}
		}
		arming.Store(true)
		gw.NotifyReadable(func() {
			if arming.Load() {
				during.Add(1)
			}
			calls[i].Add(1)
			woke <- i
		})
		arming.Store(false)
		select {
		case got := <-woke:
			if got != i {
				t.Fatalf("iteration %d: woke f of iteration %d", i, got)
			}
		case <-time.After(hangLimit):
			t.Fatalf("iteration %d: no wake-up within %v", i, hangLimit)
		}
		if !wrote {
			if err := <-sent; err != nil {
				t.Fatalf("iteration %d: Write: %v", i, err)
			}
		}
		if n, err := gw.Read(buf); n != 1 || err != nil {
			t.Fatalf("iteration %d: Read %d, %v; want 1 byte", i, n, err)
		}
	}
	gw.Close()
	t.Logf("%d of %d wake-ups within NotifyReadable", during.Load(), iters)
	for i := range calls {
		if c := calls[i].Load(); c != 1 {
			t.Errorf("iteration %d: f called %d times", i, c)
		}
	}
	select {
	case i := <-woke:
		t.Errorf("extra call of iteration %d's f", i)
	default:
	}
}

// TestNotifyReadableAllocs checks that arming a waiting conn does not allocate.
func TestNotifyReadableAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	_, gw := newFlow(t)
	f := func() {}
	if a := testing.AllocsPerRun(100, func() { gw.NotifyReadable(f) }); a != 0 {
		t.Errorf("NotifyReadable: %v allocations, want 0", a)
	}
}
