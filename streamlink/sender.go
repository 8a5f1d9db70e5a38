package streamlink

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeFlush bounds how long closing a stream waits for its queued frames (the QUIC
// connection's CONNECTION_CLOSE among them) to be written to a peer that stopped reading;
// maxWait, how long a packet waits for room in a full queue before it is dropped.
const closeFlush = 250 * time.Millisecond

var maxWait = time.Second // a variable for the tests

// sender writes a stream's frames from its queue in one goroutine. The queue is two buffers
// that trade places: one fills while the other is written in one call. A writer that finds
// it full waits for room (at most maxWait): that wait is the stream's backpressure, which
// quic-go's send loop takes as a busy socket (its send queue fills and the connection packs
// nothing more), so a connection sends exactly as fast as the stream carries.
type sender struct {
	c       net.Conn
	dropped atomic.Uint64
	// patient: a writer that finds the queue full waits for room. A server's stream is not
	// until its QUIC connection is accepted (Server.Claim): quic-go's transport answers
	// strangers (stateless resets, refusals) from one goroutine for every peer, which a peer
	// that reads nothing must not hold up.
	patient atomic.Bool

	mu      sync.Mutex
	queue   []byte
	closed  bool
	flushed bool          // run wrote the last queued frame after close, and returned
	err     error         // why the stream cannot be written any more
	wake    chan struct{} // capacity 1: the queue was empty and is not
	room    chan struct{} // closed (and replaced) when the writer takes the queue
	done    chan struct{} // run has returned
}

func newSender(c net.Conn, patient bool) *sender {
	tuneStream(c)
	s := &sender{c: c, wake: make(chan struct{}, 1), room: make(chan struct{}), done: make(chan struct{})}
	s.patient.Store(patient)
	go s.run()
	return s
}

// send queues p's frame, waiting while the queue is full; a packet that finds no room
// within maxWait (a stream that carries nothing) is dropped. It fails only once the stream
// is closed or broken.
func (s *sender) send(p []byte) error {
	if len(p) > MaxPacket {
		return ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var timeout <-chan time.Time
	for s.err == nil && len(s.queue) > 0 && len(s.queue)+2+len(p) > QueueBytes && s.patient.Load() {
		if timeout == nil {
			t := time.NewTimer(maxWait)
			defer t.Stop()
			timeout = t.C
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
			s.mu.Lock()
		case <-timeout:
			s.mu.Lock()
			if s.err == nil && len(s.queue)+2+len(p) > QueueBytes {
				s.dropped.Add(1)
				return nil
			}
		}
	}
	if s.err != nil {
		return s.err
	}
	if len(s.queue) == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.queue = appendFrame(s.queue, p)
	return nil
}

func (s *sender) run() {
	defer close(s.done)
	var spare []byte
	for {
		_, open := <-s.wake
		s.mu.Lock()
		b := s.queue
		s.queue = spare[:0]
		close(s.room)
		s.room = make(chan struct{})
		s.mu.Unlock()
		if len(b) > 0 {
			if _, err := s.c.Write(b); err != nil {
				s.fail(err)
				return
			}
		}
		spare = b
		if !open {
			s.mu.Lock()
			s.flushed = true
			s.mu.Unlock()
			return
		}
	}
}

// fail records why the stream cannot be written: later sends return it.
func (s *sender) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	s.queue = nil
	close(s.room) // writers waiting for room see the error
	s.room = make(chan struct{})
}

// close stops taking frames, writes those queued (for at most closeFlush) and waits for the
// writer; it reports whether everything queued was written. The caller closes the stream
// afterwards (closeStream).
func (s *sender) close() (flushed bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return s.wasFlushed()
	}
	s.closed = true
	if s.err == nil {
		s.err = net.ErrClosed
	}
	close(s.wake)
	close(s.room)
	s.room = make(chan struct{})
	s.mu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(closeFlush))
	<-s.done
	return s.wasFlushed()
}

func (s *sender) wasFlushed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushed
}

// closeStream closes c once its sender has closed: politely (a TLS session's close_notify)
// when everything queued was written, and otherwise by closing the socket underneath at
// once, since a TLS close would wait up to five more seconds to write its alert to a peer
// that reads nothing.
func closeStream(c net.Conn, flushed bool) error {
	if flushed {
		return c.Close()
	}
	return innermost(c).Close()
}

// innermost is the connection under c's layers (TLS sessions, a proxy's buffered conn).
func innermost(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}
