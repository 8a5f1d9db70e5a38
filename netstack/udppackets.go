package netstack

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/quicgate/quicgate/flow"
)

// Packets is the flow's app side as a flow.PacketConn, for the packet relay: the app's
// packets are read as soon as the endpoint says it has some (a gVisor waiter entry), in
// batches, with no goroutine and no buffer while none come; the flow's packets are written
// to the app without waiting. Closing it with an error matching syscall.ECONNREFUSED
// refuses the flow (ICMP port unreachable to the app), any other reason closes it. It
// ends by itself, nil, when the stack closes. Use either Packets or the conn's own Read and
// Write, not both.
func (c *UDPConn) Packets() flow.PacketConn { return &udpPackets{c: c} }

type udpPackets struct {
	c     *UDPConn
	entry waiter.Entry

	draining atomic.Bool // a drain runs: a wake-up only makes it look again
	again    atomic.Bool // readiness came during a drain

	mu      sync.Mutex
	out     func([][]byte)
	ended   func(error)
	closed  bool
	started bool
	stopCtx func() bool
}

// udpBatchArena holds one batch of the app's packets; a batch is read while there is room
// for the largest UDP payload.
const udpBatchArena = 4 * flow.MaxUDPPacket

var udpArenas = sync.Pool{New: func() any { b := make([]byte, 0, udpBatchArena); return &b }}

// Start takes the app's packets from now on.
func (p *udpPackets) Start(out func([][]byte), ended func(error)) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.out, p.ended, p.started = out, ended, true
	p.entry.Init(p, readableMask)
	p.c.wq.EventRegister(&p.entry)
	p.stopCtx = context.AfterFunc(p.c.ctx, func() { p.finish(nil) })
	p.mu.Unlock()
	p.kick() // the flow's first packet waits already
}

// NotifyEvent implements waiter.EventListener: gVisor calls it with its locks held, so it
// only starts a drain.
func (p *udpPackets) NotifyEvent(waiter.EventMask) { p.kick() }

// kick starts a drain, or tells the running one to look again.
func (p *udpPackets) kick() {
	p.again.Store(true)
	if !p.draining.Swap(true) {
		go p.drain()
	}
}

// drain reads what the endpoint holds, batch by batch, and hands it to the relay.
func (p *udpPackets) drain() {
	for {
		p.again.Store(false)
		for p.readBatch() {
		}
		p.draining.Store(false)
		// A wake-up during the drain's last look is looked at again here, by this drain
		// or by one it started.
		if !p.again.Load() || p.draining.Swap(true) {
			return
		}
	}
}

// arenaWriter appends what gVisor reads to a batch's arena.
type arenaWriter struct{ b *[]byte }

func (w arenaWriter) Write(q []byte) (int, error) {
	*w.b = append(*w.b, q...)
	return len(q), nil
}

// readBatch reads and delivers one batch; false when the endpoint had no more.
func (p *udpPackets) readBatch() bool {
	ap := udpArenas.Get().(*[]byte)
	defer func() { *ap = (*ap)[:0]; udpArenas.Put(ap) }()
	var ps [][]byte
	more := true
	for cap(*ap)-len(*ap) >= flow.MaxUDPPacket {
		start := len(*ap)
		_, terr := p.c.ep.Read(arenaWriter{ap}, tcpip.ReadOptions{})
		if terr != nil {
			more = false
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				p.finish(nil) // the endpoint is closed
			}
			break
		}
		ps = append(ps, (*ap)[start:len(*ap):len(*ap)])
	}
	if len(ps) > 0 {
		p.mu.Lock()
		out := p.out
		if p.closed {
			out = nil
		}
		p.mu.Unlock()
		if out != nil {
			out(ps)
		}
	}
	return more
}

// finish ends the app's side by itself (the stack closed): once, unless Close came first.
func (p *udpPackets) finish(err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	ended := p.ended
	p.mu.Unlock()
	if ended != nil {
		ended(err)
	}
}

// WritePackets sends the flow's packets to the app.
func (p *udpPackets) WritePackets(ps [][]byte) error {
	var r bytes.Reader
	for _, q := range ps {
		r.Reset(q)
		_, _ = p.c.ep.Write(&r, tcpip.WriteOptions{}) // a packet the stack cannot take is lost
	}
	return nil
}

// Close ends the flow: refused (ICMP port unreachable to the app) for a destination whose
// port is unreachable or a target the server denied, closed otherwise.
func (p *udpPackets) Close(why error) {
	p.mu.Lock()
	p.closed = true
	started, stop := p.started, p.stopCtx
	p.started = false
	p.mu.Unlock()
	if started {
		stop()
		p.c.wq.EventUnregister(&p.entry)
	}
	if errors.Is(why, syscall.ECONNREFUSED) {
		p.c.Refuse()
		return
	}
	_ = p.c.Close()
}
