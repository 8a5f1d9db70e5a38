package quicmux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/quicgate/quicgate/third_party/quic-go/quicvarint"
)

// UDP flows. A flow is set up on a stream of its own like a TCP flow (a KindUDP request, the
// server's status), and the stream stays open as the flow's lifeline: its end ends the flow.
// Each packet travels as a QUIC datagram (RFC 9221) that starts with the flow's quarter
// stream ID as a variable-length integer (as RFC 9297's HTTP datagrams do); a packet too
// large for a datagram travels on the stream instead, after a 2-byte length. Datagrams may
// be lost, as UDP packets may; those on the stream are not.

const (
	// DefaultUDPIdleTimeout ends a UDP flow that carried no packet either way for this long
	// (RFC 4787 REQ-5: a NAT's UDP mapping lives at least 2 minutes).
	DefaultUDPIdleTimeout = 2 * time.Minute
	// DefaultDNSIdleTimeout is the idle timeout of a UDP flow to port 53: a DNS exchange is
	// one question and its answer.
	DefaultDNSIdleTimeout = 15 * time.Second
)

// udpIdleTimeout is the idle timeout of a UDP flow to port: DNS's is shorter.
func udpIdleTimeout(idle time.Duration, port uint16) time.Duration {
	if idle > 0 {
		return idle
	}
	if port == 53 {
		return DefaultDNSIdleTimeout
	}
	return DefaultUDPIdleTimeout
}

// appendDatagram appends a datagram carrying p for the flow on stream id.
func appendDatagram(b []byte, id quic.StreamID, p []byte) []byte {
	b = quicvarint.Append(b, uint64(id)/4)
	return append(b, p...)
}

// parseDatagram splits a datagram into the flow's stream ID and its packet.
func parseDatagram(b []byte) (quic.StreamID, []byte, error) {
	q, n, err := quicvarint.Parse(b)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: datagram without a flow ID", ErrProtocol)
	}
	return quic.StreamID(q * 4), b[n:], nil
}

// datagramMux hands a connection's datagrams to the UDP flows they belong to, on the
// connection's run loop (quic-go's DatagramHandler, a quicgate patch): no goroutine, no
// copy, no queue. The datagrams of one QUIC packet that belong to one flow reach it as one
// batch (DatagramsDone), which its relay writes in one system call. A datagram for no flow
// (one that ended, the client's liveness probe) is dropped.
type datagramMux struct {
	mu    sync.Mutex
	flows map[quic.StreamID]*udpTunnel

	// pending holds the flows that got datagrams from the packet being handled: touched on
	// the run loop alone.
	pending []*udpTunnel
}

var _ quic.DatagramHandler = (*datagramMux)(nil)

func newDatagramMux() *datagramMux {
	return &datagramMux{flows: map[quic.StreamID]*udpTunnel{}}
}

func (m *datagramMux) add(t *udpTunnel) {
	m.mu.Lock()
	m.flows[t.str.StreamID()] = t
	m.mu.Unlock()
}

func (m *datagramMux) remove(t *udpTunnel) {
	m.mu.Lock()
	if m.flows[t.str.StreamID()] == t {
		delete(m.flows, t.str.StreamID())
	}
	m.mu.Unlock()
}

// HandleDatagram queues p for its flow until the packet's DatagramsDone.
func (m *datagramMux) HandleDatagram(b []byte) {
	id, p, err := parseDatagram(b)
	if err != nil {
		return
	}
	m.mu.Lock()
	t := m.flows[id]
	m.mu.Unlock()
	if t == nil {
		return
	}
	if len(t.batch) == 0 {
		m.pending = append(m.pending, t)
	}
	t.batch = append(t.batch, p)
}

// DatagramsDone hands each flow its packets from the packet just handled.
func (m *datagramMux) DatagramsDone() {
	for i, t := range m.pending {
		t.deliver(t.batch)
		clear(t.batch)
		t.batch = t.batch[:0]
		m.pending[i] = nil
	}
	m.pending = m.pending[:0]
}

// udpTunnel is the tunnel's end of a UDP flow (a flow.PacketConn), on either side: its
// packets come as datagrams (datagramMux) and, when too large for one, on the flow's
// stream after a 2-byte length; the stream's end is the flow's end. Packets go out the same
// way. While no packet moves it holds no goroutine and no buffer: the stream is read only
// once it says it is readable.
type udpTunnel struct {
	conn *quic.Conn
	str  *quic.Stream
	mux  *datagramMux
	head []byte // the datagrams' prefix: the quarter stream ID

	// code is the stream error code a Close with why sends; ended maps how the stream
	// ended (a read error) to the flow's end. They differ between client and server.
	code     func(why error) quic.StreamErrorCode
	endedErr func(err error) error

	batch [][]byte // the run loop's: this packet's datagrams for the flow (datagramMux)

	writeMu sync.Mutex // writes of packets on the stream

	mu     sync.Mutex
	out    func([][]byte)
	ended  func(error)
	closed bool
	// early holds copies of the packets that came before Start (right behind the server's
	// answer, while the relay is set up): at most earlyPackets.
	early [][]byte
	// The stream's reader: a packet cut across reads waits in partial, its length known.
	partial []byte
	want    int
}

var _ flow.PacketConn = (*udpTunnel)(nil)

func newUDPTunnel(conn *quic.Conn, str *quic.Stream, mux *datagramMux, code func(error) quic.StreamErrorCode, endedErr func(error) error) *udpTunnel {
	return &udpTunnel{conn: conn, str: str, mux: mux, head: appendDatagram(nil, str.StreamID(), nil), code: code, endedErr: endedErr}
}

// earlyPackets bounds the packets a flow keeps before its relay starts.
const earlyPackets = 64

// listen takes the flow's datagrams from now on (before the request goes out: the first
// answers may come right behind the status), keeping them until Start.
func (t *udpTunnel) listen() { t.mux.add(t) }

// Start delivers the flow's packets to out from now on, those that came before it first
// (listen, called before the request or its answer went out, took them).
func (t *udpTunnel) Start(out func(ps [][]byte), ended func(error)) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.out, t.ended = out, ended
	early := t.early
	t.early = nil
	if len(early) > 0 {
		out(early)
	}
	t.mu.Unlock()
	t.str.NotifyReadable(t.onReadable)
}

// deliver hands a batch of datagrams to the relay (from the run loop).
func (t *udpTunnel) deliver(ps [][]byte) {
	t.mu.Lock()
	out, closed := t.out, t.closed
	if out == nil && !closed {
		for _, p := range ps[:min(len(ps), earlyPackets-len(t.early))] {
			t.early = append(t.early, bytes.Clone(p))
		}
	}
	t.mu.Unlock()
	if out != nil && !closed {
		out(ps)
	}
}

// onReadable starts reading the stream: a packet too large for a datagram, or the end.
func (t *udpTunnel) onReadable() { go t.readStream() }

// streamReadSize is what one read of the stream takes: a packet's length and some of it.
const streamReadSize = 16 << 10

// readStream reads what the stream holds, delivers each whole packet, and asks to be woken
// again; a read error ends the flow.
func (t *udpTunnel) readStream() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for !t.closed {
		if !t.str.Readable() {
			t.str.NotifyReadable(t.onReadable)
			return
		}
		need := t.want - len(t.partial) // the rest of the packet
		if t.want == 0 {
			need = 2 - len(t.partial) // the rest of its length
		}
		if cap(t.partial)-len(t.partial) < need {
			t.partial = append(make([]byte, 0, max(len(t.partial)+need, streamReadSize)), t.partial...)
		}
		n, err := t.str.Read(t.partial[len(t.partial) : len(t.partial)+need])
		t.partial = t.partial[:len(t.partial)+n]
		if t.want == 0 && len(t.partial) == 2 {
			t.want = 2 + int(binary.BigEndian.Uint16(t.partial))
			if t.want-2 > flow.MaxUDPPacket {
				err = fmt.Errorf("%w: UDP packet of %d bytes on the stream", ErrProtocol, t.want-2)
			}
		}
		if t.want > 0 && len(t.partial) == t.want {
			p := t.partial[2:]
			out := t.out
			t.mu.Unlock()
			out([][]byte{p})
			t.mu.Lock()
			t.partial, t.want = nil, 0
		}
		if err != nil {
			ended := t.ended
			t.closed = true
			t.mu.Unlock()
			t.mux.remove(t)
			abortStream(t.str, codeFlowReset)
			ended(t.endedErr(err))
			t.mu.Lock()
			return
		}
	}
}

// WritePackets sends each packet as a datagram, or on the stream when too large for one.
// It waits while the connection's datagram queue is full.
func (t *udpTunnel) WritePackets(ps [][]byte) error {
	for _, p := range ps {
		if len(p) > flow.MaxUDPPacket {
			continue // only IPv6 carries more; no UDP flow can
		}
		err := t.conn.SendDatagramParts(t.head, p)
		var tooLarge *quic.DatagramTooLargeError
		if errors.As(err, &tooLarge) {
			err = t.writeStream(p)
		}
		if err != nil {
			return mapStreamErr(err)
		}
	}
	return nil
}

// writeStream sends p on the flow's stream, after its length.
func (t *udpTunnel) writeStream(p []byte) error {
	var hdr [2]byte
	binary.BigEndian.PutUint16(hdr[:], uint16(len(p)))
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	if _, err := t.str.Write(hdr[:]); err != nil {
		return err
	}
	_, err := t.str.Write(p)
	return err
}

// Close ends the flow's stream with the code for why.
func (t *udpTunnel) Close(why error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	t.mux.remove(t)
	abortStream(t.str, t.code(why))
}
