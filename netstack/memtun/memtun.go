// Package memtun provides an in-memory pair of tun.Devices for tests and benchmarks that
// must run without root: what one end writes, the other reads, in batches.
package memtun

import (
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// Pipe returns two connected devices with the given MTU and BatchSize. Each direction
// holds up to queueLen packets; a Write blocks while its direction is full (back-pressure,
// as a kernel TUN queue would give), and drops packets once the reading end is closed.
// Closing a device makes its own Read and Write return os.ErrClosed; the peer is left open.
func Pipe(mtu, batch, queueLen int) (a, b tun.Device) {
	ab, ba := newQueue(queueLen), newQueue(queueLen)
	return newDevice(mtu, batch, ba, ab), newDevice(mtu, batch, ab, ba)
}

// queue is one direction of the pipe.
type queue struct {
	mu     sync.Mutex
	cond   sync.Cond
	pkts   []*[]byte
	limit  int
	closed bool // the reading end is closed
}

func newQueue(limit int) *queue {
	q := &queue{limit: max(limit, 1)}
	q.cond.L = &q.mu
	return q
}

// pool holds packet buffers of the largest IP packet size.
var pool = sync.Pool{New: func() any { b := make([]byte, 0, 65535); return &b }}

type device struct {
	mtu, batch int
	in, out    *queue
	events     chan tun.Event

	closeOnce sync.Once
	mu        sync.Mutex
	closed    bool
}

var _ tun.Device = (*device)(nil)

func newDevice(mtu, batch int, in, out *queue) *device {
	d := &device{mtu: mtu, batch: max(batch, 1), in: in, out: out, events: make(chan tun.Event, 1)}
	d.events <- tun.EventUp
	return d
}

func (d *device) File() *os.File           { return nil }
func (d *device) MTU() (int, error)        { return d.mtu, nil }
func (d *device) Name() (string, error)    { return "memtun", nil }
func (d *device) Events() <-chan tun.Event { return d.events }
func (d *device) BatchSize() int           { return d.batch }

func (d *device) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Read blocks until at least one packet is queued, then returns up to len(bufs).
func (d *device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	q := d.in
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pkts) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(bufs) && n < len(q.pkts) {
		p := q.pkts[n]
		sizes[n] = copy(bufs[n][offset:], *p)
		pool.Put(p)
		q.pkts[n] = nil
		n++
	}
	q.pkts = q.pkts[n:]
	q.cond.Broadcast() // room for writers
	return n, nil
}

// Write queues copies of bufs[i][offset:], blocking while the direction is full.
func (d *device) Write(bufs [][]byte, offset int) (int, error) {
	if d.isClosed() {
		return 0, os.ErrClosed
	}
	q := d.out
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, b := range bufs {
		for len(q.pkts) >= q.limit && !q.closed {
			q.cond.Wait()
			if d.isClosed() {
				return i, os.ErrClosed
			}
		}
		if q.closed {
			return len(bufs), nil // nobody reads: the packets are lost on the wire
		}
		p := pool.Get().(*[]byte)
		*p = append((*p)[:0], b[offset:]...)
		q.pkts = append(q.pkts, p)
	}
	q.cond.Broadcast()
	return len(bufs), nil
}

// Close ends this device: its Read and Write return os.ErrClosed, a Write blocked on a
// full queue included.
func (d *device) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.in.mu.Lock()
		d.in.closed = true
		for _, p := range d.in.pkts {
			pool.Put(p)
		}
		d.in.pkts = nil
		d.in.cond.Broadcast()
		d.in.mu.Unlock()
		// Wake our own writers blocked on the peer's full queue.
		d.out.mu.Lock()
		d.out.cond.Broadcast()
		d.out.mu.Unlock()
		close(d.events)
	})
	return nil
}
