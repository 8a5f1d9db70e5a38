package flow

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// UDPSocket is the PacketConn of a connected kernel UDP socket: the socket the server dials
// to a UDP flow's destination. It reads the packets that come in batches (on Linux recvmmsg
// with UDP GRO) as soon as the socket is readable, and writes batches (sendmmsg with UDP
// GSO) without waiting: what the socket cannot take now is dropped. While no packet comes it
// holds no buffer, and no goroutine either when a Parker watches it (the server's). The
// destination's ICMP port unreachable ends it with an error matching syscall.ECONNREFUSED.
type UDPSocket struct {
	c      *net.UDPConn
	rc     syscall.RawConn
	parker *Parker // nil: a goroutine waits in the netpoller instead

	closing atomic.Bool // Close has begun: no park, no out, no ended

	// Set by Start before the first read; read by the one reading goroutine at a time
	// (Start's, then each one the parker wakes).
	out   func([][]byte)
	ended func(error)
}

var _ PacketConn = (*UDPSocket)(nil)

// NewUDPSocket makes c, a connected UDP socket, a PacketConn; p, if not nil, watches it
// while it is idle. The UDPSocket owns c: Close closes it.
func NewUDPSocket(c *net.UDPConn, p *Parker) (*UDPSocket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &UDPSocket{c: c, rc: rc, parker: p}
	_ = EnableGRO(rc) // without it, a packet a message
	return s, nil
}

// Start begins delivering the socket's packets to out. After Close it does nothing (a read
// it starts as Close begins finds closing set and ends).
func (s *UDPSocket) Start(out func(ps [][]byte), ended func(error)) {
	if s.closing.Load() {
		return
	}
	s.out, s.ended = out, ended
	spawn(s.read)
}

// read delivers what the socket holds, batch after batch, then waits for more: parked (the
// goroutine ends, and the parker starts read again) or, without a parker, here.
func (s *UDPSocket) read() {
	wait := s.parker == nil
	for !s.closing.Load() {
		b, err := recvBatch(s.rc, wait)
		if err == nil {
			if len(b.ps) > 0 && !s.closing.Load() {
				s.out(b.ps)
			}
			putReadBatch(b)
			continue
		}
		if errors.Is(err, syscall.EAGAIN) {
			// parkUnless refuses once Close has begun (closing is set before Close
			// unparks): the socket is parked and found there by Close, or never parked.
			if s.parker.parkUnless(s.rc, s.wake, &s.closing) == nil {
				return
			}
			wait = true // closing, or the parker is closed: wait in the netpoller
			continue
		}
		s.fail(err)
		return
	}
}

func (s *UDPSocket) wake() { spawn(s.read) }

// fail ends the socket's side of the flow with err (ECONNREFUSED: the port is
// unreachable), unless Close came first. It runs once: the read that calls it is the last.
func (s *UDPSocket) fail(err error) {
	if s.closing.Load() {
		return
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.ended(err)
}

// WritePackets sends ps to the destination, dropping what the socket cannot take now.
func (s *UDPSocket) WritePackets(ps [][]byte) error {
	err := sendBatch(s.rc, ps, netip.AddrPort{}, false)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return err // the destination's port is unreachable: the flow ends
	}
	return nil // a packet the network refused is lost, as UDP's may be
}

// Close closes the socket; the destination hears nothing (UDP has no end).
func (s *UDPSocket) Close(error) {
	if s.closing.Swap(true) {
		return
	}
	// A parked socket leaves the parker before it is closed, so that no later socket that
	// reuses its descriptor number is taken for it.
	if s.parker != nil {
		s.parker.unpark(s.rc)
	}
	_ = s.c.Close()
}
