package flow

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// SharedUDPSocket is a bound, unconnected kernel UDP socket whose packets belong to many
// flows: a -U port's (a flow per source address) or a SOCKS5 association's. Its reader
// (one goroutine for the socket, not one per flow) takes the packets in batches (recvmmsg
// with UDP GRO on Linux), and each flow's answers go out in batches (sendmmsg with UDP GSO)
// without waiting: what the socket cannot take now is dropped.
type SharedUDPSocket struct {
	rc syscall.RawConn
	v6 bool // an IPv6 socket: destinations are written as IPv6 addresses
}

// NewSharedUDPSocket takes c for batched reads and writes; c stays the caller's to close.
func NewSharedUDPSocket(c *net.UDPConn) (*SharedUDPSocket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &SharedUDPSocket{rc: rc}
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		s.v6 = a.IP.To4() == nil
	}
	_ = EnableGRO(rc) // without it, a packet a message
	return s, nil
}

// ReadLoop reads the socket until it fails (it is closed), and hands each batch to fn: the
// packets and each one's source (IPv4 sources unmapped). The packets are valid only during
// the call. It waits for packets holding no buffer. It returns the error that ended it.
func (s *SharedUDPSocket) ReadLoop(fn func(ps [][]byte, from []netip.AddrPort)) error {
	for {
		b, err := recvBatch(s.rc, true)
		if err != nil {
			return err
		}
		if len(b.ps) > 0 {
			fn(b.ps, b.from)
		}
		putReadBatch(b)
	}
}

// WriteTo sends ps to to without waiting; what the socket cannot take now is dropped.
func (s *SharedUDPSocket) WriteTo(ps [][]byte, to netip.AddrPort) error {
	err := sendBatch(s.rc, ps, to, s.v6)
	if errors.Is(err, syscall.EAGAIN) {
		return nil
	}
	return err
}
