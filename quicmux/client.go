package quicmux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/httpproxy"
	"github.com/quicgate/quicgate/internal/logging"
	"github.com/quicgate/quicgate/netpath"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// ClientConfig configures a Client. Server, Identity and Pin are required.
type ClientConfig struct {
	Server   string      // host:port of the server (UDP, and TCP unless ServerTCP says otherwise)
	Identity *Identity   // this client's identity, which the server must authorize
	Pin      Fingerprint // the server's fingerprint

	// DialTimeout bounds how long a flow waits for a connection to the server (and for a
	// free stream on it); default 10s.
	DialTimeout time.Duration
	// FlowIdleTimeout resets a forwarded flow that moved no byte either way for this long;
	// 0: never.
	FlowIdleTimeout time.Duration
	Limits          Limits
	Metrics         *Metrics      // default: none
	Logger          *logrus.Entry // default: discard

	// Mark, if not 0, is the firewall mark (Linux SO_MARK, which needs CAP_NET_ADMIN) on
	// every UDP socket the client opens toward the server and on its lookups of the
	// server's name: a full tunnel's policy routing (package tun, tun.Device.Mark) sends
	// marked packets by the host's own routes instead of into the tunnel.
	Mark uint32
	// Dialing, if set, is told the server's address before each connection attempt (from
	// the client's supervisor goroutine; it must not block): a full tunnel keeps that
	// address off its routes (tun.Device.Bypass).
	Dialing func(server netip.AddrPort)

	// Transport is how the server is reached: TransportAuto (the default: QUIC, and the TCP
	// transport when QUIC does not answer), TransportQUIC or TransportTCP.
	Transport Transport
	// ServerTCP is the host:port of the server's TCP transport; default Server.
	ServerTCP string
	// Proxy, if set, is an HTTP CONNECT proxy (package httpproxy) that the TCP transport goes
	// through; QUIC is then not tried, unless ProxyForTCPOnly.
	Proxy *url.URL
	// ProxyForTCPOnly keeps TransportAuto's QUIC attempt beside a Proxy (one the environment
	// named, HTTPS_PROXY: a host that sets it for everything may still pass UDP): QUIC goes
	// first and directly, and only the TCP transport goes through the proxy.
	ProxyForTCPOnly bool
	// QUICRetry is how long a client in TransportAuto that connected over TCP waits before
	// it tries QUIC again (doubling after each failure, to five minutes); default
	// DefaultQUICRetry.
	QUICRetry time.Duration
}

// Client keeps one QUIC connection to the server and opens a stream on it per flow. A
// supervisor goroutine dials the connection, watches that the server still answers
// (liveness.go), and re-dials it with backoff, from a new UDP socket, when it is lost.
type Client struct {
	cfg     ClientConfig
	log     *logrus.Entry
	tlsConf *tls.Config

	// netWatch signals changes of the host's links, addresses and routes (nil where it
	// could not be had); the supervisor alone reads it.
	netWatch *netpath.Watcher
	// lastServer is the server's address the last lookup of its name gave, for when a
	// lookup fails (a full tunnel's DNS may go through the tunnel itself); the
	// supervisor alone uses it. (The supervisor's fields are also used by the QUIC retry
	// that watch runs while on TCP: watch waits for it, doing nothing else meanwhile with
	// these fields, and Dialing is called from it then.)
	lastServer netip.AddrPort
	// lastRTT is the smoothed round trip of the last connection (0 before the first one);
	// the supervisor alone uses it.
	lastRTT time.Duration
	// lastTransport is the transport of the last connection; the supervisor alone uses it.
	lastTransport Transport
	// quicRetry is how long a connection over TCP waits before it tries QUIC again (0:
	// ClientConfig.QUICRetry); the supervisor alone uses it (transport.go, quicLost).
	quicRetry time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	state *connState

	// parker watches the idle kernel sockets of this client's flows (nil where epoll is
	// missing: each then waits in a goroutine of its own).
	parker *flow.Parker

	// listeners are the reverse forwards (Listen), which the server's accepted connections
	// are matched to; under mu.
	listeners map[*reverseListener]struct{}
	// dgrams are the datagram muxes of the connections that carry UDP flows; under mu.
	dgrams map[*quic.Conn]*datagramMux

	dials atomic.Uint64
	// kick cuts the supervisor's backoff short when a flow is waiting for a connection, so
	// that a server back from a restart is found at once rather than after the backoff.
	kick chan struct{}
}

// connState is one state of the client's connection. It is replaced, never changed, and
// changed is closed when it is.
type connState struct {
	conn    *quic.Conn // nil while down
	lastErr error      // why the last dial failed, while down
	changed chan struct{}
}

const (
	// The supervisor redials with a backoff from minBackoff doubling to maxBackoff (plus up
	// to half again of jitter), cut short when a flow waits: a server back from an outage
	// is found within about that.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
	// minRedial bounds a redial's handshake from below once the path's round trip is
	// known (attemptTimeout).
	minRedial = 2 * time.Second
)

// NewClient starts a client's supervisor, which dials the server at once.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Identity == nil {
		return nil, errors.New("quicmux: client needs an identity")
	}
	if cfg.Pin == (Fingerprint{}) {
		return nil, errors.New("quicmux: client needs the server's fingerprint (--pin)")
	}
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("quicmux: server address %q: %w", cfg.Server, err)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Transport == "" {
		cfg.Transport = TransportAuto
	}
	if _, err := ParseTransport(string(cfg.Transport)); err != nil {
		return nil, err
	}
	if cfg.Proxy != nil && cfg.Transport == TransportQUIC {
		return nil, errors.New("quicmux: a proxy carries only the TCP transport; use transport auto or tcp with it")
	}
	if cfg.ServerTCP != "" {
		if _, _, err := net.SplitHostPort(cfg.ServerTCP); err != nil {
			return nil, fmt.Errorf("quicmux: server TCP address %q: %w", cfg.ServerTCP, err)
		}
	}
	if cfg.QUICRetry <= 0 {
		cfg.QUICRetry = DefaultQUICRetry
	}
	cfg.Limits = cfg.Limits.withDefaults(false)
	if err := cfg.Limits.check(); err != nil {
		return nil, err
	}
	cfg.Metrics.setCongestion(cfg.Limits.Congestion)
	c := &Client{
		cfg:     cfg,
		log:     logging.OrDiscard(cfg.Logger).WithField("server", cfg.Server),
		tlsConf: clientTLS(cfg.Identity, cfg.Pin),
		state:   &connState{changed: make(chan struct{})},
		kick:    make(chan struct{}, 1),
	}
	// Without it, a new route or address is noticed only when the server goes silent.
	c.netWatch, _ = netpath.NewWatcher()
	c.parker, _ = flow.NewParker()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.supervise()
	return c, nil
}

// Close closes the connection, which resets every flow still open, and waits for the
// supervisor. It is idempotent.
func (c *Client) Close() error {
	c.cancel()
	c.wg.Wait() // the supervisor closed the connection and its sockets
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.netWatch != nil {
		c.netWatch.Close()
		c.netWatch = nil
	}
	if c.parker != nil {
		// Flows still open are being reset (their connection is gone); a socket the parker
		// held then ends in a goroutine of its own (see park in flow/relay.go).
		c.parker.Close()
	}
	return nil
}

// Dials is how many connections the client has made to the server: 1, plus one for each
// reconnection.
func (c *Client) Dials() uint64 { return c.dials.Load() }

// Connect waits until the client is connected and the server has accepted its identity.
// It fails at once on a wrong pin or a rejected identity, and with ErrServerUnreachable when
// no connection comes up within the dial timeout.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.waitConn(ctx)
	return err
}

// DialContext opens a flow to address through the tunnel and returns once the server has
// reached the destination; a server's refusal comes back as a *StatusError (which matches
// ErrRefused and syscall.ECONNREFUSED, ErrDenied, ...). network is "tcp", "tcp4" or "tcp6".
// The conn has the flow.Conn contract (CloseWrite sends a FIN, Abort a reset). It has the shape
// of net.Dialer.DialContext, so it can serve http.Transport.DialContext.
func (c *Client) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	t, err := flow.ParseTarget(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	conn, err := c.dial(ctx, t)
	if err != nil {
		c.flowFailed(ctx, ingressAPI, "", t, err)
		return nil, &net.OpError{Op: "dial", Net: network, Addr: targetAddr{t}, Err: err}
	}
	return conn, nil
}

// Local is the local end of a flow, as an ingress hands it to Client.Carry with the names
// of its flow. It comes in three kinds, one for each way a local end meets the far end, and
// each kind carries its own part of the flow (the interface is closed to other kinds):
//
//   - Flow: a local end established already (a -L socket). Its bytes go out right behind
//     the request, without waiting a round trip for the server's answer; a refusal resets it.
//   - Pending: a local end whose handshake is held until the server has answered (the TUN
//     netstack's SYN, a proxy's request): accepted when the server reached the target,
//     rejected (with why) when it did not.
//   - Reverse: the far end is a connection the server accepted for a reverse forward
//     (Client.Listen); no stream is opened, and the local end is dialed here.
type Local interface {
	// Info names the flow: its target, the ingress it came through and its peer.
	Info() FlowInfo
	// Release lets go of a local end that will not be carried, with why: Flow resets its
	// conn, Pending rejects its handshake (a TUN's RST, a proxy's failure reply), Reverse
	// resets the server's connection. Carry does it itself for a flow that cannot start; a
	// Tunnel that turns a flow down without carrying it (a test's fake) calls it.
	Release(why error)

	// open reaches the far end and returns both ends, or fails having released the local
	// end. It is what each kind does differently.
	open(ctx context.Context, c *Client) (local, remote flow.Conn, err error)
}

// FlowInfo names a flow: where it goes, and where it came from. Ingress names where the
// flow came in, for metrics and `quicgate status` (for example "-L 127.0.0.1:8080" or
// "tun qg0"); default "api". Peer is the app's address, for the list of recent failures.
// Both are optional.
type FlowInfo struct {
	Target        flow.Target
	Ingress, Peer string
}

// Flow is a local end established already (a -L socket, a conn a Go program hands over):
// Carry opens a stream to Target and relays Conn to it at once, so Conn's first bytes go out
// right behind the request; a refusal resets Conn.
type Flow struct {
	Target        flow.Target
	Ingress, Peer string // see FlowInfo
	Conn          flow.Conn
}

// Pending is a local end whose handshake waits for the server's answer, as the TUN
// netstack's SYN does (its SYN-ACK goes out only once the destination is reached, as
// Tailscale's does) and a proxy's request (its reply says the server's verdict). Carry calls
// exactly one of Accept and Reject: Accept when the server reached Target, Reject (a RST:
// "connection refused"; a proxy's failure reply) when it did not, with why: a *StatusError
// with the server's status, or the error that kept the flow from the server
// (ErrServerUnreachable, a context's error). Both are required.
type Pending struct {
	Target        flow.Target
	Ingress, Peer string // see FlowInfo
	Accept        func() (flow.Conn, error)
	Reject        func(why error)
}

// Reverse is a flow whose far end is established already: Remote, a connection a reverse
// forward's listener accepted (Client.Listen). Carry opens no stream: the local end is
// what Dial returns (it dials the forward's local target, Target), and a local end that
// cannot be had resets Remote.
type Reverse struct {
	Target        flow.Target // what Dial reaches, for metrics and logs
	Ingress, Peer string      // see FlowInfo
	Remote        flow.Conn
	Dial          func() (flow.Conn, error)
}

var (
	_ Local = Flow{}
	_ Local = Pending{}
	_ Local = Reverse{}
)

// Info names the flow.
func (f Flow) Info() FlowInfo { return FlowInfo{Target: f.Target, Ingress: f.Ingress, Peer: f.Peer} }

// Info names the flow.
func (p Pending) Info() FlowInfo { return FlowInfo{Target: p.Target, Ingress: p.Ingress, Peer: p.Peer} }

// Info names the flow.
func (r Reverse) Info() FlowInfo { return FlowInfo{Target: r.Target, Ingress: r.Ingress, Peer: r.Peer} }

// Release resets Conn.
func (f Flow) Release(error) {
	if f.Conn != nil {
		f.Conn.Abort()
	}
}

// Release rejects the handshake with why.
func (p Pending) Release(why error) {
	if p.Reject != nil {
		p.Reject(why)
	}
}

// Release resets the server's connection.
func (r Reverse) Release(error) {
	if r.Remote != nil {
		r.Remote.Abort()
	}
}

// open opens f's stream and writes its request; f.Conn's bytes follow at once.
func (f Flow) open(ctx context.Context, c *Client) (local, remote flow.Conn, err error) {
	if f.Conn == nil {
		return nil, nil, errors.New("quicmux: a Flow needs a Conn")
	}
	sc, err := c.open(ctx, f.Target)
	if err != nil {
		f.Conn.Abort()
		return nil, nil, err
	}
	return f.Conn, sc, nil
}

// open opens p's stream, waits for the server's answer, and then accepts or rejects.
func (p Pending) open(ctx context.Context, c *Client) (local, remote flow.Conn, err error) {
	if p.Accept == nil || p.Reject == nil {
		err := errors.New("quicmux: a Pending needs Accept and Reject")
		p.Release(err)
		return nil, nil, err
	}
	sc, err := c.dial(ctx, p.Target)
	if err != nil {
		p.Reject(err)
		return nil, nil, err
	}
	if local, err = p.Accept(); err != nil {
		sc.Abort() // the destination must see a reset, not a clean empty flow
		return nil, nil, err
	}
	return local, sc, nil
}

// open dials r's local end.
func (r Reverse) open(context.Context, *Client) (local, remote flow.Conn, err error) {
	if r.Remote == nil || r.Dial == nil {
		r.Release(nil)
		return nil, nil, errors.New("quicmux: a Reverse needs Remote and Dial")
	}
	if local, err = r.Dial(); err != nil {
		r.Remote.Abort()
		return nil, nil, err
	}
	return local, r.Remote, nil
}

// Carry takes a flow from an ingress to its target and relays it, with the client's idle
// timeout and metrics. It returns once the flow is under way, or has failed to start; done is
// called exactly once, when the flow has ended and its ends are released (before Carry
// returns if the flow never started). It always releases the local end, and ctx ending
// resets the flow. It is the one way an ingress hands a flow to the tunnel; it returns early
// so that an idle flow holds no goroutine of its caller (see flow.StartRelay).
func (c *Client) Carry(ctx context.Context, l Local, done func(flow.Stats, error)) {
	info := l.Info()
	if info.Ingress == "" {
		info.Ingress = ingressAPI
	}
	local, remote, err := l.open(ctx, c)
	if err != nil {
		c.cfg.Metrics.flowRejected()
		c.flowFailed(ctx, info.Ingress, info.Peer, info.Target, err)
		done(flow.Stats{}, err)
		return
	}
	active := c.cfg.Metrics.flowStarted(info.Ingress)
	opt := c.cfg.Metrics.relayOptions(c.cfg.FlowIdleTimeout)
	opt.Parker = c.parker
	if sc, ok := remote.(*streamConn); ok && sc.conn != nil {
		opt.Until = sc.conn.Context() // the flow ends with its connection
		opt.UntilErr = mapStreamErr   // a lost connection reads as a reset
	}
	flow.StartRelay(ctx, local, remote, opt, func(s flow.Stats, err error) {
		c.cfg.Metrics.flowEnded(active, flow.Result(err))
		c.flowFailed(ctx, info.Ingress, info.Peer, info.Target, err)
		done(s, err)
	})
}

// ingressAPI is the ingress of flows from DialContext and of a Local that names none.
const ingressAPI = "api"

// flowFailed lists a flow that failed in the recent failures: one that could not start, or
// broke for a reason other than a reset, an idle timeout or its ingress going away.
func (c *Client) flowFailed(ctx context.Context, ingress, peer string, t flow.Target, err error) {
	if r := flow.Result(err); r != "error" && r != "rejected" || ctx.Err() != nil {
		return
	}
	c.cfg.Metrics.failed(Failure{Ingress: ingress, Peer: peer, Target: t.String(), Reason: err.Error()})
}

// dial opens a flow to t and waits for the server's status.
func (c *Client) dial(ctx context.Context, t flow.Target) (*streamConn, error) {
	sc, err := c.open(ctx, t)
	if err != nil {
		return nil, err
	}
	// The server answers within its own dial timeout; ctx or three of ours bound the wait.
	deadline := time.Now().Add(3 * c.cfg.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err = noAnswer(readWithin(ctx, sc.str, deadline, sc.readStatus)); err != nil {
		sc.Abort()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return sc, nil
}

// openStream waits for the connection to the server and opens a stream on it, both within
// ctx, which the caller bounds by the dial timeout: the one way every request begins. Its
// errors are waitConn's, ctx's own when ctx was canceled, or ErrServerUnreachable.
func (c *Client) openStream(ctx context.Context) (*quic.Conn, *quic.Stream, error) {
	qc, err := c.waitConn(ctx)
	if err != nil {
		return nil, nil, err
	}
	str, err := qc.OpenStreamSync(ctx)
	switch {
	case err == nil:
		return qc, str, nil
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, nil, ctx.Err()
	case ctx.Err() != nil: // matches the deadline too, whichever set it
		return nil, nil, fmt.Errorf("%w: no free stream in time: %w", ErrServerUnreachable, ctx.Err())
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrServerUnreachable, err)
}

// ask sends a request that is all there is to send (resolve, echo) and reads its answer:
// the status, then what answer reads after an ok, all within the dial timeout (ctx's, if
// sooner). A non-ok status is a *StatusError.
func (c *Client) ask(ctx context.Context, hdr []byte, answer func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, str, err := c.openStream(ctx)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		abortStream(str, codeFlowReset)
		return err
	}
	if _, err := str.Write(hdr); err != nil {
		return fail(noAnswer(err))
	}
	_ = str.Close() // the request is all there is to send
	// The server answers within its own dial timeout; ours bounds the wait for the status
	// and the answer, and ctx ending stops it at once.
	deadline, _ := ctx.Deadline()
	answered := false // the status was ok: an error is answer's
	err = readWithin(ctx, str, deadline, func() error {
		if err := ReadStatus(str); err != nil {
			return err
		}
		answered = true
		return answer(str)
	})
	switch {
	case err == nil:
		str.CancelRead(codeFlowReset) // nothing more is read; the server ends its side
		return nil
	case answered:
		return fail(err)
	}
	return fail(c.statusErr(ctx, err))
}

// statusErr maps the error of a wait for a request's status within ctx, which the dial
// timeout bounds: ctx ending first means no answer in time (the server's own verdict, a
// *StatusError, stands); otherwise noAnswer.
func (c *Client) statusErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.As(err, new(*StatusError)) {
		return fmt.Errorf("%w: no answer within %s", ErrServerUnreachable, c.cfg.DialTimeout)
	}
	return noAnswer(err)
}

// readWithin runs read (of the server's answer on str) until deadline (none if zero), and
// cuts it short when ctx ends; str is left without a read deadline.
func readWithin(ctx context.Context, str *quic.Stream, deadline time.Time, read func() error) error {
	_ = str.SetReadDeadline(deadline)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = str.SetReadDeadline(time.Now())
	})
	err := read()
	if !stop() {
		<-fired // the callback ran or is running: let it finish before the deadline is cleared
	}
	_ = str.SetReadDeadline(time.Time{})
	return err
}

// open opens a stream for t and writes its header; the status is left to the first Read.
// While the connection is up and has a stream free, as it has for nearly every flow, that
// takes neither a timer nor a context of its own (openNow); otherwise openStream waits,
// bounded by the dial timeout.
func (c *Client) open(ctx context.Context, t flow.Target) (*streamConn, error) {
	var buf [MaxHeaderLen]byte
	hdr, err := AppendRequest(buf[:0], Request{Kind: KindTCP, Target: t})
	if err != nil {
		return nil, err
	}
	qc, str := c.openNow()
	if str == nil {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		defer cancel()
		if qc, str, err = c.openStream(ctx); err != nil {
			return nil, err
		}
	}
	sc := newStreamConn(str, qc.LocalAddr(), targetAddr{t})
	sc.conn = qc
	sc.pendingStatus = true
	if _, err := str.Write(hdr); err != nil {
		sc.Abort()
		return nil, noAnswer(err)
	}
	return sc, nil
}

// openNow opens a stream on the live connection if it has one free at once; nil if not
// (no connection, or the server's stream limit reached: openStream then waits).
func (c *Client) openNow() (*quic.Conn, *quic.Stream) {
	c.mu.Lock()
	conn := c.state.conn
	c.mu.Unlock()
	if conn == nil || conn.Context().Err() != nil {
		return nil, nil
	}
	str, err := conn.OpenStream()
	if err != nil {
		return nil, nil
	}
	return conn, str
}

// waitConn returns the live connection, waiting for the supervisor to bring one up. A dial
// that failed for a reason that retrying will not cure (pin, identity, a proxy's demand for
// credentials) fails at once.
func (c *Client) waitConn(ctx context.Context) (*quic.Conn, error) {
	var timeout <-chan time.Time // made once the wait begins: a live connection needs none
	for {
		c.mu.Lock()
		st := c.state
		c.mu.Unlock()
		if st.conn != nil && st.conn.Context().Err() == nil {
			return st.conn, nil
		}
		if errors.Is(st.lastErr, ErrPinMismatch) || errors.Is(st.lastErr, ErrUnauthorized) || errors.Is(st.lastErr, httpproxy.ErrAuth) {
			return nil, st.lastErr
		}
		select {
		case c.kick <- struct{}{}:
		default:
		}
		if timeout == nil {
			timer := time.NewTimer(c.cfg.DialTimeout)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return nil, c.unreachable(ctx.Err(), st.lastErr)
		case <-timeout:
			return nil, c.unreachable(nil, st.lastErr)
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (c *Client) unreachable(ctxErr, lastErr error) error {
	if ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
		return ctxErr
	}
	if lastErr != nil {
		return lastErr
	}
	return fmt.Errorf("%w: no connection to %s within %s", ErrServerUnreachable, c.cfg.Server, c.cfg.DialTimeout)
}

func (c *Client) setState(conn *quic.Conn, lastErr error) {
	c.mu.Lock()
	old := c.state
	c.state = &connState{conn: conn, lastErr: lastErr, changed: make(chan struct{})}
	c.mu.Unlock()
	close(old.changed)
}

// supervise owns the connection: it dials, waits for the connection to be lost, and dials
// again with exponential backoff and jitter, until the client is closed.
func (c *Client) supervise() {
	defer c.wg.Done()
	backoff := minBackoff
	wasUp, silent, failures := false, false, 0
	// next is a connection the last one's watch made (back to QUIC from TCP), and retiring
	// the connection it replaces, retired once next carries the new flows.
	var next, retiring *session
	for c.ctx.Err() == nil {
		sess, err := next, error(nil)
		if sess == nil {
			sess, err = c.dialServer()
		}
		next = nil
		if err != nil {
			if c.ctx.Err() != nil {
				break
			}
			failures++
			c.cfg.Metrics.handshakeFailed(failureReason(err))
			c.cfg.Metrics.failed(Failure{Ingress: "connection", Target: c.cfg.Server, Reason: err.Error()})
			c.setState(nil, err)
			entry := c.log.WithError(err).WithField("retry_in", backoff.String())
			// Before the first connection the caller (Connect, or a flow) reports the error;
			// after a server fell silent, that was the one line (liveness.go).
			if failures == 1 && wasUp && !silent {
				entry.Warn("cannot connect to server")
			} else {
				entry.Debug("cannot connect to server")
			}
			c.sleep(backoff + rand.N(backoff/2))
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff, failures = minBackoff, 0
		c.dials.Add(1)
		c.cfg.Metrics.trackConn(sess.conn, string(sess.transport))
		if wasUp {
			c.cfg.Metrics.reconnected()
		}
		c.setState(sess.conn, nil)
		if retiring != nil { // new flows go over sess before the old connection's end begins
			c.wg.Add(1)
			go c.retire(retiring)
			retiring = nil
		}
		c.wg.Add(1)
		go c.acceptStreams(sess.conn) // ends with conn
		c.lastRTT = sess.conn.ConnectionStats().SmoothedRTT
		fields := logrus.Fields{"rtt": c.lastRTT.String(), "congestion": string(c.cfg.Limits.Congestion),
			"local": sess.conn.LocalAddr().String(), "transport": string(sess.transport)}
		if sess.why != "" {
			fields["why"] = sess.why
		}
		switch {
		case sess.moved:
			c.log.WithFields(fields).Info("QUIC answers again; new flows go over it")
		case wasUp && sess.transport != c.lastTransport:
			c.log.WithFields(fields).Warn("reconnected to server over another transport")
		case wasUp:
			c.log.WithFields(fields).Info("reconnected to server")
		case sess.why != "":
			c.log.WithFields(fields).Warn("connected to server over TCP")
		default:
			c.log.WithFields(fields).Info("connected to server")
		}
		c.lastTransport = sess.transport
		wasUp = true
		began := time.Now()
		silent, next = c.watch(sess)
		switch {
		case next != nil:
			retiring = sess
		case sess.transport == TransportQUIC:
			c.quicLost(time.Since(began))
		}
	}
	for _, s := range []*session{next, retiring} { // made, or left, just as the client closed
		if s != nil {
			_ = s.conn.CloseWithError(connShutdown, "client shutting down")
			s.close()
		}
	}
	c.setState(nil, ErrClosed)
}

// sleep waits out a backoff, cut short (but never below minBackoff) when a flow is waiting.
func (c *Client) sleep(d time.Duration) {
	floor := time.NewTimer(min(d, minBackoff))
	defer floor.Stop()
	select {
	case <-floor.C:
	case <-c.ctx.Done():
		return
	}
	if d <= minBackoff {
		return
	}
	rest := time.NewTimer(d - minBackoff)
	defer rest.Stop()
	select {
	case <-rest.C:
	case <-c.kick:
	case <-c.ctx.Done():
	}
}

// attemptTimeout bounds one connection attempt: the dial timeout for the first, and once
// the path's round trip is known, eight of them but at least minRedial (and at most the
// dial timeout): quic-go backs off its Initial's retransmissions, so an attempt that went on
// for the whole dial timeout could leave a server back from an outage unheard for seconds;
// a new attempt sends at once.
func (c *Client) attemptTimeout() time.Duration {
	if c.lastRTT == 0 {
		return c.cfg.DialTimeout
	}
	return min(c.cfg.DialTimeout, max(minRedial, 8*c.lastRTT))
}

func ping(ctx context.Context, conn *quic.Conn) error {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	hdr, _ := AppendRequest(nil, Request{Kind: KindPing})
	if d, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(d)
	}
	if _, err := str.Write(hdr); err != nil {
		return err
	}
	_ = str.Close()
	return ReadStatus(str)
}

// classifyDialErr names why a dial failed; self is this client's fingerprint, which a server
// that does not know the client needs to be told.
func classifyDialErr(err error, server string, timeout time.Duration, self Fingerprint) error {
	var te *quic.TransportError
	var pe *PinError
	var ae *quic.ApplicationError
	switch {
	case errors.As(err, &ae) && ae.Remote && ae.ErrorCode == connTooMany:
		return fmt.Errorf("%w (%s; raise its --max-conns-per-client, or stop other clients using this identity)", ErrTooManyConns, server)
	case errors.As(err, &pe):
		return fmt.Errorf("%w: %s %w", ErrPinMismatch, server, pe)
	case errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError():
		return fmt.Errorf("%w: %s refused the handshake (%s); add this client's fingerprint, %s, as a line of the server's authorized-clients file", ErrUnauthorized, server, te.ErrorCode.Message(), self)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("%w: no answer from %s within %s", ErrServerUnreachable, server, timeout)
	}
	return fmt.Errorf("%w: %w", ErrServerUnreachable, err)
}

// failureReason names a failed dial for the handshake-failure metric.
func failureReason(err error) string {
	switch {
	case errors.Is(err, ErrPinMismatch):
		return "pin_mismatch"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrTooManyConns):
		return "too_many_connections"
	}
	return "unreachable"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
