package netstack

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// TCPConn is a TCP connection the stack terminated (what TCPRequest.Accept returns). Besides
// net.Conn it can half-close (CloseWrite sends a FIN) and abort (Abort sends a RST), and its
// errors say how the app ended the connection: io.EOF for a FIN, an error matching
// syscall.ECONNRESET for a RST, anything else for a failure (a keepalive timeout, say). That
// is the relay's flow contract (quicmux.FlowConn), without this package importing it.
type TCPConn struct {
	*gonet.TCPConn
	ep   tcpip.Endpoint
	once sync.Once
}

func newTCPConn(c *gonet.TCPConn, ep tcpip.Endpoint) *TCPConn {
	return &TCPConn{TCPConn: c, ep: ep}
}

// Read reads what the app sent; see TCPConn for what its errors mean.
func (c *TCPConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	return n, c.mapErr("read", err)
}

// Write sends p to the app.
func (c *TCPConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	return n, c.mapErr("write", err)
}

// Abort resets the connection (the app sees ECONNRESET) and releases the endpoint. After
// Close it does nothing.
func (c *TCPConn) Abort() {
	c.once.Do(func() {
		c.ep.Abort()
		_ = c.TCPConn.Close()
	})
}

// Close releases the endpoint; what was written and a FIN already sent are still delivered.
func (c *TCPConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() { err = c.TCPConn.Close() })
	return err
}

// resetText and timeoutText are how gonet words the endpoint errors it flattens to strings.
var (
	resetText   = (&tcpip.ErrConnectionReset{}).String()
	abortedText = (&tcpip.ErrConnectionAborted{}).String()
	timeoutText = (&tcpip.ErrTimeout{}).String()
)

// mapErr gives gonet's string errors their syscall meaning, so callers can tell a reset
// (errors.Is(err, syscall.ECONNRESET)) and a keepalive timeout (syscall.ETIMEDOUT) apart.
func (c *TCPConn) mapErr(op string, err error) error {
	var oe *net.OpError
	if err == nil || err == io.EOF || !errors.As(err, &oe) || oe.Timeout() {
		return err
	}
	var errno syscall.Errno
	switch oe.Err.Error() {
	case resetText, abortedText:
		errno = syscall.ECONNRESET
	case timeoutText:
		errno = syscall.ETIMEDOUT
	default:
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
