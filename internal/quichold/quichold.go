// Package quichold starts QUIC handshakes that a server must keep in progress: a quic-go
// client sends its real first flight (its Initial packets, and, if asked, the Initials that
// answer a Retry) through a net.PacketConn that lets nothing else out and delivers nothing
// else back. The server's side of such a handshake waits for its handshake timeout, as it
// would for a client that spoofed its source address or vanished. quicmux's tests hold
// handshakes with it, and bench/cmd/qgflood floods a server with it.
package quichold

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quicgate/quicgate/third_party/quic-go"
)

// FlightDatagrams is how many datagrams a quic-go client's first flight takes with Go's
// default TLS key shares: the X25519MLKEM768 share makes the ClientHello larger than one
// 1280-byte Initial. A ClientHello with an X25519 share alone fits in one.
const FlightDatagrams = 2

// Options say what a held handshake lets out.
type Options struct {
	// Flight is how many datagrams the client's first flight takes; default FlightDatagrams.
	// They all leave, so the server sees a whole ClientHello and does its handshake work.
	Flight int
	// AnswerRetry delivers a Retry from the server to the client and lets its answer (a
	// second flight, carrying the token) out: a client that owns its source address.
	// Without it, a Retry is dropped like everything else (a spoofed source).
	AnswerRetry bool
}

// Handshake is one held handshake, from the client's side.
type Handshake struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when the dial has returned
	conn    *holdConn
	closeMu sync.Once
}

// Start dials server through pc and returns once what opt lets out has left: the first
// flight, and with AnswerRetry, the answer to a Retry if one came. If the server answers
// with anything but a Retry, that answer is dropped and Start returns at once: the server
// keeps the handshake in progress. Start takes over pc; Close closes it. ctx bounds the wait
// (an error then, with the handshake closed).
func Start(ctx context.Context, pc net.PacketConn, server net.Addr, tlsConf *tls.Config, opt Options) (*Handshake, error) {
	if opt.Flight <= 0 {
		opt.Flight = FlightDatagrams
	}
	hc := &holdConn{PacketConn: pc, opt: opt, out: make(chan struct{})}
	hc.budget.Store(int64(opt.Flight))
	dctx, cancel := context.WithCancel(context.Background())
	h := &Handshake{cancel: cancel, done: make(chan struct{}), conn: hc}
	go func() {
		defer close(h.done)
		// The handshake never completes: Dial returns when Close cancels it (or when the
		// client's own handshake timeout, 10 s by default, ends it first).
		if c, err := quic.Dial(dctx, hc, server, tlsConf, &quic.Config{}); err == nil {
			_ = c.CloseWithError(0, "")
		}
	}()
	select {
	case <-hc.out:
		return h, nil
	case <-h.done:
		h.Close()
		return nil, errors.New("quichold: the client gave up before its flight was out")
	case <-ctx.Done():
		h.Close()
		return nil, fmt.Errorf("quichold: %w", ctx.Err())
	}
}

// Retried reports whether the server answered with a Retry (seen only with AnswerRetry).
func (h *Handshake) Retried() bool { return h.conn.retried.Load() }

// Close stops the client without letting anything more out (no CONNECTION_CLOSE reaches the
// server), waits for it and closes the socket.
func (h *Handshake) Close() {
	h.closeMu.Do(func() {
		h.cancel()
		<-h.done
		_ = h.conn.PacketConn.Close()
	})
}

// holdConn lets out at most budget datagrams and delivers at most one Retry.
type holdConn struct {
	net.PacketConn
	opt     Options
	budget  atomic.Int64 // datagrams that may still leave
	sent    atomic.Int64
	retried atomic.Bool
	outOnce sync.Once
	out     chan struct{} // closed once everything allowed has left
}

func (c *holdConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.budget.Add(-1) < 0 {
		return len(b), nil // dropped, as a lossy path would
	}
	n, err := c.PacketConn.WriteTo(b, addr)
	sent := c.sent.Add(1)
	switch {
	case c.retried.Load():
		if sent == 2*int64(c.opt.Flight) { // the answer to the Retry is out
			c.finish()
		}
	case !c.opt.AnswerRetry && sent == int64(c.opt.Flight):
		c.finish()
	}
	return n, err
}

// SetReadBuffer and SetWriteBuffer keep the socket's buffers as they are: a held client
// needs no large ones, and quic-go warns (through the log package) about a conn without them.
func (c *holdConn) SetReadBuffer(int) error  { return nil }
func (c *holdConn) SetWriteBuffer(int) error { return nil }

func (c *holdConn) finish() {
	c.budget.Store(-1 << 30)
	c.outOnce.Do(func() { close(c.out) })
}

func (c *holdConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		switch {
		case !isRetry(b[:n]):
			// The server answered with state of its own: hold it.
			if c.sent.Load() >= int64(c.opt.Flight) {
				c.finish()
			}
		case c.opt.AnswerRetry && c.retried.CompareAndSwap(false, true):
			c.budget.Add(int64(c.opt.Flight))
			return n, addr, nil
		}
		// A Retry for each datagram of the flight: the client takes only the first.
	}
}

// isRetry reports whether p is a QUIC version 1 Retry packet (RFC 9000, 17.2.5): a long
// header of type 3. Its first byte is not header-protected.
func isRetry(p []byte) bool {
	return len(p) >= 5 && p[0]&0xf0 == 0xf0 && p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == 1
}
