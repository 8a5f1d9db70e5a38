package streamlink

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/looptest"
)

// TestConnFullQueueWaits writes three queues' worth of packets to a Conn whose peer does
// not read: a WriteTo that finds the queue full waits for room (the stream's backpressure)
// and, when none comes within maxWait, drops its packet and returns; what was taken is
// bounded by the queue and the one write in progress. Once the peer reads, it gets every
// packet taken, in order, and then the stream's end.
func TestConnFullQueueWaits(t *testing.T) {
	defer func(d time.Duration) { maxWait = d }(maxWait)
	maxWait = 50 * time.Millisecond
	c, peer := pipeConn(t)
	const size = 16 << 10
	const count = 3 * QueueBytes / size
	type result struct {
		n    int
		err  error
		took time.Duration
	}
	done := make(chan []result, 1)
	go func() {
		var rs []result
		for i := range count {
			start := time.Now()
			n, err := c.WriteTo(packet(uint32(i), size), nil)
			rs = append(rs, result{n, err, time.Since(start)})
		}
		done <- rs
	}()
	// The peer reads nothing until every WriteTo has returned: one that waited for good
	// would never return, and the guard fails the test.
	waited := false
	for i, r := range looptest.Await(t, done, "the WriteTo calls (blocked on the full queue?)") {
		if r.n != size || r.err != nil {
			t.Fatalf("WriteTo %d = %d, %v; want %d, nil", i, r.n, r.err, size)
		}
		waited = waited || r.took >= maxWait
	}
	dropped := c.Dropped()
	if dropped == 0 || dropped >= count {
		t.Fatalf("Dropped() = %d of %d packets; want some but not all", dropped, count)
	}
	if !waited {
		t.Fatal("no WriteTo waited for room before its packet was dropped")
	}
	taken := count - int(dropped)
	if taken*(size+2) > 2*QueueBytes {
		t.Fatalf("%d packets of %d bytes taken: more than the queue and one write (%d bytes)", taken, size, 2*QueueBytes)
	}

	type read struct {
		frames [][]byte
		err    error
	}
	got := make(chan read, 1)
	go func() {
		frames, err := readFrames(peer)
		got <- read{frames, err}
	}()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := looptest.Await(t, closed, "Close"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := looptest.Await(t, got, "the peer's reads")
	if r.err != io.EOF {
		t.Fatalf("peer: stream ended with %v; want io.EOF", r.err)
	}
	if len(r.frames) != taken {
		t.Fatalf("peer read %d packets; want the %d taken (%d sent, %d dropped)", len(r.frames), taken, count, dropped)
	}
	last := -1
	for _, f := range r.frames {
		seq := int(binary.BigEndian.Uint32(f))
		if seq <= last || len(f) != size || string(f) != string(packet(uint32(seq), size)) {
			t.Fatalf("peer read packet %d (%d bytes) after %d: want the packets taken, whole and in order", seq, len(f), last)
		}
		last = seq
	}
}

// TestConnBackpressure writes many queues' worth of packets while the peer reads: the
// writer waits for room instead of dropping, and every packet arrives, in order.
func TestConnBackpressure(t *testing.T) {
	c, peer := pipeConn(t)
	const size = 16 << 10
	const count = 20 * QueueBytes / size
	go func() {
		for i := range count {
			if _, err := c.WriteTo(packet(uint32(i), size), nil); err != nil {
				return
			}
		}
		_ = c.Close()
	}()
	frames, err := readFrames(peer)
	if err != io.EOF {
		t.Fatalf("peer: stream ended with %v; want io.EOF", err)
	}
	if len(frames) != count || c.Dropped() != 0 {
		t.Fatalf("peer read %d packets of %d, %d dropped; want all, none dropped", len(frames), count, c.Dropped())
	}
	for i, f := range frames {
		if string(f) != string(packet(uint32(i), size)) {
			t.Fatalf("packet %d differs", i)
		}
	}
}

// TestConnCloseFlushes queues packets on a Conn whose peer is not reading yet (a net.Pipe
// has no buffer, so nearly all of them are still queued) and closes it: the peer reads
// every packet queued before Close, in order, and then the end of the stream. Writes after
// Close fail.
func TestConnCloseFlushes(t *testing.T) {
	c, peer := pipeConn(t)
	var want [][]byte
	for i := range 50 {
		p := packet(uint32(i), 4+i*97%3000)
		want = append(want, p)
		send(t, c, p, nil)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	frames, err := readFrames(peer)
	if err != io.EOF {
		t.Fatalf("peer: stream ended with %v; want io.EOF", err)
	}
	if len(frames) != len(want) {
		t.Fatalf("peer read %d packets; want the %d queued before Close", len(frames), len(want))
	}
	for i := range want {
		if string(frames[i]) != string(want[i]) {
			t.Fatalf("packet %d: read %d bytes, differing from the %d written", i, len(frames[i]), len(want[i]))
		}
	}
	if err := looptest.Await(t, closed, "Close"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := c.Dropped(); d != 0 {
		t.Fatalf("Dropped() = %d; want 0", d)
	}
	if n, err := c.WriteTo([]byte("late"), nil); !errors.Is(err, net.ErrClosed) || n != 0 {
		t.Fatalf("WriteTo after Close = %d, %v; want 0, net.ErrClosed", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestConnWriteError checks that once the stream cannot be written (its peer closed it),
// WriteTo returns the stream's error.
func TestConnWriteError(t *testing.T) {
	c, peer := pipeConn(t)
	_ = peer.Close()
	send(t, c, []byte("lost"), nil) // queued; the sender's write then fails
	looptest.Await(t, c.s.done, "the sender's end after its write failed")
	if n, err := c.WriteTo([]byte("after"), nil); !errors.Is(err, io.ErrClosedPipe) || n != 0 {
		t.Fatalf("WriteTo on a broken stream = %d, %v; want 0, io.ErrClosedPipe", n, err)
	}
}

// TestConnAddrsAndDeadline checks a Conn over TCP: its addresses are the stream's, every
// packet comes from the far end whatever address it was sent to, and a read deadline
// makes a blocked ReadFrom fail with a timeout that quic-go takes as temporary, after which
// reading works again.
func TestConnAddrsAndDeadline(t *testing.T) {
	ln := listen(t)
	tcp := dialTCP(t, ln.Addr(), "")
	c := ownConn(t, tcp)
	sameAddr(t, "LocalAddr", c.LocalAddr(), tcp.LocalAddr())
	sameAddr(t, "RemoteAddr", c.RemoteAddr(), ln.Addr())
	peerc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	peer := ownConn(t, peerc)

	for _, set := range []func(time.Time) error{c.SetReadDeadline, c.SetDeadline} {
		if err := set(time.Now()); err != nil {
			t.Fatal(err)
		}
		n, _, err := c.ReadFrom(make([]byte, 100))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadFrom past the deadline = %d, %v; want a timeout", n, err)
		}
		// quic-go's Transport (listen) tells a read its Close stopped by Temporary.
		if !err.(net.Error).Temporary() {
			t.Fatalf("ReadFrom past the deadline: %v is not Temporary", err)
		}
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	// The peer sends to an address that is not the stream's: the packet still crosses it.
	send(t, peer, []byte("hello"), &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9})
	if got := recvConn(t, c); string(got) != "hello" {
		t.Fatalf("read %q after the deadline was cleared, want \"hello\"", got)
	}
	send(t, c, []byte("back"), nil) // the write deadline set above does nothing
	if got := recvConn(t, peer); string(got) != "back" {
		t.Fatalf("peer read %q, want \"back\"", got)
	}
}
