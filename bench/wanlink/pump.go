package wanlink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

const (
	// offset is the room left in front of each packet: wireguard-go's offloads put a 10-byte
	// virtio header there.
	offset = 16
	// slabSize holds one packet of up to MTU 1500 (checked on read) after the offset.
	slabSize = 2048
	// writeBufSize lets wireguard-go coalesce a write batch into 64 KiB super-packets (GRO),
	// one write system call each.
	writeBufSize = offset + 65535
	// minSleep bounds how often a writer wakes: packets due within it go out together. At
	// 1 Gbit/s that is about 20 packets a wake, at 100 Mbit/s about 2.
	minSleep = 250 * time.Microsecond
)

// packet is one packet held by a Line: its bytes are slab[offset:offset+n].
type packet struct {
	slab *[]byte
	n    int
}

var slabs = sync.Pool{New: func() any { b := make([]byte, slabSize); return &b }}

// pump moves one direction: it reads packets from in, passes them through the line, and
// writes them to out when they are due.
type pump struct {
	in, out wgtun.Device
	mtu     int
	mu      sync.Mutex
	line    *Line[packet]
	wake    chan struct{} // a packet went into an empty line
	done    chan struct{}
	timer   *timer
	c       counters
	// dropUDP: every UDP packet is dropped (Link.BlockUDP), as a firewall that blocks UDP.
	dropUDP atomic.Bool
}

func newPump(in, out wgtun.Device, mtu int, p Params) (*pump, error) {
	line, err := NewLine[packet](p)
	if err != nil {
		return nil, err
	}
	t, err := newTimer()
	if err != nil {
		return nil, err
	}
	return &pump{in: in, out: out, mtu: mtu, line: line, wake: make(chan struct{}, 1), done: make(chan struct{}), timer: t}, nil
}

func closedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, fs.ErrClosed)
}

// read runs until in is closed.
func (p *pump) read() error {
	n := p.in.BatchSize()
	bufs := make([][]byte, n)
	held := make([]*[]byte, n)
	sizes := make([]int, n)
	for i := range bufs {
		held[i] = slabs.Get().(*[]byte)
		bufs[i] = *held[i]
	}
	defer func() {
		for _, s := range held {
			slabs.Put(s)
		}
	}()
	errRun := 0
	for {
		k, err := p.in.Read(bufs, sizes, offset)
		p.c.reads.Add(1)
		if err != nil && k == 0 {
			if closedErr(err) {
				return nil
			}
			// A packet wireguard-go cannot split, or a netlink hiccup: count it and go on,
			// unless the device keeps failing.
			p.c.readErrors.Add(1)
			if errRun++; errRun > 1000 {
				return fmt.Errorf("reading: %w", err)
			}
			continue
		}
		errRun = 0
		now := time.Now()
		queued := 0
		p.mu.Lock()
		wasEmpty := p.line.Len() == 0
		for i := range k {
			size := sizes[i]
			p.c.packets.Add(1)
			p.c.bytes.Add(int64(size))
			storeMax(&p.c.maxSize, int64(size))
			if size > p.mtu || size > slabSize-offset {
				p.c.oversize.Add(1) // a frame the wire could not carry
				continue
			}
			if p.dropUDP.Load() && isUDP(bufs[i][offset:offset+size]) {
				p.c.blocked.Add(1)
				continue
			}
			switch v, _ := p.line.Push(now, size, packet{slab: held[i], n: size}); v {
			case Queued:
				queued++
				held[i] = slabs.Get().(*[]byte)
				bufs[i] = *held[i]
			case Lost:
				p.c.lost.Add(1)
			case QueueFull:
				p.c.queueFull.Add(1)
			}
		}
		p.mu.Unlock()
		if wasEmpty && queued > 0 {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
}

// write runs until stop is called, sending every packet when it is due.
func (p *pump) write() error {
	n := p.out.BatchSize()
	base := make([][]byte, n)
	for i := range base {
		base[i] = make([]byte, writeBufSize)
	}
	bufs := make([][]byte, 0, n)
	batch := make([]packet, 0, n)
	for {
		p.mu.Lock()
		next, ok := p.line.Next()
		if !ok {
			p.mu.Unlock()
			select {
			case <-p.wake:
				continue
			case <-p.done:
				return nil
			}
		}
		now := time.Now()
		if wait := next.Sub(now); wait > 0 {
			p.mu.Unlock()
			// Packets behind the head are due no earlier, so nothing needs to wake this
			// sleep early but a stop, which closes the timer.
			if err := p.timer.sleep(max(wait, minSleep)); err != nil {
				if closedErr(err) {
					return nil // stop closed the timer
				}
				return fmt.Errorf("sleeping: %w", err)
			}
			continue
		}
		batch = p.line.Pop(now, batch[:0], n)
		p.mu.Unlock()
		// The head is the latest of the batch: the others are due after it.
		late := now.Sub(next)
		storeMax(&p.c.maxLateNs, int64(late))
		if late > LateAfter {
			p.c.late.Add(int64(len(batch)))
		}
		bufs = bufs[:0]
		var bytes int64
		for i, pk := range batch {
			b := base[i][:offset+pk.n]
			copy(b[offset:], (*pk.slab)[offset:offset+pk.n])
			slabs.Put(pk.slab)
			bufs = append(bufs, b)
			bytes += int64(pk.n)
		}
		_, err := p.out.Write(bufs, offset)
		p.c.writes.Add(1)
		if err != nil {
			if closedErr(err) {
				return nil
			}
			p.c.writeErrors.Add(1) // the packets are lost; the link goes on
			continue
		}
		p.c.delivered.Add(int64(len(batch)))
		p.c.deliveredB.Add(bytes)
	}
}

// timer sleeps with the kernel's high-resolution timers: a timerfd read through Go's
// netpoller, so the sleeping goroutine gives up its P like any blocked read. Go's own timers
// wake no finer than a millisecond here (the runtime's epoll wait takes whole milliseconds),
// which would add up to 2 ms to every round trip; a nanosleep system call holds its P, and
// with both writers asleep nothing polls the devices until sysmon (which backs off to 10 ms)
// takes the P back: packets were 10 ms late that way.
type timer struct {
	f  *os.File
	rc syscall.RawConn
}

func newTimer() (*timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &timer{f: f, rc: rc}, nil
}

// sleep returns after d, or with an error once the timer is closed.
func (t *timer) sleep(d time.Duration) error {
	var serr error
	err := t.rc.Control(func(fd uintptr) {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(int64(d), 1))}
		serr = unix.TimerfdSettime(int(fd), 0, &spec, nil)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	var b [8]byte // the count of expirations
	_, err = t.f.Read(b[:])
	return err
}

func (t *timer) close() error { return t.f.Close() }

func (p *pump) stop() {
	close(p.done)
	_ = p.timer.close()
}

// release returns every packet still in the line to the pool.
func (p *pump) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pk := range p.line.Pop(time.Now().Add(24*time.Hour), nil, p.line.Len()) {
		slabs.Put(pk.slab)
	}
}

// isUDP says whether an IP packet carries UDP (IPv4's protocol, IPv6's first next header).
func isUDP(b []byte) bool {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		return b[9] == syscall.IPPROTO_UDP
	case len(b) >= 40 && b[0]>>4 == 6:
		return b[6] == syscall.IPPROTO_UDP
	}
	return false
}
