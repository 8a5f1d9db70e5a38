package quicmux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

// packetSender sends a flow's packets: as datagrams on conn, or on str when too large.
type packetSender struct {
	conn *quic.Conn
	str  *quic.Stream
	mu   sync.Mutex // the stream's writes
}

// send sends one packet.
func (s *packetSender) send(p []byte) error {
	if len(p) > flow.MaxUDPPacket {
		return fmt.Errorf("quicmux: UDP packet of %d bytes (at most %d)", len(p), flow.MaxUDPPacket)
	}
	err := s.conn.SendDatagram(appendDatagram(make([]byte, 0, 8+len(p)), s.str.StreamID(), p))
	var tooLarge *quic.DatagramTooLargeError
	if !errors.As(err, &tooLarge) {
		return err
	}
	var hdr [2]byte
	binary.BigEndian.PutUint16(hdr[:], uint16(len(p)))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.str.Write(hdr[:]); err != nil {
		return err
	}
	_, err = s.str.Write(p)
	return err
}

// readStreamPacket reads one length-prefixed packet from a flow's stream into buf (at
// least flow.MaxUDPPacket long).
func readStreamPacket(r io.Reader, buf []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > flow.MaxUDPPacket {
		return 0, fmt.Errorf("%w: UDP packet of %d bytes on the stream", ErrProtocol, n)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return n, nil
}

// datagramMux hands a connection's datagrams to the UDP flows they belong to. A datagram
// for no flow (a flow that ended, the client's liveness probe) is dropped.
type datagramMux struct {
	mu    sync.Mutex
	flows map[quic.StreamID]func([]byte)
}

func newDatagramMux() *datagramMux {
	return &datagramMux{flows: map[quic.StreamID]func([]byte){}}
}

func (m *datagramMux) add(id quic.StreamID, deliver func([]byte)) {
	m.mu.Lock()
	m.flows[id] = deliver
	m.mu.Unlock()
}

func (m *datagramMux) remove(id quic.StreamID) {
	m.mu.Lock()
	delete(m.flows, id)
	m.mu.Unlock()
}

// run receives conn's datagrams until ctx or conn ends. deliver must not block: it is called
// on this loop, and a flow that cannot take a packet at once drops it, as a full socket
// buffer does.
func (m *datagramMux) run(ctx context.Context, conn *quic.Conn) {
	for {
		b, err := conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		id, p, err := parseDatagram(b)
		if err != nil {
			continue
		}
		m.mu.Lock()
		deliver := m.flows[id]
		m.mu.Unlock()
		if deliver != nil {
			deliver(p)
		}
	}
}
