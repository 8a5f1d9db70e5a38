//go:build linux

package quicmux

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/flow"
)

// UDP GRO on receive. quic-go sends with UDP GSO (one system call carries up to 64 KiB of
// equal-sized packets) but reads one datagram per message. With UDP_GRO set on the socket,
// the kernel hands over such a train as one message instead of one per packet: over
// loopback the GSO buffer is never split at all, and on a NIC the kernel's GRO joins the
// packets of a flow. groConn reads those trains into large buffers and deals the packets
// out to quic-go one per message, through the batchConn hook quic-go offers for this
// (a conn with ReadBatch is read through it). Everything else, sending with GSO included,
// is the plain *net.UDPConn.
const (
	groBatch   = 8       // messages per recvmmsg
	groBufSize = 1 << 16 // a GRO train is at most 64 KiB
	groOOBSize = 128     // quic-go's own control-message buffer size
)

type groConn struct {
	*net.UDPConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message

	// The batch being dealt out: msgs[:n], message next, from byte off; seg[i] is
	// message i's packet size (its whole length when the kernel did not join packets).
	n, next, off int
	seg          [groBatch]int
}

// withGRO turns on UDP GRO for conn and returns the conn quic-go should use; where the
// kernel refuses it, conn is used as it is.
func withGRO(conn *net.UDPConn) net.PacketConn {
	rc, err := conn.SyscallConn()
	if err != nil {
		return conn
	}
	if flow.EnableGRO(rc) != nil {
		return conn
	}
	c := &groConn{UDPConn: conn, pc: ipv4.NewPacketConn(conn), msgs: make([]ipv4.Message, groBatch)}
	for i := range c.msgs {
		c.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
		c.msgs[i].OOB = make([]byte, groOOBSize)
	}
	return c
}

// ReadBatch fills ms with one packet each, reading from the socket only when the last
// batch has been dealt out, and returns at least one packet or an error. quic-go calls it
// from its one reading goroutine only.
func (c *groConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	out := 0
	for out == 0 {
		if c.next >= c.n {
			if err := c.refill(flags); err != nil {
				return 0, err
			}
		}
		for out < len(ms) && c.next < c.n {
			if c.deal(&ms[out]) {
				out++
			}
		}
	}
	return out, nil
}

// refill reads the next batch of messages from the socket.
func (c *groConn) refill(flags int) error {
	for i := range c.msgs {
		c.msgs[i].OOB = c.msgs[i].OOB[:groOOBSize]
	}
	n, err := c.pc.ReadBatch(c.msgs, flags)
	if err != nil {
		return err
	}
	c.n, c.next, c.off = n, 0, 0
	for i := range n {
		m := &c.msgs[i]
		c.seg[i] = flow.GROSegmentSize(m.OOB[:m.NN])
		if c.seg[i] <= 0 || c.seg[i] > m.N {
			c.seg[i] = m.N
		}
		if m.Flags&unix.MSG_TRUNC != 0 {
			m.N = 0 // cannot happen with 64 KiB buffers; never pass on a cut packet
		}
	}
	return nil
}

// deal copies the next packet of the batch into d; false if the message was empty.
func (c *groConn) deal(d *ipv4.Message) bool {
	m := &c.msgs[c.next]
	if m.N == 0 {
		c.next++
		return false
	}
	end := min(c.off+c.seg[c.next], m.N)
	d.N = copy(d.Buffers[0][:cap(d.Buffers[0])], m.Buffers[0][c.off:end])
	d.NN = copy(d.OOB[:cap(d.OOB)], m.OOB[:m.NN])
	d.Addr = m.Addr
	d.Flags = 0
	if d.N < end-c.off {
		d.Flags = unix.MSG_TRUNC
	}
	if c.off = end; c.off >= m.N {
		c.next++
		c.off = 0
	}
	return true
}
