package streamlink

import (
	"net"
	"sync"
	"time"
)

// readBuffer is the buffer a stream is read through: frames are read from it, so a stream
// is read in large chunks whatever its packets' sizes.
const readBuffer = 64 << 10

// Conn is the client's end: a net.PacketConn over one stream (a TLS connection to the server,
// say), for a quic.Transport. Every packet read comes from, and every packet written goes to,
// the stream's peer, whatever address WriteTo names. A write waits while the queue
// (QueueBytes) is full, up to a second, and then drops its packet: that wait is the stream's
// backpressure. A read deadline ends the stream's use once it fires inside
// a frame (quic-go sets one only to stop reading when it closes). Close writes what is
// queued and closes the stream.
type Conn struct {
	c     net.Conn
	fr    *frameReader
	s     *sender
	close sync.Once
}

var _ net.PacketConn = (*Conn)(nil)

// NewConn returns the packet conn over c, which it owns from now on.
func NewConn(c net.Conn) *Conn {
	return &Conn{c: c, fr: newFrameReader(c), s: newSender(c, true)}
}

// ReadFrom reads the next packet; its address is the stream's far end. It fails when the
// stream ends (io.EOF, io.ErrUnexpectedEOF inside a frame) or is closed.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.fr.readFrame(p)
	return n, c.c.RemoteAddr(), err
}

// WriteTo queues p for the stream's far end (addr is not looked at).
func (c *Conn) WriteTo(p []byte, _ net.Addr) (int, error) {
	if err := c.s.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes the queued packets (for at most a second) and closes the stream.
func (c *Conn) Close() error {
	var err error
	c.close.Do(func() {
		err = closeStream(c.c, c.s.close())
	})
	return err
}

// Dropped is how many packets were dropped because the stream's queue was full.
func (c *Conn) Dropped() uint64 { return c.s.dropped.Load() }

// LocalAddr is the stream's local address.
func (c *Conn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// RemoteAddr is the stream's far end, the address every packet comes from.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// SetDeadline sets the read deadline (a write's wait has its own bound).
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline does nothing: a write's wait has its own bound (a second).
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer do nothing: a stream's buffers are its TCP socket's, which
// the kernel sizes. quic-go asks for larger ones on every packet conn it is given (and warns
// when it cannot), as a UDP socket needs them.
func (c *Conn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing: see SetReadBuffer.
func (c *Conn) SetWriteBuffer(int) error { return nil }
