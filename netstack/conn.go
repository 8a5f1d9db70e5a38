package netstack

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCPConn is a TCP connection the stack terminated (what TCPRequest.Accept returns). Besides
// net.Conn it can half-close (CloseWrite sends a FIN) and abort (Abort sends a RST), and its
// errors say how the app ended the connection: io.EOF for a FIN, an error matching
// syscall.ECONNRESET for a RST, anything else for a failure (a keepalive timeout, say). That
// is the relay's flow contract (flow.Conn), without this package importing it.
type TCPConn struct {
	*gonet.TCPConn
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	once sync.Once
	rn   readNotifier
}

// newTCPConn wraps c, a gonet conn built on ep and wq, and registers the conn's one
// readability entry on wq (for NotifyReadable); Close and Abort unregister it.
func newTCPConn(c *gonet.TCPConn, wq *waiter.Queue, ep tcpip.Endpoint) *TCPConn {
	tc := &TCPConn{TCPConn: c, ep: ep, wq: wq}
	tc.rn.entry.Init(&tc.rn, readableMask)
	wq.EventRegister(&tc.rn.entry)
	return tc
}

// readableMask is what NotifyReadable waits for: something to read, the app's FIN (the
// endpoint reports it as readable), a reset or another error, the endpoint closed.
const readableMask = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr

// readNotifier holds the f of a pending NotifyReadable. Its entry stays registered on the
// conn's waiter.Queue from newTCPConn to Close or Abort, and its NotifyEvent (gVisor calls
// it) takes the pending f out and calls it; with nothing pending an event costs an atomic
// load. The entry cannot be unregistered once it has fired: gVisor's Queue.Notify calls the
// listener with the queue's RWMutex read-locked, and EventUnregister write-locks it.
//
// Locks: gVisor holds the queue's lock (and, delivering a segment, the endpoint's) while
// it calls NotifyEvent, which takes mu; so nothing holding mu may call into the queue or
// the endpoint, and f is always called with mu released.
type readNotifier struct {
	entry   waiter.Entry
	armed   atomic.Bool // pending != nil, read without mu
	mu      sync.Mutex
	pending func()
	closed  bool // Close or Abort ran: NotifyReadable fires at once
}

// NotifyEvent implements waiter.EventListener.
func (rn *readNotifier) NotifyEvent(waiter.EventMask) {
	if rn.armed.Load() {
		rn.fire()
	}
}

// fire calls the pending f, if any, and clears it: whoever takes f under mu calls it, so
// each f runs at most once.
func (rn *readNotifier) fire() {
	rn.mu.Lock()
	f := rn.pending
	rn.pending = nil
	rn.armed.Store(false)
	rn.mu.Unlock()
	if f != nil {
		f()
	}
}

// Readable reports whether a Read would return at once: bytes, the app's FIN, an error.
func (c *TCPConn) Readable() bool { return c.ep.Readiness(readableMask) != 0 }

// NotifyReadable arranges for f to be called once, as soon as a Read would not block: bytes
// to read, the app's FIN, a reset or another error, or the endpoint closed. If that is so
// already, f is called before NotifyReadable returns; otherwise it runs on a gVisor goroutine
// (the one delivering the segment), so f must not block: it should start a goroutine. A later
// NotifyReadable replaces an f not yet called.
//
// On a gVisor goroutine f runs with the conn's waiter queue locked and, when a segment
// brought the data, the endpoint locked: f must not call any method of c itself (Read,
// Close and Abort would deadlock). Close and Abort call a pending f before they return (on
// the caller's goroutine, possibly under the same locks), and after them NotifyReadable
// calls f at once. A wake-up may be spurious if another goroutine reads concurrently (it
// took the bytes first): a caller that then finds Read would block calls NotifyReadable
// again. NotifyReadable does not allocate.
func (c *TCPConn) NotifyReadable(f func()) {
	rn := &c.rn
	rn.mu.Lock()
	closed := rn.closed
	rn.pending = f
	rn.armed.Store(true)
	rn.mu.Unlock()
	// The entry was registered before anything could make the endpoint readable unseen, so
	// readiness that came before the arming above is found here and any later is notified.
	if closed || c.ep.Readiness(readableMask)&readableMask != 0 {
		rn.fire()
	}
}

// stopNotify unregisters the readability entry (no NotifyEvent runs once it returns) and
// calls a pending NotifyReadable f. It runs once, from Close or Abort, after the endpoint
// is closed: gVisor's Close and Abort notify the queue themselves, which fires f then in
// the usual cases; this covers any other and makes it a promise of this package.
func (c *TCPConn) stopNotify() {
	c.wq.EventUnregister(&c.rn.entry)
	c.rn.mu.Lock()
	c.rn.closed = true
	c.rn.mu.Unlock()
	c.rn.fire()
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
		c.stopNotify()
	})
}

// Close releases the endpoint; what was written and a FIN already sent are still delivered.
func (c *TCPConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.TCPConn.Close()
		c.stopNotify()
	})
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
