package streamlink

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// closeFlush bounds how long closing a stream waits for its queued frames (the QUIC
// connection's CONNECTION_CLOSE among them) to be written to a peer that stopped reading.
const closeFlush = time.Second

// sender writes a stream's frames from its queue in one goroutine, so that a writer (quic-go's
// send loop, or the transport answering a stray packet) never blocks on the stream. The queue
// is two buffers that trade places: one fills while the other is written in one call.
type sender struct {
	c       net.Conn
	dropped atomic.Uint64

	mu     sync.Mutex
	queue  []byte
	closed bool
	err    error         // why the stream cannot be written any more
	wake   chan struct{} // capacity 1: the queue was empty and is not
	done   chan struct{} // run has returned
}

func newSender(c net.Conn) *sender {
	s := &sender{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

// send queues p's frame, or drops it when the queue is full. It fails only once the stream
// is closed or broken.
func (s *sender) send(p []byte) error {
	if len(p) > MaxPacket {
		return ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if len(s.queue)+2+len(p) > QueueBytes {
		s.dropped.Add(1)
		return nil
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
		s.mu.Unlock()
		if len(b) > 0 {
			if _, err := s.c.Write(b); err != nil {
				s.fail(err)
				return
			}
		}
		spare = b
		if !open {
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
}

// close stops taking frames, writes those queued (for at most closeFlush) and waits for the
// writer. The caller closes the stream afterwards.
func (s *sender) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.closed = true
	if s.err == nil {
		s.err = net.ErrClosed
	}
	close(s.wake)
	s.mu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(closeFlush))
	<-s.done
}
