package flow

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Conn is one end of a flow as the relay sees it: the app's socket behind an ingress (a
// -L connection, a netstack endpoint), the destination socket the server dialed, or the QUIC
// stream between the two. The relay uses these five methods and nothing else, so every
// ingress ends its flows the same way.
//
// The table of what each event becomes at the other end is in docs/protocol.md ("How a flow
// ends").
type Conn interface {
	// Read returns bytes the peer sent. io.EOF means the peer ended its side in order (a TCP
	// FIN, a stream FIN): it sends nothing more, but may still read. An error matching
	// IsReset means the peer reset the flow (a TCP RST, a stream reset). Any other error
	// means the end failed (a keepalive or idle timeout, a lost connection). After an error
	// other than io.EOF the relay aborts the flow.
	Read(p []byte) (int, error)

	// Write hands p on towards the peer. An error means some of p may never arrive; the
	// relay then aborts the flow.
	Write(p []byte) (int, error)

	// CloseWrite sends an orderly end (a FIN) after every byte written; reading goes on.
	CloseWrite() error

	// Abort resets the flow (a TCP RST, a stream reset) and releases the end: bytes not yet
	// delivered are dropped, and the peer sees a failure, never a clean end. It unblocks a
	// Read or Write in progress, may be called from any goroutine at any time, and may be
	// called more than once. After Close it does nothing.
	Abort()

	// Close releases the end once the relay is done with it. It does not reset: what was
	// written, and a FIN sent by CloseWrite, are still delivered. After Abort it does
	// nothing.
	Close() error
}

// ErrNoHalfClose is CloseWrite's error on a conn that cannot end its send side alone.
var ErrNoHalfClose = errors.New("flow: connection cannot half-close")

// AsConn gives c the flow contract: c itself if it has it, a *net.TCPConn (or any conn
// with SetLinger, as gVisor's) made to reset with SO_LINGER 0, and any other net.Conn
// adapted as best it can be: CloseWrite is c's if it has one (else ErrNoHalfClose, which makes
// the relay abort), and Abort can only close.
func AsConn(c net.Conn) Conn {
	switch c := c.(type) {
	case Conn:
		return c
	case *net.TCPConn:
		return &tcpFlow{TCPConn: c}
	}
	return &adaptedFlow{Conn: c}
}

// tcpFlow is a kernel TCP socket under the contract.
type tcpFlow struct {
	*net.TCPConn
	once sync.Once
}

// Abort sends a RST: SO_LINGER 0 makes close(2) reset the connection.
func (c *tcpFlow) Abort() {
	c.once.Do(func() {
		_ = c.TCPConn.SetLinger(0)
		_ = c.TCPConn.Close()
	})
}

func (c *tcpFlow) Close() error {
	err := net.ErrClosed
	c.once.Do(func() { err = c.TCPConn.Close() })
	return err
}

// adaptedFlow is a net.Conn without the contract.
type adaptedFlow struct {
	net.Conn
	once sync.Once
}

func (c *adaptedFlow) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%w: %T", ErrNoHalfClose, c.Conn)
}

func (c *adaptedFlow) Abort() { c.once.Do(func() { _ = c.Conn.Close() }) }

func (c *adaptedFlow) Close() error {
	err := net.ErrClosed
	c.once.Do(func() { err = c.Conn.Close() })
	return err
}
