package quicmux

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// acceptQueue is how many accepted connections a reverse listener holds for Accept; more
// are reset, as a kernel resets connections beyond a listen backlog.
const acceptQueue = 128

// reverseListener is Client.Listen's net.Listener.
type reverseListener struct {
	c    *Client
	addr netip.AddrPort

	ctx    context.Context // ends with Close or the client's Close
	cancel context.CancelFunc
	conns  chan *streamConn
	done   chan struct{} // run has returned

	mu  sync.Mutex
	reg registration // where the server's listener is registered now
}

// registration is one listen request that the server answered ok: its connection and stream.
type registration struct {
	conn *quic.Conn
	str  *quic.Stream
}

var _ net.Listener = (*reverseListener)(nil)

// Listen asks the server to listen on addr, an IP address and port of the server's
// ("localhost" is 127.0.0.1), and returns a listener whose connections are the ones the
// server accepts there: a reverse forward, as ssh -R makes. network must be "tcp", "tcp4"
// or "tcp6". The server listens only where its ListenPolicy lets this client
// (--allow-listen, permitlisten=); a refusal is a *StatusError (ErrDenied, ErrInUse, ...).
//
// The listener outlives connections: when the connection to the server is lost, the
// server's listener goes with it, and the client asks for it again once it has reconnected
// (retrying with backoff if the server refuses then, for example because someone else took
// the port). Close ends it on the server too. Each accepted net.Conn is also a flow.Conn
// (CloseWrite, Abort), and its RemoteAddr is the address the server accepted it from.
// Connections wait for Accept in a queue of 128 (more are reset); a waiting one is an open
// flow on the server (its drain waits for it) until Accept takes it or Close resets it.
func (c *Client) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	ap, err := parseListenAddr(addr)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	l := &reverseListener{c: c, addr: ap, conns: make(chan *streamConn, acceptQueue), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(c.ctx)
	c.mu.Lock()
	if c.listeners == nil {
		c.listeners = map[*reverseListener]struct{}{}
	}
	c.listeners[l] = struct{}{}
	c.mu.Unlock()
	reg, err := l.register(ctx)
	if err != nil {
		l.cancel()
		c.mu.Lock()
		delete(c.listeners, l)
		c.mu.Unlock()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: l.Addr(), Err: err}
	}
	c.wg.Add(1)
	go l.run(reg)
	return l, nil
}

// parseListenAddr parses a listen address on the server: an IP address (or localhost)
// and a port.
func parseListenAddr(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrBadTarget, err)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	t, err := flow.ParseTarget(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, err
	}
	if !t.Addr.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: the server listens on an IP address, not a name", ErrBadTarget, addr)
	}
	return netip.AddrPortFrom(t.Addr, t.Port), nil
}

// register asks the server for the listener and waits for its answer. The registration is
// in force from the moment its stream exists, so a connection the server accepts right
// behind its answer finds this listener.
func (l *reverseListener) register(ctx context.Context) (registration, error) {
	c := l.c
	hdr, err := AppendRequest(nil, Request{Kind: KindListen, Target: flow.TargetFromAddrPort(l.addr)})
	if err != nil {
		return registration{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	qc, str, err := c.openStream(ctx)
	if err != nil {
		return registration{}, err
	}
	reg := registration{conn: qc, str: str}
	l.mu.Lock()
	l.reg = reg
	l.mu.Unlock()
	fail := func(err error) (registration, error) {
		l.mu.Lock()
		l.reg = registration{}
		l.mu.Unlock()
		abortStream(str, codeFlowReset)
		return registration{}, err
	}
	if _, err := str.Write(hdr); err != nil {
		return fail(mapStreamErr(err))
	}
	deadline, _ := ctx.Deadline()
	_ = str.SetReadDeadline(deadline)
	if err := ReadStatus(str); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: no answer to the listen within %s", ErrServerUnreachable, c.cfg.DialTimeout)
		}
		return fail(mapStreamErr(err))
	}
	_ = str.SetReadDeadline(time.Time{})
	return reg, nil
}

// run keeps the server's listener: it waits for the registration's end (its stream ends
// when the connection does, or when the server closed the listener) and registers again,
// with backoff, until the listener is closed.
func (l *reverseListener) run(reg registration) {
	defer l.c.wg.Done()
	defer close(l.done)
	log := l.c.log.WithField("listen", l.addr.String())
	for {
		stop := context.AfterFunc(l.ctx, func() {
			abortStream(reg.str, codeShutdown)
		})
		_, err := reg.str.Read(make([]byte, 1)) // the server sends nothing more: only its end comes
		stop()
		if l.ctx.Err() != nil {
			abortStream(reg.str, codeShutdown)
			return
		}
		log.WithError(err).Info("reverse forward lost; asking the server again")
		backoff, failures := minBackoff, 0
		for {
			var rerr error
			reg, rerr = l.register(l.ctx)
			if rerr == nil {
				break
			}
			if l.ctx.Err() != nil {
				return
			}
			if failures++; failures == 1 || errors.As(rerr, new(*StatusError)) && failures%10 == 0 {
				log.WithError(rerr).WithField("retry_in", backoff.String()).Warn("reverse forward refused or not reachable; retrying")
			}
			t := time.NewTimer(backoff + rand.N(backoff/2))
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, 30*time.Second)
		}
		log.Info("reverse forward back")
	}
}

// Accept waits for a connection the server accepted on this listener.
func (l *reverseListener) Accept() (net.Conn, error) {
	select {
	case sc := <-l.conns:
		return sc, nil
	case <-l.ctx.Done():
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close ends the listener here and on the server, and resets the connections accepted but
// not yet taken by Accept. Connections already taken go on.
func (l *reverseListener) Close() error {
	l.cancel()
	<-l.done
	l.c.mu.Lock()
	delete(l.c.listeners, l)
	l.c.mu.Unlock()
	l.drain()
	return nil
}

// drain resets the connections waiting in the queue.
func (l *reverseListener) drain() {
	for {
		select {
		case sc := <-l.conns:
			sc.Abort()
		default:
			return
		}
	}
}

// Addr is the address the server listens on.
func (l *reverseListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }

// acceptStreams takes the streams the server opens on conn (one per connection a reverse
// forward's listener accepted) until conn ends.
func (c *Client) acceptStreams(conn *quic.Conn) {
	defer c.wg.Done()
	for {
		str, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		c.wg.Add(1)
		go c.serveAccepted(conn, str)
	}
}

// serveAccepted reads an accepted connection's header and hands the stream to its listener,
// or resets it when there is none (closed meanwhile) or its queue is full.
func (c *Client) serveAccepted(conn *quic.Conn, str *quic.Stream) {
	defer c.wg.Done()
	reset := func() {
		abortStream(str, codeFlowReset)
	}
	_ = str.SetReadDeadline(time.Now().Add(c.cfg.DialTimeout))
	req, err := ReadRequest(str)
	_ = str.SetReadDeadline(time.Time{})
	if err != nil || req.Kind != KindAccepted {
		c.log.WithError(err).WithField("kind", req.Kind.String()).Debug("server opened a stream that is not an accepted connection")
		reset()
		return
	}
	var l *reverseListener
	c.mu.Lock()
	for cand := range c.listeners {
		cand.mu.Lock()
		if cand.reg.conn == conn && cand.reg.str != nil && uint64(cand.reg.str.StreamID()) == req.Listener {
			l = cand
		}
		cand.mu.Unlock()
	}
	c.mu.Unlock()
	if l == nil || l.ctx.Err() != nil {
		reset()
		return
	}
	sc := newStreamConn(str, net.TCPAddrFromAddrPort(l.addr), targetAddr{req.Target})
	sc.conn = conn
	select {
	case l.conns <- sc:
		if l.ctx.Err() != nil { // closed meanwhile: Close may have drained the queue already
			l.drain()
		}
	default:
		c.log.WithField("listen", l.addr.String()).Warn("reverse forward: connections arrive faster than they are accepted; resetting one")
		reset()
	}
}
