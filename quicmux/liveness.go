package quicmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/netpath"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// How the client finds that the server stopped answering, and what it tries first.
//
// quic-go PINGs a connection that heard nothing for a keepalive period (Limits.KeepAlive,
// 1 s on the client), and the client sends a probe datagram as often, which a server that
// was restarted answers with a stateless reset. Both must be acknowledged, so a live
// server is heard from at least once a keepalive period, whether or not flows move; an
// idle connection sends nothing more than that. When nothing at all has come from the
// server for a keepalive period, the client probes every quarter period. At half the
// silence limit it also probes the other paths the host's routes offer (netpath.Others: a
// Wi-Fi that stays up but stopped carrying packets, and an LTE link beside it), each from
// a socket bound to its interface, and moves the connection to the first one the server
// answers on. At the silence limit (silenceLimit: twice the keepalive period, more on a
// slow path), with at least minUnanswered probes unanswered, the connection is lost: one
// line is logged, its flows are reset, and the supervisor dials again from a new socket.
// A change of the host's links, addresses or routes (netlink) sends a probe at once, so
// that the server hears of the client's new address without waiting for a keepalive.

// session is one connection to the server with the sockets it used: the one it was dialed
// on and those of the paths it probed. A path's socket stays open while the connection
// lives (quic-go closes the connections a closed Transport knows), so there are at most
// maxSockets; they all close when the connection has ended.
type session struct {
	conn      *quic.Conn
	sockets   []*quic.Transport
	dev       string    // the interface the connection's path is bound to; "": the host's routes
	transport Transport // TransportQUIC or TransportTCP
	why       string    // why TransportAuto connected over TCP
	moved     bool      // the connection new flows moved to from a TCP one
}

// maxSockets bounds the sockets of one connection: the one it was dialed on and those of
// the paths it probed (a socket per interface tried).
const maxSockets = 5

func (s *session) close() {
	for _, tr := range s.sockets {
		_ = tr.Close()
		_ = tr.Conn.Close() // a Transport leaves a socket it was given open
	}
	s.sockets = nil
}

const (
	// probeSize is the size of a probe datagram: larger than quic-go's 42-byte floor for
	// answering with a stateless reset, which a bare keepalive PING is not.
	probeSize = 64
	// minUnanswered is how many probes must go unanswered before a silent server is given
	// up: a client whose own process was stalled (a loaded machine) has sent none while
	// its clock ran, and must not mistake its own stall for the server's silence.
	minUnanswered = 3
	// maxAckDelay is quic-go's (the QUIC default), part of a probe timeout.
	maxAckDelay = 25 * time.Millisecond
)

// silenceLimit is how long the server may be silent before its connection is lost: twice
// the keepalive period, or on a slow path four probe timeouts (RFC 9002's PTO), whichever is
// longer. The watch sees a packet's arrival only at its next tick, an eighth of the
// keepalive period, so it gives up one tick early: the connection is lost between 1.875 and
// 2 keepalive periods after the server's last packet.
func (c *Client) silenceLimit(conn *quic.Conn) time.Duration {
	st := conn.ConnectionStats()
	pto := st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + maxAckDelay
	return max(2*c.cfg.Limits.KeepAlive-c.watchTick(), 4*pto)
}

// watchTick is how often the watch looks at the connection: an eighth of the keepalive
// period.
func (c *Client) watchTick() time.Duration { return max(c.cfg.Limits.KeepAlive/8, 5*time.Millisecond) }

// pathFound is the outcome of probing other paths: the one the server answered on, and
// every socket opened for it (which join the session either way).
type pathFound struct {
	path    *quic.Path // nil: none answered
	dev     string
	sockets []*quic.Transport
}

// watch keeps s until its connection is lost or the client closes, and closes its sockets.
// It reports whether the connection was given up because the server fell silent (that
// was logged then). A connection over the TCP transport in TransportAuto tries QUIC now and
// then; when QUIC answers, watch returns its new connection as next and leaves s open, for
// the supervisor to retire (keep until its flows have ended).
func (c *Client) watch(s *session) (silent bool, next *session) {
	defer func() {
		if next == nil {
			s.close()
		}
	}()
	var retry <-chan time.Time // QUIC's next try, while on TCP
	var retried chan *session  // not nil while QUIC is tried
	if useQUIC, _ := c.plan(); useQUIC && s.transport == TransportTCP {
		retry = time.After(c.quicRetryWait())
		defer func() { // the try is this loop's goroutine: it ends before watch returns
			if retried != nil {
				if n := <-retried; n != nil {
					_ = n.conn.CloseWithError(connShutdown, "")
					n.close()
				}
			}
		}()
	}
	ka := c.cfg.Limits.KeepAlive
	tick := time.NewTicker(c.watchTick())
	defer tick.Stop()
	var changes <-chan struct{}
	if c.netWatch != nil {
		changes = c.netWatch.C
	}
	payload := make([]byte, probeSize)
	probe := func() { _ = s.conn.SendDatagram(payload) }

	// The path prober is this loop's goroutine: it ends before the loop returns.
	probeCtx, stopProbing := context.WithCancel(c.ctx)
	var found chan pathFound // not nil while paths are probed
	defer func() {
		stopProbing()
		if found != nil {
			f := <-found
			s.sockets = append(s.sockets, f.sockets...)
		}
	}()

	heard, lastHeard, lastProbe := s.conn.ConnectionStats().PacketsReceived, time.Now(), time.Now()
	unanswered, probedPaths := 0, false
	for {
		select {
		case now := <-tick.C:
			if n := s.conn.ConnectionStats().PacketsReceived; n != heard {
				heard, lastHeard, unanswered, probedPaths = n, now, 0, false
			}
			quiet, limit := now.Sub(lastHeard), c.silenceLimit(s.conn)
			if quiet >= limit && unanswered >= minUnanswered {
				c.log.WithFields(logrus.Fields{"silent_for": quiet.Round(time.Millisecond).String(), "probes": unanswered}).
					Warn("no answer from server; connection lost, reconnecting")
				err := fmt.Errorf("%w: no answer from %s for %s", ErrServerUnreachable, c.cfg.Server, quiet.Round(time.Millisecond))
				c.setState(nil, err)
				_ = s.conn.CloseWithError(connSilent, "no answer from the server for "+quiet.Round(time.Millisecond).String())
				return true, nil
			}
			if quiet >= ka || now.Sub(lastProbe) >= ka {
				probe()
				lastProbe = now
				if quiet >= ka {
					unanswered++
				}
			}
			if quiet >= limit/2 && !probedPaths && found == nil && len(s.sockets) < maxSockets && s.transport == TransportQUIC {
				probedPaths = true
				found = make(chan pathFound, 1)
				go func() { found <- c.probePaths(probeCtx, s.conn, s.dev, maxSockets-len(s.sockets), limit/2) }()
			}
		case <-changes:
			probe()
		case <-retry:
			retry = nil
			retried = make(chan *session, 1)
			go func() {
				n, err := c.retryQUIC(probeCtx)
				if err != nil {
					c.log.WithError(err).Debug("QUIC still does not answer; staying on TCP")
				}
				retried <- n
			}()
		case n := <-retried:
			retried = nil
			if n == nil {
				c.backOffQUIC()
				retry = time.After(c.quicRetryWait())
				break
			}
			n.moved = true
			return false, n
		case f := <-found:
			found = nil
			s.sockets = append(s.sockets, f.sockets...)
			if f.path == nil {
				break
			}
			if err := f.path.Switch(); err != nil {
				c.log.WithError(err).WithField("dev", f.dev).Debug("cannot move the connection to a path the server answered on")
				break
			}
			s.dev = f.dev
			probe() // the server moves to the new path on its first packet that is no probe
			c.log.WithFields(logrus.Fields{"dev": devName(f.dev), "silent_for": time.Since(lastHeard).Round(time.Millisecond).String()}).
				Info("server answers on another path; connection moved to it")
		case <-s.conn.Context().Done():
			c.log.WithError(context.Cause(s.conn.Context())).Warn("connection to server lost; reconnecting")
			c.setState(nil, fmt.Errorf("%w: connection lost", ErrServerUnreachable))
			return false, nil
		case <-c.ctx.Done():
			linger(s.conn)
			_ = s.conn.CloseWithError(connShutdown, "client shutting down")
			return false, nil
		}
	}
}

// noAnswer maps the error of a wait for a request's status (mapStreamErr): a connection
// that ended first means that the server never answered, not that it reset the flow, and
// one the server closed because this client is no longer authorized is ErrUnauthorized.
func noAnswer(err error) error {
	var (
		ite *quic.IdleTimeoutError
		sre *quic.StatelessResetError
		ae  *quic.ApplicationError
		te  *quic.TransportError
	)
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == connRevoked {
		return fmt.Errorf("%w: the server closed the connection: %s", ErrUnauthorized, ae.ErrorMessage)
	}
	if errors.As(err, &ite) || errors.As(err, &sre) || errors.As(err, &ae) || errors.As(err, &te) {
		return fmt.Errorf("%w: connection lost before the server answered: %v", ErrServerUnreachable, err)
	}
	return mapStreamErr(err)
}

// devName names an interface a path is bound to for a log line.
func devName(dev string) string {
	if dev == "" {
		return "the host's routes"
	}
	return dev
}

// probePaths probes, at once and within budget, the paths to conn's server other than the
// one in use (on interface dev, or "" for the host's routes): the host's routes when the
// connection is bound to an interface, and every other interface with a route to the
// server. It opens at most room sockets, and returns the first path the server answered
// on, after abandoning the others.
func (c *Client) probePaths(ctx context.Context, conn *quic.Conn, dev string, room int, budget time.Duration) pathFound {
	server, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return pathFound{}
	}
	others, err := netpath.Others(server.Addr(), c.cfg.Mark)
	if err != nil {
		c.log.WithError(err).Debug("cannot list the other paths to the server")
	}
	var devs []string
	if dev != "" {
		devs = append(devs, "") // back to the host's own choice
	}
	for _, d := range others {
		if d != dev {
			devs = append(devs, d)
		}
	}
	devs = devs[:min(len(devs), room)]
	if len(devs) == 0 {
		return pathFound{}
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	type tried struct {
		path *quic.Path
		dev  string
		err  error
	}
	results := make(chan tried, len(devs))
	var out pathFound
	started := 0
	for _, d := range devs {
		tr, err := c.newSocket(d)
		if err != nil {
			c.log.WithError(err).WithField("dev", devName(d)).Debug("cannot open a socket for another path")
			continue
		}
		out.sockets = append(out.sockets, tr)
		p, err := conn.AddPath(tr)
		if err != nil {
			c.log.WithError(err).Debug("cannot probe another path")
			break // the same for every path: the server's connection IDs, or migration refused
		}
		started++
		go func() { results <- tried{p, d, p.Probe(ctx)} }()
	}
	for range started {
		r := <-results
		if r.err == nil && out.path == nil {
			out.path, out.dev = r.path, r.dev
			cancel() // the others stop probing
			continue
		}
		_ = r.path.Close()
	}
	return out
}

// newSocket opens a UDP socket toward the server, with the client's mark and, if dev is not
// "", bound to that interface.
func (c *Client) newSocket(dev string) (*quic.Transport, error) {
	pc, err := listenUDP(":0", netpath.Control(c.cfg.Mark, dev))
	if err != nil {
		return nil, err
	}
	return &quic.Transport{Conn: pc}, nil
}

// resolveServer looks the server's name up (through sockets with the client's mark), or
// uses the address of the last lookup that worked when this one fails: in a full tunnel,
// the host's resolver may be reached only through the tunnel that is down.
func (c *Client) resolveServer(ctx context.Context) (netip.AddrPort, error) {
	return c.resolve(ctx, c.cfg.Server, &c.lastServer)
}

// resolve looks hostport up (through sockets with the client's mark); last, if not nil, keeps
// the address of the last lookup that worked, for when one fails.
func (c *Client) resolve(ctx context.Context, hostport string, last *netip.AddrPort) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	r := net.DefaultResolver
	if c.cfg.Mark != 0 {
		control := netpath.Control(c.cfg.Mark, "")
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			d := net.Dialer{Control: control}
			return d.DialContext(ctx, network, address)
		}}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, perr := r.LookupPort(ctx, "udp", portStr)
		if perr != nil {
			return netip.AddrPort{}, perr
		}
		port = uint64(p)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		if last != nil && last.IsValid() {
			c.log.WithError(err).WithField("address", last.String()).Debug("cannot look the server's name up; using its last address")
			return *last, nil
		}
		if err == nil {
			err = fmt.Errorf("no address for %s", host)
		}
		return netip.AddrPort{}, err
	}
	// IPv4 first where the name has both, as net.ResolveUDPAddr chooses.
	pick := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			pick = a.Unmap()
			break
		}
	}
	ap := netip.AddrPortFrom(pick, uint16(port))
	if last != nil {
		*last = ap
	}
	return ap, nil
}

// routeCheck fails at once when the host has no route to raddr for the client's sockets.
func (c *Client) routeCheck(ctx context.Context, raddr netip.AddrPort) error {
	d := net.Dialer{Control: netpath.Control(c.cfg.Mark, "")}
	conn, err := d.DialContext(ctx, "udp", raddr.String())
	if err != nil {
		var se interface{ Timeout() bool }
		if errors.As(err, &se) && se.Timeout() {
			return nil // the handshake's own timeout will speak
		}
		return err
	}
	return conn.Close()
}
