package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/quicgate/quicgate/internal/logging"
	"github.com/sirupsen/logrus"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Config configures a Stack.
type Config struct {
	// MTU is the link MTU, up to MaxMTU. 0 means the device's MTU for NewTUN and
	// DefaultVirtualMTU for NewVirtual. Below 1280 gVisor disables IPv6.
	MTU int

	// Handler receives the TCP flows no ListenTCP listener takes. nil means such SYNs
	// are answered with a RST (a stack used only through DialTCP/ListenTCP). NewVirtual
	// refuses a Handler: nothing can reach it.
	Handler Handler

	// UDPHandler receives the UDP flows: each 5-tuple no endpoint of the stack (DialUDP)
	// takes. nil means such packets are answered with ICMP port unreachable, as a host
	// without the port answers. NewVirtual refuses a UDPHandler.
	UDPHandler UDPHandler

	// MaxUDPFlows bounds the UDP flows open at once (the conns HandleUDP got and did not
	// close); 0 means DefaultMaxUDPFlows. Beyond it the packets of new 5-tuples are dropped
	// (counted in Stats.DroppedUDP) until a flow ends.
	MaxUDPFlows int

	// EchoHandler answers the ICMP and ICMPv6 echo requests for destinations other than
	// Addrs (NewTUN only): see EchoHandler. nil leaves them to gVisor, which answers its own
	// addresses and drops the rest.
	EchoHandler EchoHandler

	// MaxEchoes bounds the echo requests handed to the EchoHandler and not yet answered;
	// 0 means DefaultMaxEchoes. Beyond it requests are dropped (Stats.DroppedEchoes): ping
	// sends the next one a second later.
	MaxEchoes int

	// Logger receives the few lines the stack logs (never one per packet). nil discards.
	Logger *logrus.Entry

	// MaxInFlight bounds the SYNs handed to the Handler and not yet decided; 0 means
	// DefaultMaxInFlight. Beyond it new SYNs are dropped, not reset: the client
	// retransmits its SYN, so a burst becomes delay rather than failed connections.
	MaxInFlight int

	// MaxInFlightPerSource bounds the undecided requests of one client address, so one
	// host cannot take all of MaxInFlight; beyond it its SYNs are dropped as well. 0
	// means no per-source bound.
	MaxInFlightPerSource int

	// Addrs are the stack's own addresses: the source of DialTCP and the addresses
	// ListenTCP may bind besides the unspecified one. Optional for NewTUN (the stack is
	// promiscuous: it answers every destination routed to the device).
	Addrs []netip.Prefix

	// QueueLen is the outbound packet queue length; 0 means DefaultQueueLen.
	QueueLen int

	// TCP overrides the TCP settings; nil means DefaultTCPOptions().
	TCP *TCPOptions
}

// nicID is the stack's only NIC.
const nicID tcpip.NICID = 1

// Stack owns a gVisor stack, its link endpoint and the goroutines moving packets.
type Stack struct {
	s      *stack.Stack
	link   *link
	dev    tun.Device    // nil for NewVirtual
	fwd    *forwarder    // nil without a Handler
	udp    *udpForwarder // nil without a UDPHandler
	echo   *echoer       // nil without an EchoHandler
	log    *logrus.Entry
	ctx    context.Context
	cancel context.CancelFunc
	pumps  sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// NewTUN binds a stack to dev, moving packets in batches of dev.BatchSize() both ways.
// The NIC is promiscuous and spoofing, for IPv4 and IPv6, so every destination routed to
// the device is answered and its TCP flows are terminated here: with cfg.Handler set,
// every SYN no ListenTCP listener takes goes to the Handler.
//
// The Stack takes ownership of dev: Close closes it (a blocking dev.Read only returns
// once the device is closed, and the read goroutine must end before Close returns). Do
// not close dev yourself. The stack also drains dev.Events().
func NewTUN(dev tun.Device, cfg Config) (*Stack, error) {
	if cfg.MTU == 0 {
		mtu, err := dev.MTU()
		if err != nil {
			return nil, fmt.Errorf("netstack: device MTU: %w", err)
		}
		cfg.MTU = mtu
	}
	return newStack(dev, cfg)
}

func newStack(dev tun.Device, cfg Config) (*Stack, error) {
	if cfg.MTU < header.IPv4MinimumMTU || cfg.MTU > MaxMTU {
		return nil, fmt.Errorf("netstack: MTU %d out of range [%d, %d]", cfg.MTU, header.IPv4MinimumMTU, MaxMTU)
	}
	log := logging.OrDiscard(cfg.Logger)
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	opts := DefaultTCPOptions()
	if cfg.TCP != nil {
		opts = *cfg.TCP
	}

	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
		// A virtual stack is both ends of its flows; a TUN stack is never the source of
		// a packet it receives.
		HandleLocal: dev == nil,
	})
	fail := func(err error) (*Stack, error) {
		s.Destroy()
		return nil, err
	}
	if err := opts.apply(s); err != nil {
		return fail(err)
	}
	l := newLink(dev, cfg.MTU, cfg.QueueLen, log)
	if err := s.CreateNIC(nicID, l.ep); err != nil {
		return fail(fmt.Errorf("netstack: create NIC: %s", err))
	}
	if dev != nil {
		// Promiscuous: accept packets for any destination address. Spoofing: answer
		// from that address. Together they terminate every routed flow.
		if err := s.SetPromiscuousMode(nicID, true); err != nil {
			return fail(fmt.Errorf("netstack: promiscuous mode: %s", err))
		}
		if err := s.SetSpoofing(nicID, true); err != nil {
			return fail(fmt.Errorf("netstack: spoofing: %s", err))
		}
	}
	var routes []tcpip.Route
	for _, p := range cfg.Addrs {
		proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().Unmap().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail(fmt.Errorf("netstack: add address %s: %s", p, err))
		}
		routes = append(routes, tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: nicID})
	}
	if dev != nil {
		// Every destination is behind the device (replies to any client included).
		routes = []tcpip.Route{
			{Destination: header.IPv4EmptySubnet, NIC: nicID},
			{Destination: header.IPv6EmptySubnet, NIC: nicID},
		}
	}
	s.SetRouteTable(routes)

	ctx, cancel := context.WithCancel(context.Background())
	st := &Stack{s: s, link: l, dev: dev, log: log, ctx: ctx, cancel: cancel}
	if cfg.Handler != nil {
		st.fwd = &forwarder{ctx: ctx, handler: cfg.Handler, perSource: cfg.MaxInFlightPerSource, keepalive: opts.KeepAlive, sources: map[netip.Addr]int{}}
		st.fwd.install(s, opts.rcvWnd(), cfg.MaxInFlight)
	}
	if cfg.UDPHandler != nil {
		if cfg.MaxUDPFlows <= 0 {
			cfg.MaxUDPFlows = DefaultMaxUDPFlows
		}
		st.udp = &udpForwarder{ctx: ctx, handler: cfg.UDPHandler, link: l, max: cfg.MaxUDPFlows}
		st.udp.install(s)
	}
	if cfg.EchoHandler != nil {
		if cfg.MaxEchoes <= 0 {
			cfg.MaxEchoes = DefaultMaxEchoes
		}
		own := map[netip.Addr]bool{}
		for _, p := range cfg.Addrs {
			own[p.Addr().Unmap()] = true
		}
		st.echo = &echoer{ctx: ctx, handler: cfg.EchoHandler, link: l, own: own, slots: make(chan struct{}, cfg.MaxEchoes)}
		l.echo = st.echo
	}
	st.pumps.Go(func() { l.writeLoop(ctx) })
	if dev != nil {
		st.pumps.Go(l.readLoop)
		st.pumps.Go(func() { l.drainEvents(ctx) })
	}
	log.WithFields(logrus.Fields{"mtu": cfg.MTU, "batch": l.batch, "virtual": dev == nil}).Debug("netstack: stack up")
	return st, nil
}

// GVisor returns the underlying gVisor stack, for stats and tests. Do not close it.
func (s *Stack) GVisor() *stack.Stack { return s.s }

// Stats are the stack's flow counters, for metrics.
type Stats struct {
	Accepted uint64 // requests accepted (handshake completed)
	Rejected uint64 // requests rejected with a RST, by the Handler or for it
	// DroppedInFlight counts SYNs dropped because MaxInFlight requests were undecided;
	// DroppedPerSource those dropped by MaxInFlightPerSource.
	DroppedInFlight  uint64
	DroppedPerSource uint64
	// WriteErrors counts failed device writes (each may lose a batch of packets).
	WriteErrors uint64
	// UDPFlows is the number of UDP flows open now; DroppedUDP counts the packets of new
	// 5-tuples dropped because MaxUDPFlows were open.
	UDPFlows   int
	DroppedUDP uint64
	// DroppedEchoes counts the echo requests dropped because MaxEchoes were unanswered.
	DroppedEchoes uint64
}

// Stats returns the current counters.
func (s *Stack) Stats() Stats {
	st := Stats{
		DroppedInFlight: s.s.Stats().TCP.ForwardMaxInFlightDrop.Value(),
		WriteErrors:     s.link.writeErrs.Load(),
	}
	if s.fwd != nil {
		st.Accepted = s.fwd.accepted.Load()
		st.Rejected = s.fwd.rejected.Load()
		st.DroppedPerSource = s.fwd.perSourceDrops.Load()
	}
	if s.udp != nil {
		st.UDPFlows = s.udp.openFlows()
		st.DroppedUDP = s.udp.drops.Load()
	}
	if s.echo != nil {
		st.DroppedEchoes = s.echo.drops.Load()
	}
	return st
}

// DialTCP opens a TCP connection from the stack to addr. A refused connection gives an
// error matching errors.Is(err, syscall.ECONNREFUSED). The conn is a *TCPConn: it can
// half-close and abort, and its errors match syscall.ECONNRESET on a reset.
func (s *Stack) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(addr)
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	var wq waiter.Queue
	ep, terr := s.s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, opErr(translate(terr))
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-s.ctx.Done():
			ep.Close()
			return nil, opErr(net.ErrClosed)
		}
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(translate(terr))
	}
	return newTCPConn(gonet.NewTCPConn(&wq, ep), &wq, ep), nil
}

// ListenTCP listens on addr, which must be one of Config.Addrs or unspecified (0.0.0.0
// or [::]). A listener takes its SYNs before the Handler sees them.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(addr)
	l, err := gonet.ListenTCP(s.s, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s: %w", addr, err)
	}
	return l, nil
}

// Close stops the stack; it is idempotent. In order: it cancels every TCPRequest's
// context, closes the device (NewTUN; this ends the blocking read), waits for the pump
// goroutines, closes all gVisor endpoints (open conns and listeners return errors) and
// the link, and waits for every Handler and UDPHandler call to return.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		if s.fwd != nil {
			s.fwd.close()
		}
		if s.udp != nil {
			s.udp.close()
		}
		if s.dev != nil {
			if err := s.dev.Close(); err != nil {
				s.closeErr = fmt.Errorf("netstack: close device: %w", err)
			}
		}
		s.pumps.Wait()
		if s.echo != nil {
			s.echo.wg.Wait() // no new ones: the read loop has ended
		}
		s.s.Close() // aborts every endpoint: open conns and listeners return errors
		if s.fwd != nil {
			s.fwd.drainAccepts(func() {
				for _, ep := range s.s.RegisteredEndpoints() {
					ep.Abort()
				}
			})
		}
		s.s.Wait() // waits for the endpoints, removes the NIC, closes the link endpoint
		if s.fwd != nil {
			s.fwd.wait()
		}
		if s.udp != nil {
			s.udp.wait()
		}
		s.log.Debug("netstack: stack closed")
	})
	return s.closeErr
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber)
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{Port: ap.Port()}
	if !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa, proto
}

// translate maps the gVisor errors a dial commonly meets to their errno, so callers can
// use errors.Is as with the kernel's sockets.
func translate(err tcpip.Error) error {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive, *tcpip.ErrInvalidEndpointState:
		return net.ErrClosed
	}
	return errors.New(err.String())
}
