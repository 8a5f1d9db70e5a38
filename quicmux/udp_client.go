package quicmux

import (
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

// udpQueue is how many received packets a UDP flow holds for Read; more are dropped, as a
// full socket buffer drops them.
const udpQueue = 256

// UDPFlow is a UDP flow through the tunnel, seen as a connected UDP socket: each Write sends
// one packet to the flow's target, each Read returns one packet from it (cut to the buffer's
// size, as a UDP socket does). Packets may be lost or reordered, as UDP's are. Once the flow
// has ended, Read returns the packets still queued and then why it ended: an error matching
// syscall.ECONNREFUSED when the server's socket got ICMP port unreachable, flow.ErrIdle after
// the server's idle timeout, net.ErrClosed after Close, or a reset (flow.IsReset) when the
// connection or the server ended it.
type UDPFlow struct {
	sender *packetSender
	mux    *datagramMux
	target flow.Target
	local  net.Addr

	in    chan []byte
	done  chan struct{} // closed when the flow has ended
	once  sync.Once
	err   error       // why it ended; set before done is closed
	ended func(error) // counts the end in the metrics; set before the flow can end

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
	f, err := c.OpenUDP(ctx, t, "", "")
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: targetAddr{t}, Err: err}
	}
	return f, nil
}

// OpenUDP is DialUDP for ingresses: t is the flow's target, and ingress and peer name it in
// the metrics and the list of recent failures, as Flow.Ingress and Flow.Peer do for TCP
// (ingress default "api").
func (c *Client) OpenUDP(ctx context.Context, t flow.Target, ingress, peer string) (*UDPFlow, error) {
	if ingress == "" {
		ingress = ingressAPI
	}
	f, err := c.dialUDP(ctx, t, ingress)
	if err != nil {
		c.cfg.Metrics.flowRejected()
		c.flowFailed(ctx, ingress, peer, t, err)
		return nil, err
	}
	return f, nil
}

// udpResult names how a UDP flow ended, for the metrics.
func udpResult(err error) string {
	switch {
	case errors.Is(err, net.ErrClosed):
		return "ok" // the app closed it
	case errors.Is(err, syscall.ECONNREFUSED):
		return "reset" // the destination's port unreachable, as a TCP destination's RST
	}
	return flow.Result(err)
}

func (c *Client) dialUDP(ctx context.Context, t flow.Target, ingress string) (*UDPFlow, error) {
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
	fail := func(err error) (*UDPFlow, error) {
		abortStream(str, codeFlowReset)
		return nil, err
	}
	f := &UDPFlow{
		sender: &packetSender{conn: qc, str: str},
		mux:    c.datagramsOf(qc),
		target: t,
		local:  qc.LocalAddr(),
		in:     make(chan []byte, udpQueue),
		done:   make(chan struct{}),
	}
	f.deadlineSet = make(chan struct{})
	// Registered before the request goes out: the first answer may come right behind the
	// status.
	f.mux.add(str.StreamID(), f.deliver)
	if _, err := str.Write(hdr); err != nil {
		f.mux.remove(str.StreamID())
		return fail(mapStreamErr(err))
	}
	deadline, _ := ctx.Deadline()
	_ = str.SetReadDeadline(deadline)
	if err := ReadStatus(str); err != nil {
		f.mux.remove(str.StreamID())
		if ctx.Err() != nil && !errors.As(err, new(*StatusError)) {
			err = fmt.Errorf("%w: no answer within %s", ErrServerUnreachable, c.cfg.DialTimeout)
		}
		return fail(noAnswer(err))
	}
	_ = str.SetReadDeadline(time.Time{})
	active := c.cfg.Metrics.flowStarted(ingress)
	f.ended = func(err error) { c.cfg.Metrics.flowEnded(active, udpResult(err)) }
	c.wg.Add(1)
	go func() { // owned by the client, ends with the flow's stream
		defer c.wg.Done()
		f.readStream(str)
	}()
	return f, nil
}

// datagramsOf returns conn's datagram mux, starting it with the connection's first UDP flow.
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
	c.wg.Add(1)
	go func() { // owned by the client; ends with conn
		defer c.wg.Done()
		m.run(conn.Context(), conn)
		c.mu.Lock()
		delete(c.dgrams, conn)
		c.mu.Unlock()
	}()
	return m
}

// deliver queues a packet from a datagram; a full queue drops it.
func (f *UDPFlow) deliver(p []byte) {
	select {
	case f.in <- append([]byte(nil), p...):
	default:
	}
}

// readStream takes the packets that come on the stream until it ends, which ends the flow.
func (f *UDPFlow) readStream(str *quic.Stream) {
	buf := make([]byte, flow.MaxUDPPacket)
	for {
		n, err := readStreamPacket(str, buf)
		if err != nil {
			f.end(udpEndError(err))
			return
		}
		select {
		case f.in <- append([]byte(nil), buf[:n]...):
		case <-f.done:
			return
		}
	}
}

// udpEndError is what Read returns once the server ended the flow's stream.
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

// end ends the flow with err (once).
func (f *UDPFlow) end(err error) {
	f.once.Do(func() {
		f.err = err
		if f.ended != nil {
			f.ended(err)
		}
		close(f.done)
		f.mux.remove(f.sender.str.StreamID())
		abortStream(f.sender.str, codeFlowReset)
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
	if err := f.sender.send(p); err != nil {
		return 0, mapStreamErr(err)
	}
	return len(p), nil
}

// Close ends the flow; the server closes its socket.
func (f *UDPFlow) Close() error {
	f.end(net.ErrClosed)
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
	return f.sender.str.SetWriteDeadline(t)
}
