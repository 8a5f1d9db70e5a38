package flow

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// MaxUDPPacket is the largest packet a UDP flow carries: the most a UDP datagram holds over
// IPv6 (65,535 less the UDP header; IPv4's is 65,507, and a server's socket refuses more
// toward an IPv4 target, dropping it). Buffers of this size never cut a packet short.
const MaxUDPPacket = 65527

// PacketConn is one end of a UDP flow as the packet relay sees it: a source's address behind
// a -U port, a netstack UDP endpoint behind the TUN, a SOCKS5 association's target, the
// connected socket the server dialed, or the tunnel between them. Packets are whole UDP
// payloads: they may be lost or reordered, as UDP's may, never cut or joined.
//
// An end moves packets as they come, on whatever goroutine has them (a socket's reader, the
// QUIC connection's loop): an idle end holds no goroutine and no buffer. The relay
// (RelayPackets) uses these three methods and nothing else, for every way in.
type PacketConn interface {
	// Start has the end hand every batch of packets it receives to out, from now until it
	// ends, and call ended once when it ends by itself: nil when its app or peer ended it in
	// order, ErrIdle after an idle timeout, an error matching syscall.ECONNREFUSED when the
	// destination's port is unreachable (ICMP), one matching IsReset when the far side reset
	// the flow, another error when it failed. out may be called from more than one
	// goroutine at once (the tunnel's end hands over datagrams from the connection's loop
	// and packets too large for one from its stream), never after ended; the packets are
	// the end's, valid only during the call. out must not block, except on the tunnel's
	// end (below). Start is called once; after Close it does
	// nothing.
	Start(out func(ps [][]byte), ended func(err error))

	// WritePackets sends ps toward the end's peer; it is safe from several goroutines. A packet the end cannot take now (a full
	// socket buffer, a full queue) is dropped, as a router drops it, and that is no error;
	// an error means the end has failed, and the relay then ends the flow. An end on a
	// local socket never waits; the tunnel's end may wait while the connection's datagram
	// queue is full, which pushes back on the source's own socket buffer rather than spend
	// CPU on packets the tunnel cannot carry.
	WritePackets(ps [][]byte) error

	// Close ends the end and releases it, telling its peer why where it can: nil, net.ErrClosed
	// or a context's error is an orderly end; an error matching syscall.ECONNREFUSED becomes
	// ICMP port unreachable for the app (or the stream code that says so); ErrIdle and a
	// reset are passed on as such. After Close, out and ended are not called. It is
	// idempotent and safe from any goroutine.
	Close(why error)
}

// PacketStats counts what a packet relay moved each way.
type PacketStats struct {
	AtoB, BtoA               int64 // bytes
	PacketsAtoB, PacketsBtoA int64
}

// PacketRelayOptions tunes a packet relay. The zero value relays until an end ends.
type PacketRelayOptions struct {
	// IdleTimeout ends the flow with ErrIdle when no packet moved either way for this
	// long; zero means never.
	IdleTimeout time.Duration
}

// RelayPackets joins a and b: each one's packets go to the other until either ends, ctx
// ends, the flow is idle for opt.IdleTimeout, or stop is called. Then both ends are closed
// with the reason (so each tells its peer: an ICMP port unreachable on one side becomes one
// on the other), and done is called once with the stats and the reason: nil for an orderly
// end, ErrIdle, the error an end ended with, ctx's cause, or stop's error. It holds no
// goroutine: the ends' own deliveries move the packets, and a timer (not a goroutine)
// watches for idleness.
func RelayPackets(ctx context.Context, a, b PacketConn, opt PacketRelayOptions, done func(PacketStats, error)) (stop func(error)) {
	r := &packetRelay{a: a, b: b, done: done}
	r.mu.Lock() // nothing ends the flow before its timer and ctx's watch are set
	if opt.IdleTimeout > 0 {
		r.idle = newIdleTimer(opt.IdleTimeout, func() { r.end(ErrIdle) })
	}
	r.stopCtx = context.AfterFunc(ctx, func() { r.end(context.Cause(ctx)) })
	r.mu.Unlock()
	// An end that ends before the other has started closes it first: its Start then does
	// nothing.
	a.Start(func(ps [][]byte) { r.move(ps, b, &r.stats.AtoB, &r.stats.PacketsAtoB) }, r.end)
	b.Start(func(ps [][]byte) { r.move(ps, a, &r.stats.BtoA, &r.stats.PacketsBtoA) }, r.end)
	return r.end
}

type packetRelay struct {
	a, b    PacketConn
	done    func(PacketStats, error)
	stopCtx func() bool
	idle    *idleTimer // nil: no idle timeout

	stats struct{ AtoB, PacketsAtoB, BtoA, PacketsBtoA atomic.Int64 }

	mu    sync.Mutex
	ended bool
}

// move hands a batch from one end to the other.
func (r *packetRelay) move(ps [][]byte, to PacketConn, bytes, packets *atomic.Int64) {
	if r.idle != nil {
		r.idle.touch()
	}
	var n int64
	for _, p := range ps {
		n += int64(len(p))
	}
	bytes.Add(n)
	packets.Add(int64(len(ps)))
	if err := to.WritePackets(ps); err != nil {
		r.end(err)
	}
}

// end finishes the flow once, with why.
func (r *packetRelay) end(why error) {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return
	}
	r.ended = true
	r.mu.Unlock()
	r.stopCtx()
	if r.idle != nil {
		r.idle.stop()
	}
	r.a.Close(why)
	r.b.Close(why)
	r.done(PacketStats{
		AtoB: r.stats.AtoB.Load(), PacketsAtoB: r.stats.PacketsAtoB.Load(),
		BtoA: r.stats.BtoA.Load(), PacketsBtoA: r.stats.PacketsBtoA.Load(),
	}, why)
}
