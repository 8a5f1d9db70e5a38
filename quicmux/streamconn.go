package quicmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// streamConn is a QUIC stream seen as a net.Conn.
//
// quic-go's Stream.Close closes only the send side and must not run concurrently with Write,
// so CloseWrite and Close take writeMu; Close first moves the write deadline to now so that a
// Write blocked on flow control gives way. Abort resets both directions and may be called at
// any time from any goroutine.
type streamConn struct {
	str    *quic.Stream
	conn   *quic.Conn // the client's connection the stream is on (nil on the server)
	local  net.Addr
	remote net.Addr

	// pendingStatus is set on the client side while the server's status has not been read;
	// only the reading goroutine touches it after construction.
	pendingStatus bool

	writeMu     sync.Mutex
	writeFailed bool // under writeMu: a write ended short, so the stream must not end in a FIN
	closed      sync.Once
}

var (
	_ net.Conn  = (*streamConn)(nil)
	_ flow.Conn = (*streamConn)(nil)
)

// targetAddr is the net.Addr of a flow's destination as the client named it.
type targetAddr struct{ t flow.Target }

func (a targetAddr) Network() string { return "quicgate" }
func (a targetAddr) String() string  { return a.t.String() }

func newStreamConn(str *quic.Stream, local, remote net.Addr) *streamConn {
	return &streamConn{str: str, local: local, remote: remote}
}

// abortStream resets both directions of str with code: STOP_SENDING for what it would
// still receive, RESET_STREAM for what it sends.
func abortStream(str *quic.Stream, code quic.StreamErrorCode) {
	str.CancelRead(code)
	str.CancelWrite(code)
}

// readStatus consumes the server's status if it has not been read yet.
func (c *streamConn) readStatus() error {
	if !c.pendingStatus {
		return nil
	}
	c.pendingStatus = false
	return ReadStatus(c.str)
}

// Read reads the flow's bytes; on the client, the server's status comes first and is
// consumed here. A Read that consumed only the status returns (0, nil) rather than wait for
// more, so that a relay woken by the status does not block.
func (c *streamConn) Read(p []byte) (int, error) {
	if c.pendingStatus {
		if err := c.readStatus(); err != nil {
			return 0, mapStreamErr(err)
		}
		if !c.str.Readable() {
			return 0, nil
		}
	}
	n, err := c.str.Read(p)
	return n, mapStreamErr(err)
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n, err := c.str.Write(p)
	if err != nil {
		c.writeFailed = true
	}
	return n, mapStreamErr(err)
}

// CloseWrite sends FIN; reading goes on. When the peer has closed its end in order
// already (Close: STOP_SENDING with code 0), there is no one left to send the FIN to, as a
// TCP peer that closed its socket takes a FIN without a reset: that is no error. A peer that
// stopped reading with another code reset the flow.
func (c *streamConn) CloseWrite() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	err := c.str.Close()
	if err == nil {
		return nil
	}
	var se *quic.StreamError
	if errors.As(context.Cause(c.str.Context()), &se) && se.Remote {
		if se.ErrorCode == 0 {
			return nil
		}
		return mapStreamErr(se)
	}
	return err
}

// Close ends the flow gracefully where it can: FIN for what was written, STOP_SENDING for
// what will not be read. A Write that Close interrupts (or any write that failed) makes it a
// reset instead, so the far end never takes a cut-short stream for a complete one.
func (c *streamConn) Close() error {
	c.closed.Do(func() {
		c.str.CancelRead(0)
		_ = c.str.SetWriteDeadline(time.Now())
		c.writeMu.Lock()
		if c.writeFailed {
			c.str.CancelWrite(codeFlowReset)
		} else {
			_ = c.str.Close()
		}
		c.writeMu.Unlock()
	})
	return nil
}

// Abort resets the stream both ways, which the far end turns into a TCP reset. After Close
// it does nothing: the flow has ended, and a reset would abort delivery of its last bytes.
func (c *streamConn) Abort() {
	c.closed.Do(func() {
		c.str.CancelWrite(codeFlowReset)
		c.str.CancelRead(codeFlowReset)
	})
}

// Readable reports whether a Read would return at once.
func (c *streamConn) Readable() bool { return c.str.Readable() }

// NotifyReadable calls f once, as soon as a Read would not block (see readNotifier).
func (c *streamConn) NotifyReadable(f func()) { c.str.NotifyReadable(f) }

func (c *streamConn) LocalAddr() net.Addr                { return c.local }
func (c *streamConn) RemoteAddr() net.Addr               { return c.remote }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// mapStreamErr turns a reset by the peer into flow.ErrReset, keeping the QUIC error inside.
// A connection lost or closed under the flow (an idle timeout, a stateless reset, either
// end closing it) is a reset of the flow too: the flow did not end in order, and the error
// must not match net.ErrClosed, which callers take for their own Close. Its text is kept,
// not wrapped.
func mapStreamErr(err error) error {
	if err == nil {
		return nil
	}
	var (
		se  *quic.StreamError
		ite *quic.IdleTimeoutError
		sre *quic.StatelessResetError
		ae  *quic.ApplicationError
		te  *quic.TransportError
		hte *quic.HandshakeTimeoutError
	)
	switch {
	case errors.As(err, &se):
		if se.Remote {
			return fmt.Errorf("%w: %w", flow.ErrReset, err)
		}
	case errors.As(err, &ite), errors.As(err, &sre), errors.As(err, &ae), errors.As(err, &te), errors.As(err, &hte):
		return fmt.Errorf("%w: connection lost: %v", flow.ErrReset, err)
	}
	return err
}
