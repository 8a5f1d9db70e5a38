//go:build !linux

package flow

import (
	"errors"
	"net/netip"
	"sync"
	"syscall"
)

// Off Linux a batch is one packet: a plain recvfrom and sendto a packet.

type readBatch struct {
	buf  []byte
	ps   [][]byte
	from []netip.AddrPort
}

var readBatches = sync.Pool{New: func() any { return &readBatch{buf: make([]byte, 1<<16)} }}

func putReadBatch(b *readBatch) { b.ps, b.from = b.ps[:0], b.from[:0]; readBatches.Put(b) }

func recvBatch(rc syscall.RawConn, wait bool) (*readBatch, error) {
	var (
		b    *readBatch
		n    int
		from netip.AddrPort
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		if b == nil {
			b = readBatches.Get().(*readBatch)
		}
		var sa syscall.Sockaddr
		n, sa, rerr = syscall.Recvfrom(int(fd), b.buf, 0)
		if rerr == syscall.EAGAIN && wait {
			putReadBatch(b)
			b = nil
			return false
		}
		switch sa := sa.(type) {
		case *syscall.SockaddrInet4:
			from = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *syscall.SockaddrInet6:
			from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if b != nil {
			putReadBatch(b)
		}
		return nil, err
	}
	b.ps, b.from = append(b.ps[:0], b.buf[:n]), append(b.from[:0], from)
	return b, nil
}

func sendBatch(rc syscall.RawConn, ps [][]byte, to netip.AddrPort, v6 bool) error {
	var sa syscall.Sockaddr
	switch {
	case !to.IsValid(): // a connected socket
	case to.Addr().Is4() && !v6:
		sa = &syscall.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	default:
		sa = &syscall.SockaddrInet6{Addr: to.Addr().As16(), Port: int(to.Port())}
	}
	var first error
	for _, p := range ps {
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			if sa == nil {
				_, werr = syscall.Write(int(fd), p)
			} else {
				werr = syscall.Sendto(int(fd), p, 0, sa)
			}
			return true
		})
		if err == nil {
			err = werr
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) && first == nil {
			first = err
		}
	}
	return first
}

// EnableGRO: UDP GRO is a Linux socket option.
func EnableGRO(syscall.RawConn) error { return errors.ErrUnsupported }
