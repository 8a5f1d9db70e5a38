package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// ErrBadUDPForward: a -U specification could not be parsed.
var ErrBadUDPForward = errors.New("ingress: bad -U forward")

// UDPForward is one -U: a local UDP address and the UDP target its packets go to.
type UDPForward struct {
	Bind   netip.AddrPort // port 0 picks a free port
	Target flow.Target
}

func (f UDPForward) String() string { return f.Bind.String() + ":" + f.Target.String() }

// ParseUDPForward parses "[bind_address:]port:host:hostport" as -L does (ssh -L's syntax):
// the bind address defaults to 127.0.0.1, "localhost" means 127.0.0.1 and "*" all
// interfaces; IPv6 addresses go in brackets.
func ParseUDPForward(spec string) (UDPForward, error) {
	f, err := parseForward(spec, ErrBadUDPForward)
	return UDPForward(f), err
}

// UDPTunnel opens UDP flows: *quicmux.Client is one.
type UDPTunnel interface {
	// OpenUDP opens a UDP flow to t (a name is resolved by the server) once the server has
	// allowed it, and returns the tunnel's end of it, for flow.RelayPackets; closing the
	// end ends the flow. ingress and peer name the flow in the metrics and the recent
	// failures.
	OpenUDP(ctx context.Context, t flow.Target, ingress, peer string) (flow.PacketConn, error)
}

var _ UDPTunnel = (*quicmux.Client)(nil)

// UDPPortConfig is what a -U takes besides Options.
type UDPPortConfig struct {
	// MaxFlows bounds the source addresses with a flow at once; packets from further
	// sources are dropped (one warning per burst). 0 means DefaultUDPFlows.
	MaxFlows int
}

// DefaultUDPFlows is the default bound on a -U's concurrent source flows: a UDP flow costs
// a socket on the server.
const DefaultUDPFlows = 1024

const (
	// udpRetryAfter is how long a source whose flow could not be opened (a denied target,
	// no server) has its packets dropped before one of them tries again: without it, every
	// packet of a source that keeps sending would be a request to the server and a log line.
	udpRetryAfter = 2 * time.Second
	// udpWarnQuiet ends a burst of drops at the source limit: the next drop after this long
	// without one warns again.
	udpWarnQuiet = 10 * time.Second
)

// UDPPort is one -U: a local UDP socket whose packets are forwarded to a UDP target
// through the tunnel. Each source address (ip:port) gets a UDP flow of its own, as a NAT
// gives it a mapping: its packets go to its flow, and the flow's packets come back to it
// from the bound socket. A flow ends when the server ends it (its idle timeout: 2 min, 15 s
// to port 53), the target answers ICMP port unreachable, or the connection ends; the next
// packet from that source opens a new one. The app sees none of these ends, as a UDP app
// behind a NAT does not: only its packets go unanswered.
type UDPPort struct {
	sock   *net.UDPConn
	shared *flow.SharedUDPSocket
	fwd    UDPForward
	name   string // "-U bind:port:host:hostport", with the bound port
	tun    UDPTunnel
	opt    Options
	max    int
	log    *logrus.Entry
	// retryAfter is udpRetryAfter (tests shorten or lengthen it before Serve).
	retryAfter time.Duration

	ctx    context.Context // the flows'; canceled by shutdown
	cancel context.CancelFunc

	read atomic.Uint64 // packets read from the socket (tests wait for theirs)

	mu       sync.Mutex
	closed   bool // no new source; set before sock is closed
	sources  map[netip.AddrPort]*udpSource
	lastDrop time.Time // the last packet dropped at the source limit
	wg       sync.WaitGroup
}

var _ Ingress = (*UDPPort)(nil)

// udpSource is one source address and its flow.
type udpSource struct {
	sharedFlow
	src netip.AddrPort
}

// ListenUDPPort binds f's local address.
func ListenUDPPort(f UDPForward, t UDPTunnel, opt Options, cfg UDPPortConfig) (*UDPPort, error) {
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(f.Bind))
	if err != nil {
		return nil, fmt.Errorf("ingress: -U %s: %w", f, err)
	}
	_ = sock.SetReadBuffer(4 << 20) // a burst of packets while Serve is descheduled
	bound := sock.LocalAddr().(*net.UDPAddr).AddrPort()
	bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	maxFlows := cfg.MaxFlows
	if maxFlows <= 0 {
		maxFlows = DefaultUDPFlows
	}
	shared, err := flow.NewSharedUDPSocket(sock)
	if err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("ingress: -U %s: %w", f, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &UDPPort{
		sock:       sock,
		shared:     shared,
		fwd:        f,
		name:       "-U " + UDPForward{Bind: bound, Target: f.Target}.String(),
		tun:        t,
		opt:        opt,
		max:        maxFlows,
		retryAfter: udpRetryAfter,
		log:        opt.logger().WithFields(logrus.Fields{"listen": bound.String(), "proto": "udp"}),
		ctx:        ctx,
		cancel:     cancel,
		sources:    map[netip.AddrPort]*udpSource{},
	}, nil
}

// Addr is the bound address (with the chosen port when -U asked for port 0).
func (u *UDPPort) Addr() net.Addr { return u.sock.LocalAddr() }

// Target is where this port's packets go.
func (u *UDPPort) Target() flow.Target { return u.fwd.Target }

// Flows is the number of source addresses with a flow (or a flow being opened) now.
func (u *UDPPort) Flows() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sources)
}

// Serve reads the local socket and hands each source's packets to its flow until ctx ends.
// Then it closes the socket and every flow at once, and returns once their set-up has
// ended: a UDP flow has no end of its own to wait for (a drain timeout would only hold every
// shutdown up), and an answer still on its way is lost as UDP loses packets. An open flow
// holds no goroutine: Serve's reads move a source's packets into the tunnel, the
// connection's loop moves the answers out of the socket.
func (u *UDPPort) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, u.shutdown)
	defer stop()
	defer u.wg.Wait()
	err := u.shared.ReadLoop(func(ps [][]byte, from []netip.AddrPort) {
		u.read.Add(uint64(len(ps)))
		// Consecutive packets of one source go to its flow as one batch.
		for i := 0; i < len(ps); {
			j := i + 1
			for j < len(ps) && from[j] == from[i] {
				j++
			}
			u.route(from[i], ps[i:j])
			i = j
		}
	})
	u.mu.Lock()
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return nil
	}
	u.shutdown()
	return fmt.Errorf("ingress: %s: %w", u.name, err)
}

// route hands ps to src's flow, opening one for a new source within the limit. It runs on
// Serve's goroutine; a flow's relay may wait there while the tunnel's datagram queue is
// full, which leaves the rest in the socket's buffer.
func (u *UDPPort) route(src netip.AddrPort, ps [][]byte) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	s := u.sources[src]
	if s == nil {
		if len(u.sources) >= u.max {
			now := time.Now()
			if now.Sub(u.lastDrop) >= udpWarnQuiet {
				u.log.WithFields(logrus.Fields{"max_flows": u.max, "peer": src.String()}).Warn("udp source limit reached: dropping new sources' packets")
			}
			u.lastDrop = now
			u.mu.Unlock()
			return
		}
		s = &udpSource{src: src}
		s.write = func(ps [][]byte) { _ = u.shared.WriteTo(ps, src) } // what the source refuses is lost
		s.onClose = func() { u.remove(s) }
		u.sources[src] = s
		u.wg.Add(1)
		go u.open(s)
	}
	u.mu.Unlock()
	s.deliver(ps)
}

// open opens s's flow and starts its relay; when the flow ends, s is removed, so that the
// source's next packet opens a new one. A source whose flow could not be opened is kept,
// failed, for retryAfter.
func (u *UDPPort) open(s *udpSource) {
	defer u.wg.Done()
	tun, err := u.tun.OpenUDP(u.ctx, u.fwd.Target, u.name, s.src.String())
	if err != nil {
		u.logEnd(s, err, 0, 0)
		if u.ctx.Err() != nil {
			u.remove(s)
			return
		}
		s.fail()
		t := time.NewTimer(u.retryAfter)
		defer t.Stop()
		select {
		case <-t.C:
		case <-u.ctx.Done():
		}
		u.remove(s)
		return
	}
	u.wg.Add(1) // the relay's: Serve and Close wait for the flows to end
	// The relay closes s when the flow ends, which removes it (onClose).
	flow.RelayPackets(u.ctx, &s.sharedFlow, tun, flow.PacketRelayOptions{}, func(st flow.PacketStats, err error) {
		defer u.wg.Done()
		u.logEnd(s, err, st.AtoB, st.BtoA)
	})
}

// logEnd logs how s's flow ended: a line for a failure (the server's refusal, the target's
// port unreachable, a reset), a debug line otherwise (its idle timeout, the shutdown).
func (u *UDPPort) logEnd(s *udpSource, err error, up, down int64) {
	result := udpResult(err)
	failed := u.ctx.Err() == nil && result != "idle" && result != "shutdown"
	level := logrus.DebugLevel
	if failed {
		level = logrus.InfoLevel
	}
	if !u.log.Logger.IsLevelEnabled(level) {
		return
	}
	peer := netip.AddrPortFrom(s.src.Addr().Unmap(), s.src.Port())
	entry := u.log.WithFields(logrus.Fields{"peer": peer.String(), "target": u.fwd.Target.String(), "bytes_up": up, "bytes_down": down, "result": result})
	if failed {
		entry.WithError(err).Info("flow failed")
		return
	}
	entry.Debug("flow ended")
}

// udpResult names how a UDP flow ended: flow.Result's name, or for a flow the server
// would not open its status (denied, unreachable, ...).
func udpResult(err error) string {
	var se *quicmux.StatusError
	if errors.As(err, &se) {
		return se.Status.String()
	}
	return flow.Result(err)
}

// remove drops s from the table.
func (u *UDPPort) remove(s *udpSource) {
	u.mu.Lock()
	if u.sources[s.src] == s {
		delete(u.sources, s.src)
	}
	u.mu.Unlock()
}

// shutdown stops taking packets and ends every flow.
func (u *UDPPort) shutdown() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.cancel()
	_ = u.sock.Close()
}

// Close closes the socket and every flow at once, and returns once their goroutines have
// ended. It is idempotent.
func (u *UDPPort) Close() error {
	u.shutdown()
	u.wg.Wait()
	return nil
}
