package streamlink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/looptest"
)

// TestServerExchange runs packets both ways over one stream between a Conn and a Server:
// they arrive in order and whole, the Server reads them from the stream's remote address
// (the client's local one) and sends to it. A packet for an address with no stream is
// taken (as UDP would) and goes nowhere; a packet the Server's buffers cannot hold is
// dropped whole.
func TestServerExchange(t *testing.T) {
	srv := newServer(t, ServerConfig{})
	sameAddr(t, "Server.LocalAddr", srv.LocalAddr(), srv.Addr())
	c := dialConn(t, srv.Addr())

	// Sizes up to 16383 bytes (quic-go's largest), more in all than the queues hold: the
	// writers wait for room (backpressure), and none is dropped.
	sizes := []int{4, 16383, 1452, 5, 16383, 16384}
	for i := range 200 {
		sizes = append(sizes, 4+i*97%5000)
	}
	sent := make(chan error, 1)
	sendAll := func(pc net.PacketConn, to func() net.Addr) {
		for i, n := range sizes {
			p := packet(uint32(i), n)
			if k, err := pc.WriteTo(p, to()); err != nil || k != len(p) {
				sent <- fmt.Errorf("WriteTo packet %d: %d, %v", i, k, err)
				return
			}
		}
		sent <- nil
	}
	go sendAll(c, srv.Addr)
	var peer net.Addr
	for i, n := range sizes {
		got, addr := recvServer(t, srv)
		sameAddr(t, fmt.Sprintf("packet %d: Server.ReadFrom's address", i), addr, c.LocalAddr())
		if !bytes.Equal(got, packet(uint32(i), n)) {
			t.Fatalf("server read packet %d: %d bytes, differing from the %d sent", i, len(got), n)
		}
		peer = addr
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.Claim(peer); !ok { // a claimed stream's writers wait for room, as the client's do
		t.Fatal("Claim of the client's stream failed")
	}
	go sendAll(srv, func() net.Addr { return peer })
	for i, n := range sizes {
		if got := recvConn(t, c); !bytes.Equal(got, packet(uint32(i), n)) {
			t.Fatalf("client read packet %d: %d bytes, differing from the %d sent", i, len(got), n)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// No stream: taken, and not sent on the one stream there is.
	nowhere := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	send(t, srv, []byte("nowhere"), nowhere)
	send(t, srv, []byte("marker"), peer)
	if got := recvConn(t, c); string(got) != "marker" {
		t.Fatalf("client read %q; want \"marker\" (the packet for no stream must go nowhere)", got)
	}

	// Too large for the framing: refused. Too large for the Server's buffers: dropped
	// on arrival, and the next packet is read.
	if n, err := srv.WriteTo(make([]byte, MaxPacket+1), peer); !errors.Is(err, ErrTooLarge) || n != 0 {
		t.Fatalf("Server.WriteTo(MaxPacket+1 bytes) = %d, %v; want 0, ErrTooLarge", n, err)
	}
	send(t, c, packet(1, recvBuffer+1), nil)
	send(t, c, []byte("after"), nil)
	if got, _ := recvServer(t, srv); string(got) != "after" {
		t.Fatalf("server read %d bytes; want \"after\" (a packet beyond its buffer is dropped)", len(got))
	}
	if c.Dropped() != 0 {
		t.Fatalf("client Dropped() = %d; want 0", c.Dropped())
	}
}

// TestServerTwoStreams checks that the Server tells two streams apart by address, both
// reading and writing.
func TestServerTwoStreams(t *testing.T) {
	srv := newServer(t, ServerConfig{})
	clients := map[string]*Conn{"one": dialConn(t, srv.Addr()), "two": dialConn(t, srv.Addr())}
	for name, c := range clients {
		send(t, c, []byte(name), nil)
	}
	addrs := map[string]net.Addr{}
	for range clients {
		got, addr := recvServer(t, srv)
		c := clients[string(got)]
		if c == nil || addrs[string(got)] != nil {
			t.Fatalf("server read %q", got)
		}
		sameAddr(t, "address of "+string(got), addr, c.LocalAddr())
		addrs[string(got)] = addr
	}
	for name, addr := range addrs {
		send(t, srv, []byte("to "+name), addr)
	}
	for name, c := range clients {
		if got := recvConn(t, c); string(got) != "to "+name {
			t.Fatalf("client %s read %q", name, got)
		}
	}
}

// TestServerHandshakeTimeout opens a stream, claims it, and then opens another and leaves
// it unclaimed: the second is closed when its HandshakeTimeout passes, with Rejected told
// "timeout", while the first, whose own timeout started earlier, still carries packets
// both ways afterwards.
func TestServerHandshakeTimeout(t *testing.T) {
	rec, rejected := newRejections()
	srv := newServer(t, ServerConfig{HandshakeTimeout: 300 * time.Millisecond, Rejected: rejected})

	claimed := dialConn(t, srv.Addr())
	send(t, claimed, []byte("claim me"), nil)
	_, addr := recvServer(t, srv)
	ctx, ok := srv.Claim(addr)
	if !ok || ctx == nil {
		t.Fatalf("Claim(%v) = %v, %v; want the stream's context", addr, ctx, ok)
	}

	late := dialConn(t, srv.Addr())
	rec.next(t, late.LocalAddr(), "timeout")
	expectEOF(t, late)

	send(t, srv, []byte("still here"), addr)
	if got := recvConn(t, claimed); string(got) != "still here" {
		t.Fatalf("claimed stream read %q after the other's timeout", got)
	}
	send(t, claimed, []byte("me too"), nil)
	if got, from := recvServer(t, srv); string(got) != "me too" || from.String() != addr.String() {
		t.Fatalf("server read %q from %v; want \"me too\" from %v", got, from, addr)
	}
	if ctx.Err() != nil {
		t.Fatalf("the claimed stream's context ended: %v", ctx.Err())
	}
	rec.none(t)
}

// TestServerMaxPendingPerSource checks the bound on pending streams of one source address:
// a second stream from 127.0.0.1 while the first is pending is closed at once ("busy"),
// and once the first is claimed another is let in.
func TestServerMaxPendingPerSource(t *testing.T) {
	rec, rejected := newRejections()
	srv := newServer(t, ServerConfig{MaxPendingPerSource: 1, Rejected: rejected})

	first := dialConn(t, srv.Addr())
	send(t, first, []byte("first"), nil) // read: the first stream is admitted
	_, addr := recvServer(t, srv)
	sameAddr(t, "first stream", addr, first.LocalAddr())

	second := dialConn(t, srv.Addr())
	if r := rec.next(t, second.LocalAddr(), "busy"); r.err != nil {
		t.Fatalf("busy with error %v; want none", r.err)
	}
	expectEOF(t, second)

	if _, ok := srv.Claim(addr); !ok {
		t.Fatalf("Claim(%v) of the first stream failed", addr)
	}
	third := dialConn(t, srv.Addr())
	send(t, third, []byte("third"), nil)
	got, from := recvServer(t, srv)
	if string(got) != "third" {
		t.Fatalf("server read %q; want \"third\"", got)
	}
	sameAddr(t, "third stream", from, third.LocalAddr())
	send(t, srv, []byte("welcome"), from)
	if got := recvConn(t, third); string(got) != "welcome" {
		t.Fatalf("third stream read %q", got)
	}
	rec.none(t)
}

// TestServerMaxPending checks the bound on all pending streams, from any source: with
// MaxPending 1, a stream from 127.0.0.2 while one from 127.0.0.1 is pending is busy, and
// is let in once that one is claimed.
func TestServerMaxPending(t *testing.T) {
	if c, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}); err != nil {
		t.Skipf("no 127.0.0.2 on this host's loopback: %v", err)
	} else {
		_ = c.Close()
	}
	rec, rejected := newRejections()
	srv := newServer(t, ServerConfig{MaxPending: 1, Rejected: rejected})

	first := dialConn(t, srv.Addr())
	send(t, first, []byte("first"), nil)
	_, addr := recvServer(t, srv)

	other := ownConn(t, dialTCP(t, srv.Addr(), "127.0.0.2"))
	rec.next(t, other.LocalAddr(), "busy")
	expectEOF(t, other)

	if _, ok := srv.Claim(addr); !ok {
		t.Fatalf("Claim(%v) failed", addr)
	}
	again := ownConn(t, dialTCP(t, srv.Addr(), "127.0.0.2"))
	send(t, again, []byte("again"), nil)
	got, from := recvServer(t, srv)
	if string(got) != "again" {
		t.Fatalf("server read %q; want \"again\"", got)
	}
	sameAddr(t, "stream from 127.0.0.2", from, again.LocalAddr())
	rec.none(t)
}

// countingConn counts the reads and writes on a stream a Handshake returned.
type countingConn struct {
	net.Conn
	reads, writes atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error)  { c.reads.Add(1); return c.Conn.Read(p) }
func (c *countingConn) Write(p []byte) (int, error) { c.writes.Add(1); return c.Conn.Write(p) }

// TestServerHandshake checks ServerConfig.Handshake: one that succeeds gets a context with
// a deadline and its stream is the one packets then cross; one that fails closes the
// stream with Rejected told "handshake" and the error.
func TestServerHandshake(t *testing.T) {
	rec, rejected := newRejections()
	refused := errors.New("wrong preface")
	wrapped := make(chan *countingConn, 1)
	srv := newServer(t, ServerConfig{Rejected: rejected, Handshake: func(ctx context.Context, c net.Conn) (net.Conn, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("handshake context without a deadline")
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		if string(b) != "SLv1" {
			return nil, refused
		}
		cc := &countingConn{Conn: c}
		wrapped <- cc
		return cc, nil
	}})

	tcp := dialTCP(t, srv.Addr(), "")
	if _, err := tcp.Write([]byte("SLv1")); err != nil {
		t.Fatal(err)
	}
	good := ownConn(t, tcp)
	send(t, good, []byte("through"), nil)
	got, addr := recvServer(t, srv)
	if string(got) != "through" {
		t.Fatalf("server read %q", got)
	}
	sameAddr(t, "address after the handshake", addr, good.LocalAddr())
	send(t, srv, []byte("and back"), addr)
	if got := recvConn(t, good); string(got) != "and back" {
		t.Fatalf("client read %q", got)
	}
	cc := looptest.Await(t, wrapped, "the handshake")
	if cc.reads.Load() == 0 || cc.writes.Load() == 0 {
		t.Fatalf("the stream the handshake returned saw %d reads and %d writes; want it to carry the packets", cc.reads.Load(), cc.writes.Load())
	}

	tcp = dialTCP(t, srv.Addr(), "")
	if _, err := tcp.Write([]byte("HTTP")); err != nil {
		t.Fatal(err)
	}
	bad := ownConn(t, tcp)
	if r := rec.next(t, bad.LocalAddr(), "handshake"); !errors.Is(r.err, refused) {
		t.Fatalf("handshake rejected with %v; want the handshake's error", r.err)
	}
	expectEOF(t, bad)
	rec.none(t)
}

// TestServerHandshakeSlowloris checks a stream whose Handshake waits for bytes that never
// come (and ignores its context): the HandshakeTimeout closes it, and Rejected is told
// once, "timeout", not a second time for the handshake that failed because of it.
func TestServerHandshakeSlowloris(t *testing.T) {
	rec, rejected := newRejections()
	srv := newServer(t, ServerConfig{HandshakeTimeout: 200 * time.Millisecond, Rejected: rejected,
		Handshake: func(_ context.Context, c net.Conn) (net.Conn, error) {
			_, err := io.ReadFull(c, make([]byte, 4))
			return c, err
		}})
	slow := dialConn(t, srv.Addr())
	rec.next(t, slow.LocalAddr(), "timeout")
	expectEOF(t, slow)
	if err := srv.Close(); err != nil { // waits for the stream's goroutine: its report is made
		t.Fatal(err)
	}
	rec.none(t)
}

// TestServerClaimContext checks Claim and CloseStream: Claim of an address with no stream
// fails; a claimed stream's context ends when the client closes the stream, and the
// address has no stream afterwards; CloseStream writes what was queued on the stream,
// then closes it, and its context ends.
func TestServerClaimContext(t *testing.T) {
	srv := newServer(t, ServerConfig{})
	if ctx, ok := srv.Claim(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); ok || ctx != nil {
		t.Fatalf("Claim of an address with no stream = %v, %v; want nil, false", ctx, ok)
	}
	srv.CloseStream(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}) // nothing to close

	closing := dialConn(t, srv.Addr())
	send(t, closing, []byte("hi"), nil)
	_, addr := recvServer(t, srv)
	ctx, ok := srv.Claim(addr)
	if !ok {
		t.Fatalf("Claim(%v) failed", addr)
	}
	if ctx2, ok := srv.Claim(addr); !ok || ctx2 != ctx {
		t.Fatalf("second Claim(%v) = %v, %v; want the same context", addr, ctx2, ok)
	}
	if err := closing.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, ctx, "the claimed stream's context after the client closed it")
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("context ended with %v; want context.Canceled", ctx.Err())
	}
	if _, ok := srv.Claim(addr); ok {
		t.Fatalf("Claim(%v) of an ended stream succeeded", addr)
	}
	send(t, srv, []byte("gone"), addr) // as a packet lost

	closed := dialConn(t, srv.Addr())
	send(t, closed, []byte("hi"), nil)
	_, addr = recvServer(t, srv)
	ctx, ok = srv.Claim(addr)
	if !ok {
		t.Fatalf("Claim(%v) failed", addr)
	}
	for i := range 20 {
		send(t, srv, packet(uint32(i), 1000+i), addr)
	}
	srv.CloseStream(addr)
	for i := range 20 {
		if got := recvConn(t, closed); !bytes.Equal(got, packet(uint32(i), 1000+i)) {
			t.Fatalf("packet %d queued before CloseStream: read %d bytes, differing", i, len(got))
		}
	}
	expectEOF(t, closed)
	waitDone(t, ctx, "the stream's context after CloseStream")
}

// TestServerReadDeadline checks ReadFrom's deadline: a deadline that passes (set to now,
// or reached while ReadFrom waits, or moved while it waits) makes ReadFrom fail with an
// error that is a timeout and Temporary, as quic-go's Transport.Close needs; a cleared one
// lets it read again.
func TestServerReadDeadline(t *testing.T) {
	srv := newServer(t, ServerConfig{})
	c := dialConn(t, srv.Addr())
	p := make([]byte, 100)

	checkTimeout := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: ReadFrom = %v; want a timeout", what, err)
		}
		// quic-go's Transport (listen) tells a read its Close stopped by Temporary.
		if !err.(net.Error).Temporary() {
			t.Fatalf("%s: %v is not Temporary", what, err)
		}
	}
	readErr := func() <-chan error {
		errc := make(chan error, 1)
		go func() {
			_, _, err := srv.ReadFrom(p)
			errc <- err
		}()
		return errc
	}

	// Set to now while ReadFrom waits (or before it starts: it fails either way).
	errc := readErr()
	if err := srv.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	checkTimeout("deadline set to now", looptest.Await(t, errc, "ReadFrom after SetReadDeadline(now)"))
	_, _, err := srv.ReadFrom(p)
	checkTimeout("deadline in the past", err)

	// A deadline ahead, reached while ReadFrom waits.
	_ = srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	checkTimeout("deadline reached", looptest.Await(t, readErr(), "ReadFrom with a deadline 20 ms ahead"))

	// A far deadline, brought to now while ReadFrom waits.
	_ = srv.SetReadDeadline(time.Now().Add(time.Hour))
	errc = readErr()
	_ = srv.SetDeadline(time.Now())
	checkTimeout("deadline moved to now", looptest.Await(t, errc, "ReadFrom after its deadline moved to now"))

	// Cleared: ReadFrom waits for the next packet.
	if err := srv.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	errc = readErr()
	send(t, c, []byte("again"), nil)
	if err := looptest.Await(t, errc, "ReadFrom after the deadline was cleared"); err != nil {
		t.Fatalf("ReadFrom after the deadline was cleared: %v", err)
	}
	if string(p[:5]) != "again" {
		t.Fatalf("read %q, want \"again\"", p[:5])
	}
	if err := srv.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestServerClose checks that Close ends everything: a ReadFrom waiting returns
// net.ErrClosed, as later ones do; a handshake in progress sees its context end and has
// returned; a claimed stream is closed (its client reads the end) and its context has
// ended; the listener is closed.
func TestServerClose(t *testing.T) {
	entered := make(chan struct{})
	var returned atomic.Bool
	srv := newServer(t, ServerConfig{Handshake: func(ctx context.Context, c net.Conn) (net.Conn, error) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, err
		}
		if b[0] == 'p' {
			return c, nil
		}
		close(entered)
		<-ctx.Done()
		returned.Store(true)
		return nil, ctx.Err()
	}})

	tcp := dialTCP(t, srv.Addr(), "")
	if _, err := tcp.Write([]byte("p")); err != nil {
		t.Fatal(err)
	}
	c := ownConn(t, tcp)
	send(t, c, []byte("x"), nil)
	_, addr := recvServer(t, srv)
	ctx, ok := srv.Claim(addr)
	if !ok {
		t.Fatalf("Claim(%v) failed", addr)
	}
	hanging := dialTCP(t, srv.Addr(), "")
	if _, err := hanging.Write([]byte("h")); err != nil {
		t.Fatal(err)
	}
	looptest.Await(t, entered, "the handshake")

	errc := make(chan error, 1)
	go func() {
		_, _, err := srv.ReadFrom(make([]byte, 100))
		errc <- err
	}()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !returned.Load() {
		t.Fatal("Close returned before the handshake in progress did")
	}
	if ctx.Err() == nil {
		t.Fatal("Close returned with the claimed stream's context alive")
	}
	if err := looptest.Await(t, errc, "ReadFrom during Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom during Close: %v; want net.ErrClosed", err)
	}
	if _, _, err := srv.ReadFrom(make([]byte, 100)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v; want net.ErrClosed", err)
	}
	send(t, srv, []byte("late"), addr) // no stream any more: as a packet lost
	expectEOF(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = hanging.SetReadDeadline(time.Now().Add(guard))
	if n, err := hanging.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("stream in its handshake: read %d, %v after Close; want io.EOF", n, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The listener is closed: nothing accepts a stream any more.
	if c, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		_ = c.Close()
		t.Fatal("a stream was accepted after Close")
	}
}

// The per-source bound counts an IPv4 address, and an IPv6 address's /64: one host cannot
// take every pending slot by using many addresses of its prefix.
func TestSourceOf(t *testing.T) {
	a := sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::10"), Port: 1})
	b := sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::20"), Port: 2})
	c := sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::10"), Port: 1})
	if a != b || a == c {
		t.Fatalf("sources %v, %v, %v: want the first two equal (one /64) and the third apart", a, b, c)
	}
	v4 := sourceOf(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1})
	if v4.String() != "192.0.2.7" {
		t.Fatalf("IPv4 source %v, want 192.0.2.7", v4)
	}
}
