package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DefaultMaxUDPFlows bounds the UDP flows (5-tuples) a stack holds at once when
// Config.MaxUDPFlows is 0.
const DefaultMaxUDPFlows = 4096

// udpReceiveBuffer is the receive buffer of a forwarded flow's endpoint: what the app's
// packets may fill while the handler sets up the far side or falls behind (a burst of a
// millisecond at 1 Gbit/s is over 100 packets of 1200 bytes, each counted with its
// overhead). gVisor's default (32 KiB) would drop the second packet of a burst of large
// ones. It is a bound, not an allocation: with every flow full, DefaultMaxUDPFlows of
// them could hold 4 GiB, which only a local app that floods thousands of flows at once
// toward a tunnel that cannot carry them comes near.
const udpReceiveBuffer = 1 << 20

// UDPHandler receives every UDP flow the stack terminates: one per 5-tuple (app address and
// port, original destination and port) that has no flow yet.
type UDPHandler interface {
	// HandleUDP is called in its own goroutine for each new 5-tuple. conn is connected
	// already and holds the flow's first packet: what the app sends while the handler sets
	// up the far side waits in conn's receive buffer (1 MiB; more is dropped, as a full
	// socket buffer drops it). Packets written to conn reach the app
	// with the original destination as their source.
	//
	// The handler owns conn: it ends the flow with conn.Close, or with conn.Refuse to tell
	// the app that nothing listens there (ICMP port unreachable). Until then the 5-tuple
	// counts against Config.MaxUDPFlows. conn's reads fail once the stack closes, and
	// conn.Context ends; Stack.Close waits for every HandleUDP to return.
	HandleUDP(conn *UDPConn)
}

// UDPHandlerFunc adapts a function to UDPHandler.
type UDPHandlerFunc func(conn *UDPConn)

// HandleUDP calls f(conn).
func (f UDPHandlerFunc) HandleUDP(conn *UDPConn) { f(conn) }

// UDPConn is one UDP flow the stack terminated, with a connected UDP socket's semantics:
// each Read returns one packet from the app (cut to the buffer's size), each Write sends
// one packet to it. LocalAddr is the flow's original destination, RemoteAddr the app.
type UDPConn struct {
	*gonet.UDPConn
	ctx context.Context
	src netip.AddrPort // the app
	dst netip.AddrPort // the original destination
	ep  tcpip.Endpoint

	// release gives the flow's slot back (forwarded conns); icmp sends a packet to the
	// app through the link. Both nil for DialUDP's conns.
	release func()
	icmp    func(*stack.PacketBuffer)
	once    sync.Once

	wq    *waiter.Queue
	waker *waiter.Entry // DialUDP's conns: wakes a blocked Read on an ICMP error
}

// errWaker turns an endpoint's error event into a readable one: gonet's Read waits only
// for ReadableEvents, and gVisor reports an ICMP error with EventErr alone, so a Read that
// is already blocked would not see ECONNREFUSED until its deadline. gVisor calls
// NotifyEvent with the queue locked, so the readable event is sent from a goroutine (once
// per ICMP error, which is rare).
type errWaker struct{ wq *waiter.Queue }

func (w errWaker) NotifyEvent(waiter.EventMask) { go w.wq.Notify(waiter.ReadableEvents) }

var _ net.Conn = (*UDPConn)(nil)

// Context ends when the stack closes.
func (c *UDPConn) Context() context.Context { return c.ctx }

// Src is the app's address and port.
func (c *UDPConn) Src() netip.AddrPort { return c.src }

// Dst is the flow's original destination.
func (c *UDPConn) Dst() netip.AddrPort { return c.dst }

// String describes the flow for logs.
func (c *UDPConn) String() string { return "udp " + c.src.String() + "->" + c.dst.String() }

// Read returns the next packet from the app. After the stack closed, or after Close, it
// returns an error matching net.ErrClosed; a conn from DialUDP whose peer answered ICMP
// port unreachable returns an error matching syscall.ECONNREFUSED.
func (c *UDPConn) Read(p []byte) (int, error) {
	n, err := c.UDPConn.Read(p)
	return n, c.mapErr("read", err)
}

// ReadFrom is Read that also returns the source: always RemoteAddr.
func (c *UDPConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.UDPConn.ReadFrom(p)
	return n, from, c.mapErr("read", err)
}

// Write sends p to the app as one packet.
func (c *UDPConn) Write(p []byte) (int, error) {
	n, err := c.UDPConn.Write(p)
	return n, c.mapErr("write", err)
}

// Close ends the flow and releases its endpoint. It is idempotent.
func (c *UDPConn) Close() error {
	c.end(false)
	return nil
}

// Refuse ends the flow as a closed port would: it closes the endpoint and sends the app
// an ICMP port unreachable (ICMPv6 for IPv6) about its 5-tuple, so that a connected
// socket's next call fails with ECONNREFUSED (Linux; other systems may ignore it). Use it
// when the far side reports port unreachable or the target is not allowed. On a conn
// from DialUDP, and after Close, it is Close.
func (c *UDPConn) Refuse() {
	c.end(true)
}

func (c *UDPConn) end(refuse bool) {
	c.once.Do(func() {
		if c.waker != nil {
			c.wq.EventUnregister(c.waker)
		}
		_ = c.UDPConn.Close()
		if refuse && c.icmp != nil {
			if pkt := portUnreachable(c.src, c.dst); pkt != nil {
				c.icmp(pkt)
			}
		}
		if c.release != nil {
			c.release()
		}
	})
}

// udpClosedTexts are how gonet words the endpoint errors of a closed endpoint.
var udpClosedTexts = map[string]bool{
	(&tcpip.ErrClosedForReceive{}).String():     true,
	(&tcpip.ErrClosedForSend{}).String():        true,
	(&tcpip.ErrInvalidEndpointState{}).String(): true,
}

var refusedText = (&tcpip.ErrConnectionRefused{}).String()

// mapErr gives gonet's string errors their meaning: net.ErrClosed once closed,
// syscall.ECONNREFUSED after an ICMP port unreachable.
func (c *UDPConn) mapErr(op string, err error) error {
	if err == io.EOF { // gonet's word for a closed endpoint
		return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
	}
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || oe.Timeout() {
		return err
	}
	var inner error
	switch text := oe.Err.Error(); {
	case udpClosedTexts[text]:
		inner = net.ErrClosed
	case text == refusedText:
		inner = os.NewSyscallError(op, syscall.ECONNREFUSED)
	default:
		return err
	}
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: inner}
}

// DialUDP opens a connected UDP socket from the stack to addr (a virtual stack's
// applications, tests). Its Read fails with an error matching syscall.ECONNREFUSED once
// the peer answered ICMP port unreachable.
func (s *Stack) DialUDP(addr netip.AddrPort) (*UDPConn, error) {
	fa, proto := fullAddr(addr)
	var wq waiter.Queue
	ep, terr := s.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: translate(terr)}
	}
	if terr := ep.Connect(fa); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "dial", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: translate(terr)}
	}
	c := &UDPConn{UDPConn: gonet.NewUDPConn(&wq, ep), ctx: s.ctx, dst: addr, ep: ep, wq: &wq}
	c.waker = &waiter.Entry{}
	c.waker.Init(errWaker{&wq}, waiter.EventErr)
	wq.EventRegister(c.waker)
	if la, err := ep.GetLocalAddress(); err == nil {
		ip, _ := netip.AddrFromSlice(la.Addr.AsSlice())
		c.src = netip.AddrPortFrom(ip, la.Port)
	}
	return c, nil
}

// udpForwarder turns gVisor's unclaimed UDP packets into UDP flows for a UDPHandler.
type udpForwarder struct {
	ctx     context.Context
	handler UDPHandler
	link    *link
	max     int

	drops atomic.Uint64 // packets of new 5-tuples dropped at the bound

	mu     sync.Mutex
	open   int // flows whose conn is not closed
	closed bool
	wg     sync.WaitGroup // running HandleUDP calls
}

// install sets f as the stack's handler of UDP packets no endpoint takes.
func (f *udpForwarder) install(s *stack.Stack) {
	fwd := udp.NewForwarder(s, f.handle)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, fwd.HandlePacket)
}

// handle runs on the goroutine that injected the packet (the link's read loop), so it must
// not block: it creates the flow's endpoint at once (later packets of the 5-tuple go to it,
// not here) and hands the conn to the handler in a goroutine.
//
// At the bound the packet is dropped, not refused: the app may retry once a flow ends,
// where an ICMP error would fail it.
func (f *udpForwarder) handle(fr *udp.ForwarderRequest) bool {
	f.mu.Lock()
	if f.closed || f.open >= f.max {
		closed := f.closed
		f.mu.Unlock()
		if !closed {
			f.drops.Add(1)
		}
		return true
	}
	f.open++
	f.wg.Add(1)
	f.mu.Unlock()

	id := fr.ID()
	var wq waiter.Queue
	ep, err := fr.CreateEndpoint(&wq)
	if err != nil {
		// Another packet of the 5-tuple raced this one to the endpoint (gVisor found no
		// endpoint for either): drop it.
		f.release()
		f.wg.Done()
		return true
	}
	ep.SocketOptions().SetReceiveBufferSize(udpReceiveBuffer, true)
	dstIP, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	srcIP, _ := netip.AddrFromSlice(id.RemoteAddress.AsSlice())
	c := &UDPConn{
		UDPConn: gonet.NewUDPConn(&wq, ep),
		ctx:     f.ctx,
		src:     netip.AddrPortFrom(srcIP, id.RemotePort),
		dst:     netip.AddrPortFrom(dstIP, id.LocalPort),
		ep:      ep,
		wq:      &wq,
		release: f.release,
		icmp:    f.link.sendOut,
	}
	go func() {
		defer f.wg.Done()
		f.handler.HandleUDP(c)
	}()
	return true
}

func (f *udpForwarder) release() {
	f.mu.Lock()
	f.open--
	f.mu.Unlock()
}

// openFlows is the number of flows whose conn is not closed.
func (f *udpForwarder) openFlows() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open
}

// close keeps new flows from starting.
func (f *udpForwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

// wait waits for the running HandleUDP calls to return.
func (f *udpForwarder) wait() { f.wg.Wait() }

// sendOut queues pkt, a whole IP packet, for the device, as if gVisor had sent it, and
// releases the caller's reference.
func (l *link) sendOut(pkt *stack.PacketBuffer) {
	var pkts stack.PacketBufferList
	pkts.PushBack(pkt)
	_, _ = l.ep.WritePackets(pkts) // the queue takes its own reference; full, it drops
	pkt.DecRef()
}

// quotedUDPLen is the length the quoted UDP header of a port unreachable claims: a header
// and no payload (receivers match the quote by addresses and ports only).
const quotedUDPLen = header.UDPMinimumSize

// portUnreachable builds the ICMP (or ICMPv6) port unreachable that the host dst sends to
// src about a UDP packet of src's: outer header from dst to src, then the quoted IP and UDP
// headers of that packet, as RFC 792 and RFC 4443 ask. nil if the addresses do not match.
func portUnreachable(src, dst netip.AddrPort) *stack.PacketBuffer {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	var b []byte
	switch {
	case sa.Is4() && da.Is4():
		b = portUnreachable4(src, dst)
	case sa.Is6() && da.Is6():
		b = portUnreachable6(src, dst)
	default:
		return nil
	}
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
}

// quotedUDP writes the UDP header of a packet from src to dst into b (8 bytes). The
// checksum is left zero: "no checksum" for IPv4, and nobody verifies a quote.
func quotedUDP(b []byte, src, dst netip.AddrPort) {
	header.UDP(b).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: quotedUDPLen})
}

func portUnreachable4(src, dst netip.AddrPort) []byte {
	const quoteLen = header.IPv4MinimumSize + header.UDPMinimumSize
	total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + quoteLen
	b := make([]byte, total)
	from := tcpip.AddrFrom4(dst.Addr().Unmap().As4())
	to := tcpip.AddrFrom4(src.Addr().Unmap().As4())

	// The quote: the app's packet as it left the app.
	q := b[header.IPv4MinimumSize+header.ICMPv4MinimumSize:]
	qip := header.IPv4(q)
	qip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + quotedUDPLen),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     to,
		DstAddr:     from,
	})
	qip.SetChecksum(^qip.CalculateChecksum())
	quotedUDP(q[header.IPv4MinimumSize:], src, dst)

	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4DstUnreachable)
	icmp.SetCode(header.ICMPv4PortUnreachable)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))

	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     from,
		DstAddr:     to,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

func portUnreachable6(src, dst netip.AddrPort) []byte {
	const quoteLen = header.IPv6MinimumSize + header.UDPMinimumSize
	payload := header.ICMPv6DstUnreachableMinimumSize + quoteLen
	b := make([]byte, header.IPv6MinimumSize+payload)
	from := tcpip.AddrFrom16(dst.Addr().As16())
	to := tcpip.AddrFrom16(src.Addr().As16())

	q := b[header.IPv6MinimumSize+header.ICMPv6DstUnreachableMinimumSize:]
	header.IPv6(q).Encode(&header.IPv6Fields{
		PayloadLength:     quotedUDPLen,
		TransportProtocol: header.UDPProtocolNumber,
		HopLimit:          64,
		SrcAddr:           to,
		DstAddr:           from,
	})
	quotedUDP(q[header.IPv6MinimumSize:], src, dst)

	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6DstUnreachable)
	icmp.SetCode(header.ICMPv6PortUnreachable)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: from, Dst: to}))

	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(payload),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           from,
		DstAddr:           to,
	})
	return b
}
