//go:build linux

package flow

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Parker parks idle kernel sockets in one epoll instance of its own (level-triggered,
// EPOLLONESHOT), so a socket waiting to become readable costs no goroutine: one goroutine,
// the parker's, waits for all of them. A client or a server makes one (NewParker), hands it
// to its relays (RelayOptions.Parker) and closes it once their flows have ended.
//
// Each park is tagged with a sequence number carried in the epoll event's data next to the
// descriptor, so an event collected for an earlier park (of this socket, or of a closed socket
// whose descriptor number was reused) is recognised as stale and dropped.
type Parker struct {
	epfd int // the epoll instance
	wake int // an eventfd in the epoll set; written by Close to stop the loop
	done chan struct{}

	mu     sync.Mutex
	socks  map[int32]parked // by descriptor; an entry stays after firing so re-parks reuse it
	seq    uint32           // the last park's tag
	closed bool

	closeOnce sync.Once
}

// parked is one socket's state in the parker.
type parked struct {
	f          func() // the pending callback; nil once taken (or never parked)
	seq        uint32 // the pending park's tag
	registered bool   // the descriptor is in the epoll set (ADD done, no DEL since)
}

const (
	parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT
	parkBatch  = 128
)

var (
	errParkerClosed = errors.New("flow: parker closed")
	errParkedTwice  = errors.New("flow: socket already parked")
	errParkRefused  = errors.New("flow: park refused")
)

// NewParker starts a parker and its goroutine.
func NewParker() (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, err
	}
	p := &Parker{
		epfd:  epfd,
		wake:  wake,
		done:  make(chan struct{}),
		socks: make(map[int32]parked),
	}
	go p.loop()
	return p, nil
}

// parkOp carries one park or unpark through RawConn.Control without allocating: ops are
// pooled, each with its method values made once.
type parkOp struct {
	p       *Parker
	f       func()
	refuse  *atomic.Bool
	err     error
	pending bool
	ev      unix.EpollEvent
	park    func(fd uintptr)
	unpark  func(fd uintptr)
}

var parkOps = sync.Pool{New: func() any {
	o := new(parkOp)
	o.park = o.doPark
	o.unpark = o.doUnpark
	return o
}}

// park calls f once, from the parker's goroutine, when rc's socket is readable (bytes, a FIN,
// an error or a hang-up) — soon after park returns if it is already. f must not block (it
// starts a goroutine). A socket is parked at most once at a time.
func (p *Parker) park(rc syscall.RawConn, f func()) error { return p.parkUnless(rc, f, nil) }

// parkUnless is park, refused (errParkRefused) if refuse is set when the parker takes the
// socket: checked under the lock unpark takes too, so a caller that sets refuse and then
// unparks either finds the socket parked or keeps it from being parked.
func (p *Parker) parkUnless(rc syscall.RawConn, f func(), refuse *atomic.Bool) error {
	o := parkOps.Get().(*parkOp)
	o.p, o.f, o.refuse = p, f, refuse
	err := rc.Control(o.park)
	if err == nil {
		err = o.err
	}
	o.p, o.f, o.refuse, o.err = nil, nil, nil, nil
	parkOps.Put(o)
	return err
}

// doPark runs inside RawConn.Control, so the descriptor stays open (and its number ours)
// throughout.
func (o *parkOp) doPark(ufd uintptr) {
	p, fd := o.p, int32(ufd)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		o.err = errParkerClosed
		return
	}
	if o.refuse != nil && o.refuse.Load() {
		o.err = errParkRefused
		return
	}
	s := p.socks[fd]
	if s.f != nil {
		o.err = errParkedTwice
		return
	}
	p.seq++
	s.f, s.seq = o.f, p.seq
	o.ev = unix.EpollEvent{Events: parkEvents, Fd: fd, Pad: int32(s.seq)}
	op := unix.EPOLL_CTL_ADD
	if s.registered {
		op = unix.EPOLL_CTL_MOD
	}
	err := unix.EpollCtl(p.epfd, op, int(fd), &o.ev)
	// The record can be wrong only if a socket was closed without unpark (the kernel then
	// dropped it from the set) or its descriptor was registered otherwise; try the other op.
	switch {
	case err == unix.ENOENT && op == unix.EPOLL_CTL_MOD:
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &o.ev)
	case err == unix.EEXIST && op == unix.EPOLL_CTL_ADD:
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &o.ev)
	}
	if err != nil {
		o.err = err
		s.f = nil
		s.registered = false
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) // best effort; usually ENOENT
		delete(p.socks, fd)
		return
	}
	s.registered = true
	p.socks[fd] = s
}

// unpark cancels rc's pending park, if any, and reports whether one was pending: if true, f
// will not be called; if false, f has been or is being called (or the socket was not parked).
// It must be called before the socket is closed, so that a later socket reusing the
// descriptor number is never mistaken for it.
func (p *Parker) unpark(rc syscall.RawConn) bool {
	o := parkOps.Get().(*parkOp)
	o.p = p
	rc.Control(o.unpark) // a closed rc: nothing to find, nothing pending
	pending := o.pending
	o.p, o.pending = nil, false
	parkOps.Put(o)
	return pending
}

// doUnpark runs inside RawConn.Control.
func (o *parkOp) doUnpark(ufd uintptr) {
	p, fd := o.p, int32(ufd)
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.socks[fd]
	if !ok {
		return
	}
	o.pending = s.f != nil
	delete(p.socks, fd)
	if s.registered && !p.closed {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) // ENOENT is fine
	}
}

// Close stops the parker's goroutine and waits for it; callbacks still pending are not called
// (their sockets' relays are over by then). Idempotent.
func (p *Parker) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		one := [8]byte{1}
		for {
			_, err := unix.Write(p.wake, one[:])
			if err != unix.EINTR {
				break // EAGAIN would mean the counter is already non-zero: woken anyway
			}
		}
		<-p.done
		unix.Close(p.wake)
		unix.Close(p.epfd)
	})
}

// loop waits for parked sockets and calls their callbacks, until Close.
func (p *Parker) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, parkBatch)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Cannot happen with a valid epoll descriptor and buffer; stop rather than spin.
			// Pending callbacks are then never called, as after Close.
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			if ev.Fd == int32(p.wake) {
				return // only Close writes to it
			}
			p.mu.Lock()
			s, ok := p.socks[ev.Fd]
			if p.closed {
				p.mu.Unlock()
				return
			}
			if !ok || s.f == nil || s.seq != uint32(ev.Pad) {
				p.mu.Unlock()
				continue // stale: unparked, or from an earlier park
			}
			f := s.f
			s.f = nil
			p.socks[ev.Fd] = s
			p.mu.Unlock()
			f()
		}
	}
}
