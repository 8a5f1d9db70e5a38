//go:build linux

package flow

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched packet I/O on kernel UDP sockets: recvmmsg with UDP GRO (the kernel joins a
// flow's consecutive packets of one size into one buffer, which is split again here) and
// sendmmsg with UDP GSO (a run of packets of one size to one address leaves in one message,
// which the kernel splits). Per packet the kernel's work stays; the system calls, and
// this process's wake-ups, are paid per batch.

const (
	// readMsgs is how many messages one recvmmsg takes; with GRO each may hold dozens
	// of packets.
	readMsgs = 8
	// msgBufSize holds the largest UDP payload, and the largest GRO train (64 KiB).
	msgBufSize = 1 << 16
	// maxGSOSegments is the kernel's limit on segments in one UDP GSO message, and
	// maxGSOTotal keeps the message within an IP packet's 64 KiB with its headers.
	maxGSOSegments = 64
	maxGSOTotal    = 65000
	// maxGSOSegment: a segment must fit the device's MTU (the kernel refuses the message
	// otherwise), so only packets that fit a 1500-byte link go out joined.
	maxGSOSegment = 1472
	oobSize       = 64
)

// mmsghdr is struct mmsghdr: a message and the bytes received for it.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// readBatch is what one recvmmsg fills: its buffers, and the packets and their sources cut
// from them. Batches are pooled: a socket holds one only while it reads.
type readBatch struct {
	bufs  [readMsgs][]byte
	iovs  [readMsgs]unix.Iovec
	names [readMsgs]unix.RawSockaddrInet6
	oobs  [readMsgs][oobSize]byte
	msgs  [readMsgs]mmsghdr

	ps   [][]byte         // the packets read
	from []netip.AddrPort // each packet's source (unconnected sockets)
}

var readBatches = sync.Pool{New: func() any {
	b := new(readBatch)
	for i := range b.bufs {
		b.bufs[i] = make([]byte, msgBufSize)
	}
	return b
}}

func getReadBatch() *readBatch  { return readBatches.Get().(*readBatch) }
func putReadBatch(b *readBatch) { b.ps, b.from = b.ps[:0], b.from[:0]; readBatches.Put(b) }

// recvBatch reads what the socket has into a batch taken from the pool, and returns it with
// its packets (and their sources). With nothing to read it returns EAGAIN, or, if wait,
// waits in the netpoller, holding no batch meanwhile, until there is.
func recvBatch(rc syscall.RawConn, wait bool) (*readBatch, error) {
	var (
		b     *readBatch
		n     int
		errno syscall.Errno
	)
	err := rc.Read(func(fd uintptr) bool {
		if b == nil {
			b = getReadBatch()
			b.prepare()
		}
		for {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), readMsgs, unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EINTR {
				continue
			}
			n, errno = int(r), e
			break
		}
		if errno == unix.EAGAIN && wait {
			putReadBatch(b)
			b = nil
			return false
		}
		return true
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		if b != nil {
			putReadBatch(b)
		}
		return nil, err
	}
	b.cut(n)
	return b, nil
}

// prepare points the batch's messages at its buffers.
func (b *readBatch) prepare() {
	for i := range b.msgs {
		b.iovs[i] = unix.Iovec{Base: &b.bufs[i][0]}
		b.iovs[i].SetLen(msgBufSize)
		b.msgs[i] = mmsghdr{hdr: unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&b.names[i])),
			Namelen: uint32(unsafe.Sizeof(b.names[i])),
			Iov:     &b.iovs[i],
			Iovlen:  1,
			Control: &b.oobs[i][0],
		}}
		b.msgs[i].hdr.SetControllen(oobSize)
	}
}

// cut splits the n messages received into packets: a GRO train into its segments.
func (b *readBatch) cut(n int) {
	for i := range n {
		m := &b.msgs[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue // cannot happen with 64 KiB buffers; never pass on a cut packet
		}
		data := b.bufs[i][:m.n]
		from := sockaddrToAddrPort(&b.names[i], m.hdr.Namelen)
		seg := GROSegmentSize(b.oobs[i][:m.hdr.Controllen])
		if seg <= 0 || seg >= len(data) {
			b.ps, b.from = append(b.ps, data), append(b.from, from)
			continue
		}
		for len(data) > 0 {
			k := min(seg, len(data))
			b.ps, b.from = append(b.ps, data[:k:k]), append(b.from, from)
			data = data[k:]
		}
	}
}

// GROSegmentSize finds the UDP_GRO control message (the size of each joined packet) in oob,
// a received message's control data; 0 if there is none.
func GROSegmentSize(oob []byte) int {
	for len(oob) > 0 {
		hdr, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if hdr.Level == unix.IPPROTO_UDP && hdr.Type == unix.UDP_GRO && len(body) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(body)))
		}
		oob = rest
	}
	return 0
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	switch {
	case n >= unix.SizeofSockaddrInet4 && sa.Family == unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case n >= unix.SizeofSockaddrInet6 && sa.Family == unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// writeBatch builds the messages of one sendmmsg; pooled like readBatch.
type writeBatch struct {
	iovs []unix.Iovec
	msgs []mmsghdr
	name unix.RawSockaddrInet6 // every message's destination, on an unconnected socket
	oobs [][unix.SizeofCmsghdr + 8]byte
}

var writeBatches = sync.Pool{New: func() any { return new(writeBatch) }}

// gsoOff is set once the kernel refused a GSO message on some socket: the process then
// sends a packet per message, as kernels without UDP GSO (before 4.18) need.
var gsoOff atomic.Bool

// sendBatch sends ps to to (unless to is the zero AddrPort: a connected socket) without
// waiting: what the socket cannot take now is dropped. v6 says the socket is an IPv6 one
// (its addresses are written as IPv6, IPv4 ones mapped). Runs of packets of one size go out
// as one GSO message. It returns the first error other than EAGAIN.
func sendBatch(rc syscall.RawConn, ps [][]byte, to netip.AddrPort, v6 bool) error {
	return send(rc, ps, to, v6, !gsoOff.Load())
}

// send is sendBatch, with GSO or a packet per message.
func send(rc syscall.RawConn, ps [][]byte, to netip.AddrPort, v6, gso bool) error {
	w := writeBatches.Get().(*writeBatch)
	defer writeBatches.Put(w)
	w.iovs, w.msgs, w.oobs = w.iovs[:0], w.msgs[:0], w.oobs[:0]
	var nameLen uint32
	if to.IsValid() {
		nameLen = putSockaddr(&w.name, to, v6)
	}
	// Messages first (iovecs are addressed once their slice stops growing).
	type msgSpan struct{ first, count, seg int }
	var spans []msgSpan
	for i := 0; i < len(ps); {
		j := i + 1
		if gso && len(ps[i]) > 0 && len(ps[i]) <= maxGSOSegment {
			total := len(ps[i])
			for j < len(ps) && j-i < maxGSOSegments && total+len(ps[j]) <= maxGSOTotal &&
				len(ps[j]) > 0 && len(ps[j]) <= len(ps[i]) && len(ps[j-1]) == len(ps[i]) {
				total += len(ps[j])
				j++
			}
		}
		spans = append(spans, msgSpan{i, j - i, len(ps[i])})
		i = j
	}
	for _, p := range ps {
		iov := unix.Iovec{}
		if len(p) > 0 {
			iov.Base = &p[0]
		}
		iov.SetLen(len(p))
		w.iovs = append(w.iovs, iov)
	}
	for range spans {
		w.oobs = append(w.oobs, [unix.SizeofCmsghdr + 8]byte{})
	}
	for k, sp := range spans {
		m := mmsghdr{hdr: unix.Msghdr{Iov: &w.iovs[sp.first]}}
		m.hdr.SetIovlen(sp.count)
		if nameLen > 0 {
			m.hdr.Name = (*byte)(unsafe.Pointer(&w.name))
			m.hdr.Namelen = nameLen
		}
		if sp.count > 1 {
			oob := w.oobs[k][:unix.CmsgSpace(2)]
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(sp.seg))
			m.hdr.Control = &oob[0]
			m.hdr.SetControllen(len(oob))
		}
		w.msgs = append(w.msgs, m)
	}
	var firstErr error
	for sent := 0; sent < len(w.msgs); {
		var n int
		var errno syscall.Errno
		err := rc.Write(func(fd uintptr) bool {
			for {
				r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.msgs[sent])), uintptr(len(w.msgs)-sent), unix.MSG_DONTWAIT, 0, 0)
				if e == unix.EINTR {
					continue
				}
				n, errno = int(r), e
				return true
			}
		})
		switch {
		case err != nil:
			return err
		case errno == unix.EAGAIN:
			return firstErr // the rest is dropped, as a full buffer drops it
		case (errno == unix.EIO || errno == unix.EINVAL) && spans[sent].count > 1:
			// The device cannot checksum segments (EIO: from now on no socket tries), or
			// this one would not fit its MTU: the rest of the batch goes a packet per
			// message.
			if errno == unix.EIO {
				gsoOff.Store(true)
			}
			return errors.Join(firstErr, send(rc, ps[spans[sent].first:], to, v6, false))
		case errno != 0:
			// This message failed (its address unreachable, say); go on with the next.
			if firstErr == nil {
				firstErr = errno
			}
			sent++
		default:
			sent += n
		}
	}
	return firstErr
}

// putSockaddr writes a's socket address into sa (as IPv6, IPv4-mapped where needed, for an
// IPv6 socket) and returns its length.
func putSockaddr(sa *unix.RawSockaddrInet6, a netip.AddrPort, v6 bool) uint32 {
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], a.Port())
	if !v6 && a.Addr().Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().As4()}
		sa4.Port = *(*uint16)(unsafe.Pointer(&port[0]))
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr().As16()}
	sa.Port = *(*uint16)(unsafe.Pointer(&port[0]))
	return unix.SizeofSockaddrInet6
}

// EnableGRO asks the kernel to join a flow's packets on rc's UDP socket (UDP_GRO), and
// says whether it would not; where it cannot, packets come one per message, which
// recvBatch reads as well.
func EnableGRO(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return err
	}
	return serr
}
