package quicmux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// udpQueue is how many received packets a UDPFlow holds for Read; more are dropped, as a
// full socket buffer drops them.
const udpQueue = 256

// UDPFlow is a UDP flow through the tunnel, seen as a connected UDP socket: each Write sends
// one packet to the flow's target, each Read returns one packet from it (cut to the buffer's
// size, as a UDP socket does). Packets may be lost or reordered, as UDP's are. Once the flow
// has ended, Read returns the packets still queued and then why it ended: an error matching
// syscall.ECONNREFUSED when the server's socket got ICMP port unreachable, flow.ErrIdle after
// the server's idle timeout, net.ErrClosed after Close, or a reset (flow.IsReset) when the
// connection or the server ended it. Ingresses use OpenUDP's flow.PacketConn instead, which
// moves packets with no goroutine and no queue.
type UDPFlow struct {
	end    flow.PacketConn
	target flow.Target
	local  net.Addr

	in   chan []byte
	done chan struct{} // closed when the flow has ended
	once sync.Once
	err  error // why it ended; set before done is closed

	mu           sync.Mutex
	readDeadline time.Time
	deadlineSet  chan struct{} // closed and replaced when the read deadline changes
}

var _ net.Conn = (*UDPFlow)(nil)

// DialUDP opens a UDP flow to address (host:port; a name is resolved by the server) and
// returns once the server has allowed it and opened its socket. network must be "udp",
// "udp4" or "udp6".
func (c *Client) DialUDP(ctx context.Context, network, address string) (*UDPFlow, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	t, err := flow.ParseTarget(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	end, err := c.OpenUDP(ctx, t, "", "")
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: targetAddr{t}, Err: err}
	}
	return newUDPFlow(end, t), nil
}

// newUDPFlow gives the tunnel's end of a flow (OpenUDP's) a connected UDP socket's API.
func newUDPFlow(end flow.PacketConn, t flow.Target) *UDPFlow {
	f := &UDPFlow{end: end, target: t, local: end.(*clientUDP).t.conn.LocalAddr(),
		in: make(chan []byte, udpQueue), done: make(chan struct{}), deadlineSet: make(chan struct{})}
	end.Start(f.deliver, f.finish)
	return f
}

// OpenUDP opens a UDP flow to t for an ingress and returns the tunnel's end of it, to relay
// with flow.RelayPackets once the server has allowed it and opened its socket; ingress and
// peer name it in the metrics and the list of recent failures, as Flow.Ingress and
// Flow.Peer do for TCP (ingress default "api"). Closing the end ends the flow.
func (c *Client) OpenUDP(ctx context.Context, t flow.Target, ingress, peer string) (flow.PacketConn, error) {
	if ingress == "" {
		ingress = ingressAPI
	}
	end, err := c.dialUDP(ctx, t, ingress)
	if err != nil {
		c.cfg.Metrics.flowRejected()
		c.flowFailed(ctx, ingress, peer, t, err)
		return nil, err
	}
	return end, nil
}

func (c *Client) dialUDP(ctx context.Context, t flow.Target, ingress string) (*clientUDP, error) {
	hdr, err := AppendRequest(nil, Request{Kind: KindUDP, Target: t})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	qc, str, err := c.openStream(ctx)
	if err != nil {
		return nil, err
	}
	tun := newUDPTunnel(qc, str, c.datagramsOf(qc), func(error) quic.StreamErrorCode { return codeFlowReset }, udpEndError)
	fail := func(err error) (*clientUDP, error) {
		tun.Close(err)
		return nil, err
	}
	tun.listen() // the first answers may come right behind the status
	if _, err := str.Write(hdr); err != nil {
		return fail(noAnswer(err))
	}
	// The server answers within its own dial timeout; ours bounds the wait, and ctx ending
	// stops it at once.
	deadline, _ := ctx.Deadline()
	if err := readWithin(ctx, str, deadline, func() error { return ReadStatus(str) }); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return fail(ctx.Err())
		}
		return fail(c.statusErr(ctx, err))
	}
	active := c.cfg.Metrics.flowStarted(ingress)
	return &clientUDP{t: tun, count: func(err error) { c.cfg.Metrics.flowEnded(active, udpResult(err)) }}, nil
}

// clientUDP is the tunnel's end of a client's UDP flow: it counts the flow's end once.
type clientUDP struct {
	t     *udpTunnel
	count func(error)
	once  sync.Once
}

func (u *clientUDP) Start(out func([][]byte), ended func(error)) {
	u.t.Start(out, func(err error) {
		u.once.Do(func() { u.count(err) })
		ended(err)
	})
}

func (u *clientUDP) WritePackets(ps [][]byte) error { return u.t.WritePackets(ps) }

func (u *clientUDP) Close(why error) {
	u.once.Do(func() { u.count(why) })
	u.t.Close(why)
}

// udpResult names how a UDP flow ended, for the metrics: flow.Result's names, an app's
// Close being an orderly end.
func udpResult(err error) string {
	if errors.Is(err, net.ErrClosed) {
		return "ok"
	}
	return flow.Result(err)
}

// datagramsOf returns conn's datagram mux, which takes its datagrams from the first UDP
// flow on: they are handed over on the connection's own loop, so the mux needs no
// goroutine; it is forgotten with the connection.
func (c *Client) datagramsOf(conn *quic.Conn) *datagramMux {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.dgrams[conn]; m != nil {
		return m
	}
	if c.dgrams == nil {
		c.dgrams = map[*quic.Conn]*datagramMux{}
	}
	m := newDatagramMux()
	c.dgrams[conn] = m
	conn.SetDatagramHandler(m)
	context.AfterFunc(conn.Context(), func() {
		c.mu.Lock()
		delete(c.dgrams, conn)
		c.mu.Unlock()
	})
	return m
}

// udpEndError is what the flow ended with once the server ended the flow's stream.
func udpEndError(err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.ErrorCode == codePortUnreachable {
		return fmt.Errorf("quicmux: UDP destination: %w", syscall.ECONNREFUSED)
	}
	if errors.As(err, &se) && se.ErrorCode == codeIdle {
		return flow.ErrIdle
	}
	return mapStreamErr(err)
}

// deliver queues packets for Read; a full queue drops them.
func (f *UDPFlow) deliver(ps [][]byte) {
	for _, p := range ps {
		select {
		case f.in <- bytes.Clone(p):
		default:
		}
	}
}

// finish records why the flow ended (once).
func (f *UDPFlow) finish(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.done)
	})
}

// Read returns the next packet, cut to len(p).
func (f *UDPFlow) Read(p []byte) (int, error) {
	for {
		f.mu.Lock()
		deadline, changed := f.readDeadline, f.deadlineSet
		f.mu.Unlock()
		var timer *time.Timer
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, again, err := f.readOnce(p, timeout, changed)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, err
		}
	}
}

// readOnce waits for a packet, the flow's end, the deadline or a new deadline (again).
func (f *UDPFlow) readOnce(p []byte, timeout <-chan time.Time, changed <-chan struct{}) (n int, again bool, err error) {
	select {
	case b := <-f.in:
		return copy(p, b), false, nil
	case <-f.done:
		select {
		case b := <-f.in: // what came before the end
			return copy(p, b), false, nil
		default:
		}
		return 0, false, f.err
	case <-timeout:
		return 0, false, os.ErrDeadlineExceeded
	case <-changed:
		return 0, true, nil
	}
}

// Write sends p as one packet.
func (f *UDPFlow) Write(p []byte) (int, error) {
	select {
	case <-f.done:
		return 0, f.err
	default:
	}
	if err := f.end.WritePackets([][]byte{p}); err != nil {
		f.finish(err)
		return 0, err
	}
	return len(p), nil
}

// Close ends the flow; the server closes its socket.
func (f *UDPFlow) Close() error {
	f.finish(net.ErrClosed)
	f.end.Close(net.ErrClosed)
	return nil
}

func (f *UDPFlow) LocalAddr() net.Addr  { return f.local }
func (f *UDPFlow) RemoteAddr() net.Addr { return targetAddr{f.target} }

func (f *UDPFlow) SetDeadline(t time.Time) error {
	_ = f.SetWriteDeadline(t)
	return f.SetReadDeadline(t)
}

func (f *UDPFlow) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.readDeadline = t
	close(f.deadlineSet)
	f.deadlineSet = make(chan struct{})
	f.mu.Unlock()
	return nil
}

// SetWriteDeadline bounds a Write of a packet too large for a datagram, which waits for the
// stream's flow control; other Writes do not block.
func (f *UDPFlow) SetWriteDeadline(t time.Time) error {
	return f.end.(*clientUDP).t.str.SetWriteDeadline(t)
}
