package flow

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakePacketConn is a PacketConn in memory: send hands packets to the relay as if they came
// from the end's peer, and what the relay writes is kept in got.
type fakePacketConn struct {
	mu     sync.Mutex
	out    func([][]byte)
	ended  func(error)
	got    [][]byte
	gotCh  chan struct{} // signalled on every write
	closed chan error    // receives Close's reason, once
	once   sync.Once
}

func newFakePacketConn() *fakePacketConn {
	return &fakePacketConn{gotCh: make(chan struct{}, 1), closed: make(chan error, 1)}
}

func (f *fakePacketConn) Start(out func([][]byte), ended func(error)) {
	f.mu.Lock()
	f.out, f.ended = out, ended
	f.mu.Unlock()
}

func (f *fakePacketConn) send(ps ...[]byte) {
	f.mu.Lock()
	out := f.out
	f.mu.Unlock()
	out(ps)
}

func (f *fakePacketConn) end(err error) {
	f.mu.Lock()
	ended := f.ended
	f.mu.Unlock()
	ended(err)
}

func (f *fakePacketConn) WritePackets(ps [][]byte) error {
	f.mu.Lock()
	for _, p := range ps {
		f.got = append(f.got, bytes.Clone(p))
	}
	f.mu.Unlock()
	select {
	case f.gotCh <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakePacketConn) Close(why error) { f.once.Do(func() { f.closed <- why }) }

// waitGot waits until the fake has been written n packets, and returns them.
func (f *fakePacketConn) waitGot(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.After(hangLimit)
	for {
		f.mu.Lock()
		got := f.got
		f.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-f.gotCh:
		case <-deadline:
			t.Fatalf("%d packets written within %v, want %d", len(got), hangLimit, n)
		}
	}
}

// udpEcho serves a UDP port that sends every packet back.
func udpEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	go func() {
		buf := make([]byte, MaxUDPPacket)
		for {
			k, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:k], from)
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func dialUDPSocket(t *testing.T, to net.Addr, p *Parker) *UDPSocket {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	s, err := NewUDPSocket(c, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A relay between a socket connected to an echo server and a fake end moves packets both
// ways whole, many in one batch (GSO and GRO on Linux) and one of every size up to the
// largest, and an idle socket waits in the parker; closing the flow ends it with the
// reason and leaves no goroutine.
func TestRelayPacketsUDPSocket(t *testing.T) {
	for _, parked := range []bool{true, false} {
		var p *Parker
		if parked {
			var err error
			if p, err = NewParker(); err != nil {
				t.Skip("no parker here")
			}
		}
		echoSrv := udpEcho(t)
		sock := dialUDPSocket(t, echoSrv.LocalAddr(), p)
		app := newFakePacketConn()
		done := make(chan error, 1)
		stop := RelayPackets(context.Background(), app, sock, PacketRelayOptions{}, func(_ PacketStats, err error) { done <- err })

		var batch [][]byte
		for i := range 100 {
			batch = append(batch, bytes.Repeat([]byte{byte(i)}, 1200))
		}
		batch = append(batch, []byte("short"), nil, bytes.Repeat([]byte{7}, 60000))
		app.send(batch...)
		got := app.waitGot(t, len(batch))
		sizes := map[int]int{}
		for _, g := range got {
			sizes[len(g)]++
		}
		if sizes[1200] != 100 || sizes[5] != 1 || sizes[0] != 1 || sizes[60000] != 1 {
			t.Fatalf("parked=%v: echoed sizes %v, want 100 of 1200, one each of 5, 0, 60000", parked, sizes)
		}
		for _, g := range got {
			if len(g) == 1200 && !bytes.Equal(g, bytes.Repeat(g[:1], 1200)) {
				t.Fatalf("parked=%v: a packet came back changed", parked)
			}
		}
		stop(net.ErrClosed)
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("parked=%v: the flow ended with %v, want stop's reason", parked, err)
		}
		if why := <-app.closed; !errors.Is(why, net.ErrClosed) {
			t.Fatalf("parked=%v: the app's end was closed with %v", parked, why)
		}
		if p != nil {
			p.Close()
		}
	}
}

// A destination whose port is closed answers ICMP port unreachable: the socket's end ends
// the flow with ECONNREFUSED, and the app's end is closed with it.
func TestRelayPacketsPortUnreachable(t *testing.T) {
	closed, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.LocalAddr()
	_ = closed.Close()
	p, _ := NewParker()
	if p != nil {
		defer p.Close()
	}
	sock := dialUDPSocket(t, addr, p)
	app := newFakePacketConn()
	done := make(chan error, 1)
	RelayPackets(context.Background(), app, sock, PacketRelayOptions{}, func(_ PacketStats, err error) { done <- err })
	app.send([]byte("anyone?"))
	err = await(t, done, "the flow's end")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the flow ended with %v, want ECONNREFUSED", err)
	}
	if why := <-app.closed; !errors.Is(why, syscall.ECONNREFUSED) {
		t.Fatalf("the app's end was closed with %v, want ECONNREFUSED", why)
	}
}

// A flow that moves nothing for its idle timeout ends with ErrIdle; one packet resets the
// clock. An end that ends by itself ends the flow with its reason, and ctx ending ends it
// with ctx's cause.
func TestRelayPacketsEnds(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		a, b := newFakePacketConn(), newFakePacketConn()
		done := make(chan error, 1)
		start := time.Now()
		RelayPackets(context.Background(), a, b, PacketRelayOptions{IdleTimeout: 100 * time.Millisecond}, func(_ PacketStats, err error) { done <- err })
		if err := await(t, done, "the idle end"); !errors.Is(err, ErrIdle) {
			t.Fatalf("ended with %v, want ErrIdle", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("idle after %v, before its timeout", d)
		}
		if why := <-b.closed; !errors.Is(why, ErrIdle) {
			t.Fatalf("b closed with %v", why)
		}
	})
	t.Run("an end ends", func(t *testing.T) {
		a, b := newFakePacketConn(), newFakePacketConn()
		done := make(chan PacketStats, 1)
		var why error
		RelayPackets(context.Background(), a, b, PacketRelayOptions{}, func(s PacketStats, err error) { why = err; done <- s })
		a.send([]byte("one"), []byte("two"))
		b.send([]byte("three"))
		b.end(ErrReset)
		s := await(t, done, "the end")
		if !errors.Is(why, ErrReset) {
			t.Fatalf("ended with %v, want b's reset", why)
		}
		if s.AtoB != 6 || s.PacketsAtoB != 2 || s.BtoA != 5 || s.PacketsBtoA != 1 {
			t.Fatalf("stats %+v", s)
		}
		if w := <-a.closed; !errors.Is(w, ErrReset) {
			t.Fatalf("a closed with %v", w)
		}
	})
	t.Run("ctx", func(t *testing.T) {
		a, b := newFakePacketConn(), newFakePacketConn()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		RelayPackets(ctx, a, b, PacketRelayOptions{}, func(_ PacketStats, err error) { done <- err })
		cancel()
		if err := await(t, done, "the end"); !errors.Is(err, context.Canceled) {
			t.Fatalf("ended with %v, want context.Canceled", err)
		}
	})
}
