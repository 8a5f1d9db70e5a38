//go:build linux

package flow

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testParker starts a parker that the test closes at its end (after the sockets' cleanups,
// which run first, being registered later).
func testParker(t *testing.T) *Parker {
	t.Helper()
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// parkPair is a loopback TCP connection: local is the side parked, peer the other end.
type parkPair struct {
	local, peer *net.TCPConn
	rc          syscall.RawConn
}

// newParkPairs dials n loopback TCP connections; at the test's end each local side is
// unparked from p (as the contract asks, before closing) and both sides are closed.
func newParkPairs(t *testing.T, p *Parker, n int) []parkPair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pairs := make([]parkPair, n)
	for i := range pairs {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		local, err := ln.Accept()
		if err != nil {
			peer.Close()
			t.Fatal(err)
		}
		pp := parkPair{local: local.(*net.TCPConn), peer: peer.(*net.TCPConn)}
		if pp.rc, err = pp.local.SyscallConn(); err != nil {
			t.Fatal(err)
		}
		pairs[i] = pp
		t.Cleanup(func() {
			p.unpark(pp.rc)
			pp.local.Close()
			pp.peer.Close()
		})
	}
	return pairs
}

func newParkPair(t *testing.T, p *Parker) parkPair {
	t.Helper()
	return newParkPairs(t, p, 1)[0]
}

// counter is a park callback that counts its calls and signals each on a channel.
type counter struct {
	n     atomic.Int32
	fired chan struct{}
}

func newCounter() *counter { return &counter{fired: make(chan struct{}, 16)} }

func (c *counter) f() {
	c.n.Add(1)
	select {
	case c.fired <- struct{}{}:
	default:
	}
}

func (c *counter) wait(t *testing.T, what string) {
	t.Helper()
	await(t, c.fired, what)
}

func (c *counter) want(t *testing.T, n int32, what string) {
	t.Helper()
	if got := c.n.Load(); got != n {
		t.Fatalf("%s: callback called %d times, want %d", what, got, n)
	}
}

func (pp parkPair) send(t *testing.T) {
	t.Helper()
	if _, err := pp.peer.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
}

// waitReadable waits, through Go's own netpoller, until the local side has something to read,
// without consuming it.
func (pp parkPair) waitReadable(t *testing.T) {
	t.Helper()
	err := pp.rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err != syscall.EINTR {
				return err != syscall.EAGAIN
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// barrier parks a fresh socket, makes it readable and waits for its callback: the parker's
// single goroutine has then handled a readiness that arose after everything the test did
// before, so a callback that should not come (a second call, a call after unpark) would most
// likely have come by then.
func barrier(t *testing.T, p *Parker) {
	t.Helper()
	pp := newParkPair(t, p)
	c := newCounter()
	if err := p.park(pp.rc, c.f); err != nil {
		t.Fatal(err)
	}
	pp.send(t)
	c.wait(t, "barrier callback")
}

// parkedPair is a parker, a loopback pair and a counting callback, with the pair's local end
// parked.
func parkedPair(t *testing.T) (*Parker, parkPair, *counter) {
	t.Helper()
	p := testParker(t)
	pp := newParkPair(t, p)
	c := newCounter()
	if err := p.park(pp.rc, c.f); err != nil {
		t.Fatal(err)
	}
	return p, pp, c
}

func TestParkerWrite(t *testing.T) {
	p, pp, c := parkedPair(t)
	pp.send(t)
	c.wait(t, "callback after a write")
	barrier(t, p)
	c.want(t, 1, "after a write")
	// The byte is still unread, yet the one-shot park is spent.
	if p.unpark(pp.rc) {
		t.Fatal("unpark after the callback reported a pending park")
	}
}

func TestParkerAlreadyReadable(t *testing.T) {
	p := testParker(t)
	pp := newParkPair(t, p)
	pp.send(t)
	pp.waitReadable(t)
	c := newCounter()
	if err := p.park(pp.rc, c.f); err != nil {
		t.Fatal(err)
	}
	c.wait(t, "callback for bytes that arrived before park")
	barrier(t, p)
	c.want(t, 1, "bytes before park")
}

func TestParkerFIN(t *testing.T) {
	_, pp, c := parkedPair(t)
	if err := pp.peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, "callback after the peer's FIN")
	if n, err := pp.local.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after FIN: %d, %v; want 0, EOF", n, err)
	}
	c.want(t, 1, "FIN")
}

func TestParkerRST(t *testing.T) {
	_, pp, c := parkedPair(t)
	if err := pp.peer.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	pp.peer.Close() // with linger 0: a RST
	c.wait(t, "callback after the peer's RST")
	if _, err := pp.local.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("read after RST: %v; want a reset", err)
	}
	c.want(t, 1, "RST")
}

func TestParkerUnparkBeforeData(t *testing.T) {
	p, pp, c := parkedPair(t)
	if !p.unpark(pp.rc) {
		t.Fatal("unpark of a pending park reported none")
	}
	pp.send(t)
	pp.waitReadable(t)
	barrier(t, p)
	c.want(t, 0, "write after unpark")
	if p.unpark(pp.rc) {
		t.Fatal("second unpark reported a pending park")
	}
}

func TestParkerUnparkAfterFire(t *testing.T) {
	p, pp, c := parkedPair(t)
	pp.send(t)
	c.wait(t, "callback")
	if p.unpark(pp.rc) {
		t.Fatal("unpark after the callback reported a pending park")
	}
}

func TestParkerUnparkNeverParked(t *testing.T) {
	p := testParker(t)
	pp := newParkPair(t, p)
	if p.unpark(pp.rc) {
		t.Fatal("unpark of a socket never parked reported a pending park")
	}
}

func TestParkerParkTwice(t *testing.T) {
	p, pp, c := parkedPair(t)
	if err := p.park(pp.rc, c.f); err == nil {
		t.Fatal("a second park of a parked socket succeeded")
	}
	pp.send(t)
	c.wait(t, "callback")
	barrier(t, p)
	c.want(t, 1, "after a refused second park")
}

// A socket re-parked after its data was consumed fires again only on new data.
func TestParkerRepark(t *testing.T) {
	p := testParker(t)
	pp := newParkPair(t, p)
	c := newCounter()
	for round := int32(1); round <= 3; round++ {
		if err := p.park(pp.rc, c.f); err != nil {
			t.Fatal(err)
		}
		barrier(t, p)
		c.want(t, round-1, "parked with nothing to read")
		pp.send(t)
		c.wait(t, "callback on new data")
		if _, err := io.ReadFull(pp.local, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c.want(t, round, "after new data")
	}
}

// Unpark then park again (the socket leaves the epoll set and rejoins it): only the new
// callback is called.
func TestParkerUnparkRepark(t *testing.T) {
	p := testParker(t)
	pp := newParkPair(t, p)
	old, cur := newCounter(), newCounter()
	if err := p.park(pp.rc, old.f); err != nil {
		t.Fatal(err)
	}
	if !p.unpark(pp.rc) {
		t.Fatal("unpark of a pending park reported none")
	}
	if err := p.park(pp.rc, cur.f); err != nil {
		t.Fatal(err)
	}
	pp.send(t)
	cur.wait(t, "callback of the new park")
	barrier(t, p)
	old.want(t, 0, "unparked callback")
	cur.want(t, 1, "new callback")
}

func TestParkerMany(t *testing.T) {
	n := 500
	p := testParker(t)
	pairs := newParkPairs(t, p, n)
	counters := make([]*counter, n)
	var all sync.WaitGroup
	all.Add(n)
	var parked sync.WaitGroup
	for i := range pairs {
		c := newCounter()
		counters[i] = c
		parked.Go(func() {
			if err := p.park(pairs[i].rc, func() { c.f(); all.Done() }); err != nil {
				t.Error(err)
				all.Done()
			}
		})
	}
	parked.Wait()
	var wrote sync.WaitGroup
	for i := range pairs {
		wrote.Go(func() {
			if _, err := pairs[i].peer.Write([]byte{1}); err != nil {
				t.Error(err)
			}
		})
	}
	wrote.Wait()
	done := make(chan struct{})
	go func() { all.Wait(); close(done) }()
	await(t, done, "all callbacks")
	barrier(t, p)
	for i, c := range counters {
		if got := c.n.Load(); got != 1 {
			t.Errorf("socket %d: callback called %d times, want 1", i, got)
		}
	}
	// Concurrent unparks of spent parks, and re-parks with unparks racing the wake-ups.
	var again sync.WaitGroup
	for i := range pairs {
		again.Go(func() {
			if p.unpark(pairs[i].rc) {
				t.Errorf("socket %d: spent park reported pending", i)
			}
			if _, err := io.ReadFull(pairs[i].local, make([]byte, 1)); err != nil {
				t.Error(err)
				return
			}
			c := newCounter()
			if err := p.park(pairs[i].rc, c.f); err != nil {
				t.Error(err)
				return
			}
			if _, err := pairs[i].peer.Write([]byte{1}); err != nil {
				t.Error(err)
			}
			// Either the unpark wins (no call ever) or the callback has been taken.
			if !p.unpark(pairs[i].rc) {
				select {
				case <-c.fired:
				case <-time.After(hangLimit):
					t.Errorf("socket %d: callback that unpark reported as taken never came", i)
				}
			}
		})
	}
	again.Wait()
}

// Close with parks pending returns, stops the goroutine (TestMain's goleak check) and calls
// none of the callbacks; park afterwards fails and unpark still reports the pending ones.
func TestParkerClosePending(t *testing.T) {
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	pairs := newParkPairs(t, p, 10)
	c := newCounter()
	for _, pp := range pairs {
		if err := p.park(pp.rc, c.f); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	p.Close() // idempotent
	for _, pp := range pairs {
		pp.send(t)
	}
	// Negative check: nothing can call the callbacks any more, as the parker's goroutine has
	// exited (p.Close waited for it); this bounded wait only gives a bug room to show.
	select {
	case <-c.fired:
		t.Fatal("callback called after close")
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.park(pairs[0].rc, c.f); err == nil {
		t.Fatal("park after close succeeded")
	}
	if !p.unpark(pairs[1].rc) {
		t.Fatal("unpark after close: the pending park was not reported")
	}
}

// Parking and unparking do not allocate once warm.
func TestParkerNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	p := testParker(t)
	pp := newParkPair(t, p)
	c := newCounter()
	f := c.f
	for range 10 {
		p.park(pp.rc, f)
		p.unpark(pp.rc)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := p.park(pp.rc, f); err != nil {
			t.Fatal(err)
		}
		if !p.unpark(pp.rc) {
			t.Fatal("unpark: no pending park")
		}
	})
	if allocs != 0 {
		t.Fatalf("park+unpark: %v allocations, want 0", allocs)
	}
}
