package quicmux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quicgate/quicgate/httpproxy"
	"github.com/quicgate/quicgate/netpath"
	"github.com/quicgate/quicgate/streamlink"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Transport is how the client reaches the server.
type Transport string

const (
	// TransportAuto (the default) tries QUIC first and, when it has not answered within
	// HeadStart, races the TCP transport beside it: the first to connect carries the flows.
	// While on TCP, the client tries QUIC again now and then (ClientConfig.QUICRetry) and
	// moves new flows back to it once it answers.
	TransportAuto Transport = "auto"
	// TransportQUIC is QUIC over UDP only.
	TransportQUIC Transport = "quic"
	// TransportTCP is the TCP transport only (tcptransport.go): the same QUIC connection,
	// each packet framed on a TLS session over TCP.
	TransportTCP Transport = "tcp"
)

// ParseTransport reads a --transport value.
func ParseTransport(s string) (Transport, error) {
	switch t := Transport(s); t {
	case TransportAuto, TransportQUIC, TransportTCP:
		return t, nil
	case "":
		return TransportAuto, nil
	}
	return "", fmt.Errorf("quicmux: unknown transport %q (want auto, quic or tcp)", s)
}

const (
	// HeadStart is how long QUIC has to answer before the TCP transport is raced beside it
	// (Happy Eyeballs' 250-300 ms): on a path where UDP passes, QUIC has connected by then,
	// and on one where it does not, TCP starts after a short wait, not after a dial timeout.
	HeadStart = 300 * time.Millisecond
	// DefaultQUICRetry is how long a client on the TCP transport waits before it first tries
	// QUIC again; the wait doubles after each failed try, to maxQUICRetry.
	DefaultQUICRetry = 10 * time.Second
	maxQUICRetry     = 5 * time.Minute
)

// plan is which transports a connection attempt tries.
func (c *Client) plan() (useQUIC, useTCP bool) {
	switch {
	case c.cfg.Proxy != nil && !(c.cfg.ProxyForTCPOnly && c.cfg.Transport == TransportAuto):
		return false, true // QUIC cannot go through a proxy, and is not tried beside it
	case c.cfg.Transport == TransportQUIC:
		return true, false
	case c.cfg.Transport == TransportTCP:
		return false, true
	}
	return true, true
}

// target is where one attempt goes: the server's UDP address, and its TCP transport's
// (host:port; through a proxy, the name the proxy is asked for).
type target struct {
	udp netip.AddrPort
	tcp string
}

// dialServer makes one connection attempt over the transports the client uses and proves it
// with a ping, which fails if the server rejected this client's certificate after the
// handshake. Each attempt starts from a new socket (so that a load balancer that hashes
// addresses may pick a live server).
func (c *Client) dialServer() (*session, error) {
	timeout := c.attemptTimeout()
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	tg, err := c.targets(ctx, timeout)
	if err != nil {
		return nil, err
	}
	useQUIC, useTCP := c.plan()
	switch {
	case !useTCP:
		return c.dialQUIC(ctx, tg.udp, timeout)
	case !useQUIC:
		return c.dialTCP(ctx, tg.tcp, timeout)
	}
	return c.race(ctx, tg, timeout)
}

// targets resolves where an attempt goes, and tells Dialing of each address it will reach.
func (c *Client) targets(ctx context.Context, timeout time.Duration) (target, error) {
	var tg target
	useQUIC, useTCP := c.plan()
	if useQUIC || useTCP && c.cfg.Proxy == nil && c.cfg.ServerTCP == "" {
		raddr, err := c.resolveServer(ctx)
		if err != nil {
			return tg, fmt.Errorf("%w: %w", ErrServerUnreachable, err)
		}
		// A host with no route to the server says so at once (a socket's connect looks the
		// route up), where the handshake would only time out: its packets are lost, not
		// fatal, once a connection is up (third_party/quic-go, isNetworkSendErr).
		if err := c.routeCheck(ctx, raddr); err != nil {
			return tg, classifyDialErr(err, c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
		}
		c.dialing(raddr)
		tg.udp, tg.tcp = raddr, raddr.String()
	}
	if !useTCP {
		return tg, nil
	}
	switch {
	case c.cfg.Proxy != nil:
		tg.tcp = c.cfg.ServerTCP
		if tg.tcp == "" {
			tg.tcp = c.cfg.Server
		}
		// The proxy is reached by the host's routes, not through a full tunnel.
		if ap, err := c.resolve(ctx, httpproxy.Addr(c.cfg.Proxy), nil); err == nil {
			c.dialing(ap)
		}
	case c.cfg.ServerTCP != "":
		ap, err := c.resolve(ctx, c.cfg.ServerTCP, nil)
		if err != nil {
			return tg, fmt.Errorf("%w: %w", ErrServerUnreachable, err)
		}
		c.dialing(ap)
		tg.tcp = ap.String()
	}
	return tg, nil
}

func (c *Client) dialing(ap netip.AddrPort) {
	if c.cfg.Dialing != nil {
		c.cfg.Dialing(ap)
	}
}

// dialQUIC connects over QUIC to raddr.
func (c *Client) dialQUIC(ctx context.Context, raddr netip.AddrPort, timeout time.Duration) (*session, error) {
	tr, err := c.newSocket("")
	if err != nil {
		return nil, err
	}
	sess := &session{sockets: []*quic.Transport{tr}, transport: TransportQUIC}
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(raddr), c.tlsConf, c.cfg.Limits.quicConfig(false))
	if err != nil {
		sess.close()
		return nil, classifyDialErr(err, c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
	}
	return c.prove(ctx, sess, conn, timeout)
}

// dialTCP connects over the TCP transport to addr (through the proxy, if there is one).
func (c *Client) dialTCP(ctx context.Context, addr string, timeout time.Duration) (*session, error) {
	d := &net.Dialer{Control: netpath.Control(c.cfg.Mark, "")}
	var nc net.Conn
	var err error
	if c.cfg.Proxy != nil {
		pd := httpproxy.Dialer{Proxy: c.cfg.Proxy, Dial: d.DialContext}
		if nc, err = pd.DialContext(ctx, "tcp", addr); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrServerUnreachable, err)
		}
	} else if nc, err = d.DialContext(ctx, "tcp", addr); err != nil {
		return nil, classifyDialErr(fmt.Errorf("over TCP: %w", err), c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
	}
	outer := outerTLS(c.tlsConf)
	outer.ServerName = ""
	if host, _, err := net.SplitHostPort(c.cfg.Server); err == nil && net.ParseIP(host) == nil {
		outer.ServerName = host // what a firewall sees of an HTTPS session
	}
	tc := tls.Client(nc, outer)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, classifyDialErr(fmt.Errorf("TLS over TCP: %w", err), c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
	}
	pc := streamlink.NewConn(tc)
	tr := &quic.Transport{Conn: pc}
	sess := &session{sockets: []*quic.Transport{tr}, transport: TransportTCP}
	conn, err := tr.Dial(ctx, pc.RemoteAddr(), c.tlsConf, streamQUICConfig(c.cfg.Limits.quicConfig(false)))
	if err != nil {
		sess.close()
		return nil, classifyDialErr(err, c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
	}
	return c.prove(ctx, sess, conn, timeout)
}

// prove pings the server on a new connection: the server may reject this client's
// certificate only after the handshake.
func (c *Client) prove(ctx context.Context, sess *session, conn *quic.Conn, timeout time.Duration) (*session, error) {
	sess.conn = conn
	if err := ping(ctx, conn); err != nil {
		_ = conn.CloseWithError(connShutdown, "")
		sess.close()
		return nil, classifyDialErr(err, c.cfg.Server, timeout, c.cfg.Identity.Fingerprint)
	}
	return sess, nil
}

// race dials QUIC and, once QUIC has failed or HeadStart has passed, the TCP transport
// beside it; the first connection wins and the other attempt is abandoned (closed if it
// connected too). It waits for both attempts before it returns.
func (c *Client) race(ctx context.Context, tg target, timeout time.Duration) (*session, error) {
	type result struct {
		sess *session
		err  error
		tcp  bool
	}
	results := make(chan result, 2)
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	go func() {
		s, err := c.dialQUIC(qctx, tg.udp, timeout)
		results <- result{s, err, false}
	}()
	head := time.NewTimer(HeadStart)
	defer head.Stop()
	started, pending := false, 1
	startTCP := func() {
		started = true
		pending++
		go func() {
			s, err := c.dialTCP(tctx, tg.tcp, timeout)
			results <- result{s, err, true}
		}()
	}
	var won *session
	var quicErr, tcpErr error
	for pending > 0 {
		select {
		case <-head.C:
			if !started && won == nil {
				startTCP()
			}
		case r := <-results:
			pending--
			switch {
			case r.err != nil && r.tcp:
				tcpErr = r.err
			case r.err != nil:
				quicErr = r.err
				// A refusal of this client (its pin, its identity) would only be repeated
				// over TCP; a path that does not carry QUIC is worth the other transport.
				if !started && won == nil && !refused(r.err) {
					startTCP()
				}
			case won == nil:
				won = r.sess
				if r.tcp {
					won.why = "QUIC did not answer within " + HeadStart.String()
					if quicErr != nil {
						won.why = "QUIC failed: " + quicErr.Error()
					}
					qcancel()
				} else {
					tcancel()
				}
			default: // the loser connected too
				_ = r.sess.conn.CloseWithError(connShutdown, "")
				r.sess.close()
			}
		}
	}
	if won != nil {
		return won, nil
	}
	// Both failed: a refusal that retrying cannot cure says the most, then QUIC's.
	for _, err := range []error{quicErr, tcpErr} {
		if refused(err) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w (and %v)", quicErr, tcpErr)
}

// refused says whether a dial failed because the server refused this client (or the
// client the server), which the other transport would only repeat.
func refused(err error) bool {
	return errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrTooManyConns)
}

// flapWindow and stableQUIC judge a QUIC connection that ended: one lost within flapWindow
// of its start (a network that lets UDP through for a while, then blocks it) doubles the
// wait before the next try of QUIC from TCP, so that the client does not move its flows
// back and forth every few seconds; one that lived stableQUIC resets it.
const (
	flapWindow = time.Minute
	stableQUIC = 10 * time.Minute
)

// quicRetryWait is how long a connection over TCP waits before it tries QUIC.
func (c *Client) quicRetryWait() time.Duration {
	if c.quicRetry == 0 {
		c.quicRetry = c.cfg.QUICRetry
	}
	return c.quicRetry
}

// backOffQUIC doubles the wait before QUIC is tried again, to its bound.
func (c *Client) backOffQUIC() { c.quicRetry = min(2*c.quicRetryWait(), maxQUICRetry) }

// quicLost takes note of a QUIC connection that ended after lived.
func (c *Client) quicLost(lived time.Duration) {
	switch {
	case lived < flapWindow:
		c.backOffQUIC()
	case lived >= stableQUIC:
		c.quicRetry = c.cfg.QUICRetry
	}
}

// retryQUIC tries QUIC once, for a client on the TCP transport.
func (c *Client) retryQUIC(ctx context.Context) (*session, error) {
	timeout := c.attemptTimeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raddr, err := c.resolveServer(ctx)
	if err != nil {
		return nil, err
	}
	c.dialing(raddr)
	return c.dialQUIC(ctx, raddr, timeout)
}

// retire keeps a connection that new flows have left (the client moved back to QUIC) until
// its flows have ended, and closes it then. Its reverse forwards move at once: their
// registrations end, and they ask the server again, on the new connection.
func (c *Client) retire(old *session) {
	defer c.wg.Done()
	c.mu.Lock()
	for l := range c.listeners {
		l.mu.Lock()
		if l.reg.conn == old.conn {
			abortStream(l.reg.str, codeShutdown)
		}
		l.mu.Unlock()
	}
	c.mu.Unlock()
	defer old.close()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for old.conn.OpenStreams() > 0 {
		select {
		case <-tick.C:
		case <-old.conn.Context().Done():
			return
		case <-c.ctx.Done():
			_ = old.conn.CloseWithError(connShutdown, "client shutting down")
			return
		}
	}
	linger(old.conn)
	_ = old.conn.CloseWithError(connShutdown, "flows moved to another connection")
}
