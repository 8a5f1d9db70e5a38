package quicmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/logging"
	"github.com/quicgate/quicgate/streamlink"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/sirupsen/logrus"
)

// Dialer opens the server's side of a flow (egress). *net.Dialer is one.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Resolver turns a target's name into addresses so the policy can judge them.
// *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ServerConfig configures a Server. Identity, Authorized and Policy are required.
type ServerConfig struct {
	Identity   *Identity
	Authorized func(Fingerprint) bool
	Policy     Policy
	// ListenPolicy says where a client may have the server listen for a reverse forward
	// (Client.Listen, -R); nil: nowhere. Reloads reach it as they reach Authorized.
	ListenPolicy func(Fingerprint, netip.AddrPort) bool

	// Dialer dials destinations; default: a net.Dialer with TCPKeepAlive. It should return
	// *net.TCPConn or a flow.Conn; any other net.Conn is adapted (flow.AsConn).
	Dialer Dialer
	// Resolver looks up names that the hosts file does not have, always as absolute names
	// (with a trailing dot), so no search domain can turn a name into another; default:
	// net.DefaultResolver.
	Resolver Resolver
	// HostsFile is the hosts(5) file whose names are resolved before DNS, and trusted to
	// point at the server's own addresses (localhost); default DefaultHostsFile.
	HostsFile string

	DialTimeout   time.Duration // per destination dial; default 10s
	HeaderTimeout time.Duration // a stream must deliver its header within this; default 10s
	// MaxHeaderBytes bounds a request header (at most, and by default, MaxHeaderLen).
	MaxHeaderBytes int
	// MaxPendingDials bounds the requests resolving and connecting at once, over all
	// clients: every kind holds a slot while its name is looked up and it connects (a TCP
	// dial, a UDP socket, an echo, a bind; admission.go). One that finds no slot within the
	// dial timeout (an echo: EchoTimeout) gets "timed out". Default 1024.
	MaxPendingDials int
	// MaxConnsPerClient bounds the connections one client identity may have open at once; a
	// connection beyond it is closed right after its handshake. Default
	// DefaultMaxConnsPerClient.
	MaxConnsPerClient int
	// MaxFlowsPerClient bounds the streams one client identity may have open at once over
	// all its connections: flows, and streams still sending their header. A stream beyond
	// it is answered StatusTooManyFlows at once. It bounds what one client can make the
	// server hold (about 14 KiB a stream); default Limits.MaxStreams, one connection's worth.
	MaxFlowsPerClient int
	// FlowIdleTimeout resets a flow that moved no byte either way for this long; 0: never
	// (the command's default is flow.DefaultIdleTimeout).
	FlowIdleTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow that carried no packet either way for this long; 0:
	// DefaultUDPIdleTimeout, and DefaultDNSIdleTimeout for flows to port 53.
	UDPIdleTimeout time.Duration
	// TCPKeepAlive is the keepalive time of the default Dialer's sockets
	// (flow.KeepAliveConfig), so that a flow whose destination host vanished is reset: 0
	// means flow.DefaultTCPKeepAlive, negative turns keepalive off.
	TCPKeepAlive time.Duration
	// Retry makes every new client prove its address with a QUIC Retry round trip first, so a
	// spoofed source cannot make the server do handshake work (for exposed servers).
	Retry bool
	// MaxHandshakes bounds the QUIC handshakes in progress at once, from a client's first
	// Initial until its handshake completes, fails or times out (Limits.HandshakeTimeout); a
	// new connection beyond it is refused (CONNECTION_REFUSED) before the server keeps any
	// state for it. Default DefaultMaxHandshakes.
	MaxHandshakes int
	// RetryHandshakes: from this many handshakes in progress on, a new client must prove its
	// address with a Retry round trip first (as with Retry), so that Initials from spoofed
	// sources hold no state. Default DefaultRetryHandshakes; negative: only with Retry.
	RetryHandshakes int
	Limits          Limits

	Metrics *Metrics      // default: none
	Logger  *logrus.Entry // default: discard

	// echo replaces sendEcho (tests: a host that allows no ICMP socket).
	echo func(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error)
}

// Server accepts QUIC connections from authorized clients and serves their flows.
type Server struct {
	cfg ServerConfig
	log *logrus.Entry

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	tr     *quic.Transport
	ln     *quic.Listener
	closed bool
	// The TCP transport (tcptransport.go), when ListenTCP was called.
	tcpTr   *quic.Transport
	tcpLn   *quic.Listener
	streams *streamlink.Server
	// tcpLines limits the debug line of a TCP connection closed before its handshake.
	tcpLines lineLimit

	flows  *flow.Group
	parker *flow.Parker // idle destination sockets; nil: a goroutine each
	hosts  *hostsFile
	own    ownAddrs

	// What is open, for Recheck: connections by client fingerprint, flows by target.
	liveMu    sync.Mutex
	liveConns map[*quic.Conn]Fingerprint
	perClient map[Fingerprint]int
	flowsOf   map[Fingerprint]int // streams open per client identity (MaxFlowsPerClient)
	liveFlows map[*liveFlow]struct{}
	liveLns   map[*liveListener]struct{}
	noListens bool // the drain has begun: no new reverse forward listeners
	dialSlots chan struct{}
	flowSeq   atomic.Uint64
	hs        *handshakes // handshakes in progress (handshakes.go)

	// The rules each kind of request is judged by (rulesFor), made once.
	allowTCP, allowUDP, allowAnyPort func(flow.Target) bool
	// Lines a client can make the server repeat: refused requests, and allowed names that
	// resolve only to guarded addresses.
	rejectLines, guardLines lineLimit

	// echo sends one ICMP echo (echo.go): sendEcho, or a test's fake.
	echo       func(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error)
	noEchoOnce sync.Once // the line that says ICMP sockets are not allowed is logged once
}

// NewServer checks cfg and returns a server that is not yet listening.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.Identity == nil:
		return nil, errors.New("quicmux: server needs an identity")
	case cfg.Authorized == nil:
		return nil, errors.New("quicmux: server needs a set of authorized clients")
	case cfg.Policy == nil:
		return nil, errors.New("quicmux: server needs a policy")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = flow.TCPDialer(cfg.TCPKeepAlive)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.HostsFile == "" {
		cfg.HostsFile = DefaultHostsFile
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 || cfg.MaxHeaderBytes > MaxHeaderLen {
		cfg.MaxHeaderBytes = MaxHeaderLen
	}
	if cfg.MaxPendingDials <= 0 {
		cfg.MaxPendingDials = 1024
	}
	if cfg.MaxConnsPerClient <= 0 {
		cfg.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.RetryHandshakes == 0 {
		cfg.RetryHandshakes = DefaultRetryHandshakes
	}
	cfg.Limits = cfg.Limits.withDefaults(true)
	if err := cfg.Limits.check(); err != nil {
		return nil, err
	}
	if cfg.MaxFlowsPerClient <= 0 {
		cfg.MaxFlowsPerClient = int(cfg.Limits.MaxStreams)
	}
	cfg.Metrics.setCongestion(cfg.Limits.Congestion)
	s := &Server{cfg: cfg, log: logging.OrDiscard(cfg.Logger), dialSlots: make(chan struct{}, cfg.MaxPendingDials), hosts: &hostsFile{path: cfg.HostsFile}, echo: cfg.echo,
		liveConns: map[*quic.Conn]Fingerprint{}, perClient: map[Fingerprint]int{}, flowsOf: map[Fingerprint]int{}, liveFlows: map[*liveFlow]struct{}{}, liveLns: map[*liveListener]struct{}{}}
	if s.echo == nil {
		s.echo = sendEcho
	}
	s.allowTCP = func(t flow.Target) bool { return allows(s.cfg.Policy, ProtoTCP, t) }
	s.allowUDP = func(t flow.Target) bool { return allows(s.cfg.Policy, ProtoUDP, t) }
	if ap, ok := cfg.Policy.(AnyPortPolicy); ok {
		s.allowAnyPort = ap.AllowAnyPort
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.flows = flow.NewGroup(s.ctx)
	s.parker, _ = flow.NewParker()
	s.hs = newHandshakes(cfg, s.log)
	return s, nil
}

// Listen binds addr (UDP) and serves in the background until Close. It returns the bound
// address, which tells the port when addr asked for port 0.
func (s *Server) Listen(addr string) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.ln != nil {
		return nil, errors.New("quicmux: server is already listening")
	}
	udp, err := listenUDP(addr, nil)
	if err != nil {
		return nil, err
	}
	resetKey, err := s.cfg.Identity.statelessResetKey()
	if err != nil {
		_ = udp.Close()
		return nil, err
	}
	tr := &quic.Transport{Conn: udp, StatelessResetKey: resetKey,
		VerifySourceAddress: s.hs.verifySource, ConnContext: s.hs.connContext}
	tlsConf := serverTLS(s.cfg.Identity, s.cfg.Authorized, s.log, s.cfg.Metrics.handshakeFailed)
	ln, err := tr.Listen(tlsConf, s.cfg.Limits.quicConfig(true))
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("quicmux: %w", err)
	}
	s.tr, s.ln = tr, ln
	s.wg.Add(1)
	go s.acceptConns(ln, nil)
	s.log.WithFields(logrus.Fields{"addr": ln.Addr().String(), "congestion": string(s.cfg.Limits.Congestion)}).Info("server listening")
	return ln.Addr(), nil
}

// Shutdown drains the server: it stops accepting connections, answers new flows on open
// connections with "shutting down", waits until the open flows have ended or ctx is done, and
// then closes, resetting whatever is still open. It returns ctx's error if it had to reset.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	lns := []*quic.Listener{s.ln, s.tcpLn}
	s.mu.Unlock()
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
	s.closeListeners() // reverse forwards take no new connections either
	stop := context.AfterFunc(ctx, func() {
		s.log.WithField("flows", s.flows.Open()).Warn("drain timeout: resetting the flows still open")
	})
	err := s.flows.Drain(ctx)
	stop()
	_ = s.Close()
	return err
}

// Close stops accepting, resets the flows still open, closes every connection and waits
// for every goroutine the server started. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	lns, trs := []*quic.Listener{s.ln, s.tcpLn}, []*quic.Transport{s.tr, s.tcpTr}
	s.mu.Unlock()

	s.cancel()
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
	s.wg.Wait()
	if s.parker != nil {
		s.parker.Close() // every flow has ended
	}
	for _, tr := range trs {
		if tr != nil {
			_ = tr.Close()
			_ = tr.Conn.Close() // the transport leaves a socket it was given open
		}
	}
	return nil
}

// acceptConns serves the connections ln accepts; sl is the TCP transport's streams when ln
// is that transport's listener, else nil.
func (s *Server) acceptConns(ln *quic.Listener, sl *streamlink.Server) {
	defer s.wg.Done()
	defer s.hs.stopLogging()
	for {
		qc, err := ln.Accept(s.ctx)
		if err != nil {
			return
		}
		s.hs.accepted(qc)
		s.wg.Add(1)
		go s.serveConn(qc, sl)
	}
}

func (s *Server) serveConn(qc *quic.Conn, sl *streamlink.Server) {
	defer s.wg.Done()
	defer overStream(sl, qc)()
	log := s.log.WithField("peer", qc.RemoteAddr().String())
	if sl != nil {
		log = log.WithField("transport", "tcp")
	}
	cl := &connInfo{qc: qc, name: qc.RemoteAddr().String(), dgrams: newDatagramMux()}
	if certs := qc.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		fp := FingerprintOf(certs[0])
		log = log.WithField("fingerprint", fp.String())
		cl.fp, cl.name = fp, fp.String()
		s.liveMu.Lock()
		if s.perClient[fp] >= s.cfg.MaxConnsPerClient {
			s.liveMu.Unlock()
			log.WithField("max_conns_per_client", s.cfg.MaxConnsPerClient).Warn("client refused: too many connections for this identity")
			s.cfg.Metrics.handshakeFailed("too_many_connections")
			_ = qc.CloseWithError(connTooMany, "too many connections for this client identity")
			return
		}
		s.perClient[fp]++
		s.liveConns[qc] = fp
		s.liveMu.Unlock()
		// A reload since the handshake's check did not see this connection yet.
		if !s.cfg.Authorized(fp) {
			s.revoke(qc, fp)
		}
		defer func() {
			s.liveMu.Lock()
			delete(s.liveConns, qc)
			if s.perClient[fp]--; s.perClient[fp] <= 0 {
				delete(s.perClient, fp)
			}
			s.liveMu.Unlock()
		}()
	}
	log.Info("client connected")
	cl.log = log
	transport := "quic"
	if sl != nil {
		transport = "tcp"
	}
	s.cfg.Metrics.trackConn(qc, transport)

	// The connection's flows, their dials included, live as long as both the connection and
	// the server's flow group: a client that goes away takes its pending dials with it.
	ctx, cancel := context.WithCancel(s.flows.Context())
	defer cancel()
	stop := context.AfterFunc(qc.Context(), cancel)
	defer stop()

	qc.SetDatagramHandler(cl.dgrams) // UDP flows' datagrams, on the connection's loop
	for {
		str, err := qc.AcceptStream(ctx)
		if err != nil {
			if s.ctx.Err() == nil {
				log.WithError(err).Info("client disconnected")
			}
			break
		}
		cl.streams.Add(1)
		if !s.takeFlowSlot(cl.fp) {
			go s.tooManyFlows(cl, str)
			continue
		}
		go s.serveStream(ctx, cl, str)
	}
	cl.streams.Wait() // every stream's flow has ended, not only its goroutine
	linger(qc)
	_ = qc.CloseWithError(connShutdown, "server shutting down")
}

// takeFlowSlot counts a new stream of fp's against MaxFlowsPerClient; false: none left.
func (s *Server) takeFlowSlot(fp Fingerprint) bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.flowsOf[fp] >= s.cfg.MaxFlowsPerClient {
		return false
	}
	s.flowsOf[fp]++
	return true
}

func (s *Server) releaseFlowSlot(fp Fingerprint) {
	s.liveMu.Lock()
	if s.flowsOf[fp]--; s.flowsOf[fp] <= 0 {
		delete(s.flowsOf, fp)
	}
	s.liveMu.Unlock()
}

// tooManyFlows answers a stream beyond the client's MaxFlowsPerClient without reading it.
func (s *Server) tooManyFlows(cl *connInfo, str *quic.Stream) {
	defer cl.streams.Done()
	s.refuse(&request{kind: kindUnknown, cl: cl, str: str, id: s.flowSeq.Add(1)}, StatusTooManyFlows, nil)
}

// connInfo is what a connection's streams share.
type connInfo struct {
	qc   *quic.Conn
	fp   Fingerprint
	name string // the fingerprint, or the address: who failures are listed under
	log  *logrus.Entry
	// streams counts the streams and flows still open, which the connection waits for.
	streams  sync.WaitGroup
	dgrams   *datagramMux // the connection's UDP flows' datagrams
	limitLog sync.Once    // the first stream beyond MaxFlowsPerClient
}

// serveStream serves one stream: its request, which each kind takes through admission
// (admission.go), and for a TCP flow the destination's dial and the start of its relay. It
// returns once the flow is under way, so that an idle flow keeps no goroutine; the stream
// is done with in cl.streams when its flow has ended.
func (s *Server) serveStream(ctx context.Context, cl *connInfo, str *quic.Stream) {
	rq := &request{kind: kindUnknown, cl: cl, str: str, id: s.flowSeq.Add(1), s: s, slot: true}
	relaying := false
	defer func() {
		if !relaying {
			rq.release()
		}
	}()
	rq.in = headerRead{str: str, ctx: ctx, deadline: time.Now().Add(s.cfg.HeaderTimeout)}
	defer rq.in.unwatch()

	req, err := ReadRequestLimit(&rq.in, s.cfg.MaxHeaderBytes)
	rq.in.settle(time.Now().Add(s.cfg.HeaderTimeout))
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			s.refuse(rq, StatusBadRequest, err)
			return
		}
		if cl.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			rq.entry(logrus.Fields{}).WithError(err).Debug("stream ended before its header")
		}
		abortStream(str, codeBadRequest)
		return
	}
	rq.kind, rq.target = req.Kind, req.Target
	switch req.Kind {
	case KindPing:
		// The slot goes back before the answer: once the ping's stream is done, QUIC lets
		// the client open its next one, which must not find the slot still taken.
		rq.releaseSlot()
		_, _ = str.Write(statusOK)
		_ = str.Close()
		return
	case KindTCP:
		relaying = s.serveTCP(ctx, rq)
	case KindListen:
		s.serveListen(ctx, rq)
	case KindUDP:
		relaying = s.serveUDP(ctx, rq)
	case KindResolve:
		s.serveResolve(ctx, rq)
	case KindEcho:
		s.serveEcho(ctx, rq)
	default: // KindAccepted is the server's to send, never a client's
		s.refuse(rq, StatusBadRequest, fmt.Errorf("%w: a client sent a %s header", ErrBadRequest, req.Kind))
	}
}

// statusOK is the ok status's bytes, for answers that are nothing more; quic-go only reads
// what it is given to write, so one slice serves every stream (full: appending copies it).
var statusOK = slices.Clip(AppendStatus(nil, StatusOK))

// serveTCP serves a TCP flow's request: admitted, its destination dialed (dialTCP), it
// answers ok and starts the relay, and reports true; the request is released when the flow
// has ended. Refused, or failing before its relay, it reports false.
func (s *Server) serveTCP(ctx context.Context, rq *request) bool {
	var dst flow.Conn
	a := s.admit(ctx, rq, func(ctx context.Context, addrs []netip.Addr) (netip.Addr, Status, error) {
		var addr netip.Addr
		var st Status
		var err error
		dst, addr, st, err = s.dialTCP(ctx, addrs, rq.target.Port)
		return addr, st, err
	})
	if a == nil {
		return false
	}
	str := rq.str
	if _, err := str.Write(statusOK); err != nil {
		dst.Abort() // the destination must see a reset, not a clean empty flow
		abortStream(str, codeFlowReset)
		a.end("reset", err, flow.Stats{})
		return false
	}
	qc := rq.cl.qc
	sc := newStreamConn(str, qc.LocalAddr(), qc.RemoteAddr())
	opt := s.cfg.Metrics.relayOptions(s.cfg.FlowIdleTimeout)
	opt.Parker = s.parker
	a.watch()
	abort := flow.StartRelay(ctx, sc, dst, opt, func(stats flow.Stats, err error) {
		a.end(flow.Result(err), err, stats)
		rq.release()
	})
	// A reload between the dial's check and here found this flow without its abort (or
	// not at all): abortWith judges it again under the rules in force now.
	a.abortWith(abort)
	return true
}

// dialTCP dials the addresses in turn, under ctx, until one answers, mapping the last
// failure to its status.
func (s *Server) dialTCP(ctx context.Context, addrs []netip.Addr, port uint16) (flow.Conn, netip.Addr, Status, error) {
	st, last := StatusUnreachable, error(nil)
	for _, a := range addrs {
		c, err := s.cfg.Dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return flow.AsConn(c), a, StatusOK, nil
		}
		st, last = statusOf(err), err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.Addr{}, st, last
}

// ingressServer is the ingress of the server's flows in its metrics: its QUIC listener.
const ingressServer = "quic"

// stillAllowed is the policy's verdict, as it is now, on an open flow (reaches, by the rules
// for its kind).
func (s *Server) stillAllowed(f *liveFlow) bool {
	return s.reaches(s.rulesFor(f.kind), f.target, f.at.addr, f.at.fromHosts)
}

// revoke closes the connection of a client no longer authorized.
func (s *Server) revoke(qc *quic.Conn, fp Fingerprint) {
	s.log.WithFields(logrus.Fields{"peer": qc.RemoteAddr().String(), "fingerprint": fp.String()}).Warn("closing the connection of a client no longer authorized")
	_ = qc.CloseWithError(connRevoked, "client no longer authorized")
}

// liveFlow is an open flow as Recheck sees it.
type liveFlow struct {
	kind   Kind // KindTCP or KindUDP
	target flow.Target
	at     dialedAddr
	abort  func(error) // nil for the moment between registration and the relay's start
}

// ErrPolicyChanged ends a flow whose target the server's policy no longer allows.
var ErrPolicyChanged = errors.New("quicmux: destination no longer allowed by the server's policy")

// Connection close codes beyond connShutdown.
const (
	// connRevoked closes the connection of a client no longer authorized.
	connRevoked quic.ApplicationErrorCode = 0x1
	// connTooMany closes a connection beyond the client's MaxConnsPerClient.
	connTooMany quic.ApplicationErrorCode = 0x2
)

// DefaultMaxConnsPerClient is ServerConfig.MaxConnsPerClient's default: a client keeps one
// connection, and a few more cover a restarted client whose old connection the server has
// not yet timed out, or one identity shared by a handful of hosts.
const DefaultMaxConnsPerClient = 8

// Recheck applies the current Authorized and Policy to what is open, after a reload changed
// them: the connections of clients no longer authorized are closed (their flows reset), and
// flows whose destination the policy no longer allows are reset, and reverse forwards'
// listeners that ListenPolicy no longer allows are closed (their flows go on). Everything
// else is left alone. It returns how many connections, flows and listeners it ended.
func (s *Server) Recheck() (conns, flows, listeners int) {
	s.liveMu.Lock()
	revoked := map[*quic.Conn]Fingerprint{}
	for qc, fp := range s.liveConns {
		if !s.cfg.Authorized(fp) {
			revoked[qc] = fp
		}
	}
	var denied []func(error)
	for f := range s.liveFlows {
		if f.abort != nil && !s.stillAllowed(f) {
			denied = append(denied, f.abort)
			s.log.WithFields(logrus.Fields{"target": f.target.String(), "addr": f.at.addr.String()}).Info("resetting a flow the new rules deny")
		}
	}
	var lns []*liveListener
	for l := range s.liveLns {
		if _, gone := revoked[l.cl.qc]; !gone && !s.listenAllowed(l.cl.fp, l.addr) {
			lns = append(lns, l)
		}
	}
	s.liveMu.Unlock()
	for qc, fp := range revoked {
		s.revoke(qc, fp)
	}
	for _, abort := range denied {
		abort(ErrPolicyChanged)
	}
	for _, l := range lns {
		l.cl.log.WithField("listen", l.addr.String()).Info("closing a reverse forward's listener the new rules deny")
		l.stop(ErrPolicyChanged)
	}
	return len(revoked), len(denied), len(lns)
}

// linger gives the last frames of flows that ended cleanly (a FIN, the final bytes) a few
// round trips to be delivered before a connection is closed: closing a QUIC connection drops
// whatever it has not sent, and the far end would see a reset where the flow had ended well.
func linger(qc *quic.Conn) {
	if qc.Context().Err() != nil {
		return
	}
	d := min(max(3*qc.ConnectionStats().SmoothedRTT+10*time.Millisecond, 20*time.Millisecond), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-qc.Context().Done():
	}
}

// reject answers a request with a non-ok status and ends the stream: FIN after the status,
// STOP_SENDING for whatever payload the client already sent.
func (s *Server) reject(str *quic.Stream, st Status, code quic.StreamErrorCode) {
	_ = s.answer(str, AppendStatus(nil, st), code)
}

// answer writes a request's whole answer b (its status and what follows it) within
// HeaderTimeout and ends the stream: FIN after b, STOP_SENDING with code for whatever the
// client sent. It returns the write's error.
func (s *Server) answer(str *quic.Stream, b []byte, code quic.StreamErrorCode) error {
	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	_, err := str.Write(b)
	_ = str.Close()
	str.CancelRead(code)
	return err
}

// dialedAddr is the address a flow's destination was dialed at, and whether its name came
// from the hosts file: what Recheck judges an open flow by.
type dialedAddr struct {
	addr      netip.Addr
	fromHosts bool
}

// statusOf maps a dial error to the status the client sees.
func statusOf(err error) Status {
	var se *StatusError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &se):
		return se.Status
	case errors.Is(err, syscall.ECONNREFUSED):
		return StatusRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT):
		return StatusTimedOut
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return StatusTimedOut
	}
	return StatusUnreachable
}
