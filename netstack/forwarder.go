package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Handler receives every TCP flow the stack terminates, with its original destination.
type Handler interface {
	// HandleTCP is called in its own goroutine for each new inbound connection attempt
	// (a SYN that no ListenTCP listener takes), before the handshake completes: the
	// handler dials the real destination first and then calls exactly one of
	// req.Accept (SYN-ACK) or req.Reject (RST), as Tailscale's netstack does.
	//
	// req.Context is cancelled when the stack closes; HandleTCP must return soon after.
	// Stack.Close waits for every HandleTCP to return. A handler may keep running
	// after its decision (relaying the accepted conn, say). If HandleTCP returns
	// without deciding, the request is rejected.
	HandleTCP(req *TCPRequest)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(req *TCPRequest)

// HandleTCP calls f(req).
func (f HandlerFunc) HandleTCP(req *TCPRequest) { f(req) }

// ErrDecided is returned by Accept on a request already accepted or rejected.
var ErrDecided = errors.New("netstack: TCP request already accepted or rejected")

// TCPRequest is one inbound connection attempt waiting for its Handler's decision.
type TCPRequest struct {
	ctx context.Context
	src netip.AddrPort
	dst netip.AddrPort

	fwd *forwarder

	mu  sync.Mutex
	req *tcp.ForwarderRequest // nil once decided
}

// Context is cancelled when the stack closes.
func (r *TCPRequest) Context() context.Context { return r.ctx }

// Src is the address and port of the connecting client.
func (r *TCPRequest) Src() netip.AddrPort { return r.src }

// Dst is the flow's original destination.
func (r *TCPRequest) Dst() netip.AddrPort { return r.dst }

// String describes the request for logs.
func (r *TCPRequest) String() string { return r.src.String() + "->" + r.dst.String() }

// take returns the pending gVisor request and marks r decided, or nil if it was already.
func (r *TCPRequest) take() *tcp.ForwarderRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := r.req
	r.req = nil
	return fr
}

// Accept completes the handshake (sends the SYN-ACK and waits for the client's ACK) and
// returns the connection, which can half-close and abort. If the handshake fails the client
// gets a RST.
func (r *TCPRequest) Accept() (*TCPConn, error) {
	fr := r.take()
	if fr == nil {
		return nil, ErrDecided
	}
	if !r.fwd.beginAccept() {
		fr.Complete(true)
		return nil, fmt.Errorf("netstack: accept %s: %w", r, net.ErrClosed)
	}
	var wq waiter.Queue
	ep, err := fr.CreateEndpoint(&wq)
	r.fwd.endAccept()
	if err != nil {
		fr.Complete(true)
		return nil, fmt.Errorf("netstack: accept %s: %s", r, err)
	}
	fr.Complete(false)
	r.fwd.accepted.Add(1)
	r.fwd.keepAlive(ep)
	return newTCPConn(gonet.NewTCPConn(&wq, ep), &wq, ep), nil
}

// Reject answers the SYN with a RST: the client sees "connection refused" at once.
// Rejecting a decided request does nothing.
func (r *TCPRequest) Reject() {
	if fr := r.take(); fr != nil {
		r.fwd.rejected.Add(1)
		fr.Complete(true)
	}
}

// keepAlive sets the keepalive of an accepted endpoint: keepalives reap flows whose client
// vanished without a FIN or RST.
func (f *forwarder) keepAlive(ep tcpip.Endpoint) {
	ka := f.keepalive
	if !ka.Enable {
		return
	}
	if ka.Idle > 0 {
		opt := tcpip.KeepaliveIdleOption(ka.Idle)
		_ = ep.SetSockOpt(&opt)
	}
	if ka.Interval > 0 {
		opt := tcpip.KeepaliveIntervalOption(ka.Interval)
		_ = ep.SetSockOpt(&opt)
	}
	if ka.Count > 0 {
		_ = ep.SetSockOptInt(tcpip.KeepaliveCountOption, ka.Count)
	}
	ep.SocketOptions().SetKeepAlive(true)
	// Keepalive probes only go out while nothing is unacknowledged; with bytes in flight
	// to a vanished app the stack would retransmit for minutes instead. The user timeout
	// bounds both by the same time (as TCP_USER_TIMEOUT does for a kernel socket).
	if ka.Idle > 0 && ka.Interval > 0 && ka.Count > 0 {
		opt := tcpip.TCPUserTimeoutOption(ka.Idle + time.Duration(ka.Count)*ka.Interval)
		_ = ep.SetSockOpt(&opt)
	}
}

// forwarder turns gVisor's SYNs into Handler calls and tracks the handler goroutines.
type forwarder struct {
	ctx     context.Context
	handler Handler

	perSource int                 // max undecided requests per client address; 0 = no limit
	keepalive net.KeepAliveConfig // for accepted endpoints

	accepted, rejected, perSourceDrops atomic.Uint64

	mu        sync.Mutex
	sources   map[netip.Addr]int // undecided requests per client address, if perSource > 0
	closed    bool               // set by close; no HandleTCP or Accept starts after it
	accepting int                // Accept calls in their handshake
	wg        sync.WaitGroup     // running HandleTCP calls
}

// install sets f as the stack's TCP handler for SYNs no listener takes.
//
// maxInFlight bounds the requests not yet decided. Beyond it gVisor's forwarder DROPS
// new SYNs (counted in Stats().TCP.ForwardMaxInFlightDrop) instead of resetting them: a
// dropped SYN is retransmitted by the client after its SYN timeout, so a burst is
// absorbed as delay, where a RST would fail the connection at once.
func (f *forwarder) install(s *stack.Stack, rcvWnd, maxInFlight int) {
	fwd := tcp.NewForwarder(s, rcvWnd, maxInFlight, f.handle)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
}

// handle runs in the goroutine gVisor's forwarder starts for each SYN.
func (f *forwarder) handle(fr *tcp.ForwarderRequest) {
	id := fr.ID()
	// Local is the flow's destination as the client addressed it (promiscuous mode), remote
	// is the client.
	dstIP, _ := netip.AddrFromSlice(id.LocalAddress.AsSlice())
	srcIP, _ := netip.AddrFromSlice(id.RemoteAddress.AsSlice())

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		fr.Complete(true)
		return
	}
	if f.perSource > 0 {
		if f.sources[srcIP] >= f.perSource {
			f.mu.Unlock()
			// Drop, like the global bound: Complete(false) without an endpoint sends
			// nothing, and the client retransmits its SYN later.
			f.perSourceDrops.Add(1)
			fr.Complete(false)
			return
		}
		f.sources[srcIP]++
		defer f.releaseSource(srcIP)
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()

	req := &TCPRequest{
		ctx: f.ctx,
		src: netip.AddrPortFrom(srcIP, id.RemotePort),
		dst: netip.AddrPortFrom(dstIP, id.LocalPort),
		fwd: f,
		req: fr,
	}
	defer req.Reject() // a handler that returns undecided (or panics) rejects
	f.handler.HandleTCP(req)
}

func (f *forwarder) releaseSource(a netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sources[a]--; f.sources[a] <= 0 {
		delete(f.sources, a)
	}
}

// beginAccept reports whether an Accept may start its handshake, and counts it.
func (f *forwarder) beginAccept() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.accepting++
	return true
}

func (f *forwarder) endAccept() {
	f.mu.Lock()
	f.accepting--
	f.mu.Unlock()
}

// close keeps new HandleTCP and Accept calls from starting.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

// drainAccepts waits for the handshakes in progress to end, calling abort between
// checks: a handshake that registered its endpoint after the stack's Close took its
// snapshot of endpoints would otherwise wait out the SYN-ACK retransmissions (about
// two minutes).
func (f *forwarder) drainAccepts(abort func()) {
	for {
		f.mu.Lock()
		n := f.accepting
		f.mu.Unlock()
		if n == 0 {
			return
		}
		abort()
		time.Sleep(time.Millisecond)
	}
}

// wait waits for the running HandleTCP calls to return.
func (f *forwarder) wait() { f.wg.Wait() }
