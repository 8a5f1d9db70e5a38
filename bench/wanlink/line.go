package wanlink

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Params describe one direction of the emulated link.
type Params struct {
	// Rate is the bottleneck's rate in bit/s, counting whole IP packets; 0 means no limit
	// (and no queue).
	Rate int64
	// Queue is how many bytes the bottleneck holds: the packet being serialized and those
	// waiting behind it. A packet that would take it past this is dropped (tail drop).
	Queue int
	// Delay is the one-way propagation delay, added after serialization.
	Delay time.Duration
	// Loss is the probability that a packet is lost, independently of every other one. A lost
	// packet is dropped on arrival, before the queue, so it takes no link capacity (as netem).
	Loss float64
	// Seed makes the losses reproducible.
	Seed uint64
}

// Validate checks p.
func (p Params) Validate() error {
	switch {
	case p.Rate < 0:
		return fmt.Errorf("wanlink: negative rate %d", p.Rate)
	case p.Rate > 0 && p.Queue <= 0:
		return fmt.Errorf("wanlink: a rate needs a queue of at least one packet (queue %d bytes)", p.Queue)
	case p.Delay < 0:
		return fmt.Errorf("wanlink: negative delay %v", p.Delay)
	case p.Loss < 0 || p.Loss >= 1:
		return fmt.Errorf("wanlink: loss %v is not in [0, 1)", p.Loss)
	}
	return nil
}

// Verdict is what became of a packet offered to a Line.
type Verdict int

const (
	Queued    Verdict = iota // accepted; it will be due at the returned time
	QueueFull                // tail-dropped: the bottleneck queue was full
	Lost                     // dropped by random loss
)

// Line is one direction of the link: a FIFO of packets with the time each is due at the far
// end. It is not safe for concurrent use, and reads no clock: every call takes the time.
// Packets come out in the order they went in (their due times never decrease).
type Line[P any] struct {
	p   Params
	rng *rand.Rand
	// busyUntil is when the bottleneck will have serialized every packet accepted so far;
	// rem carries the remainder of the integer division that gave it, so that the rate is
	// exact over any number of packets.
	busyUntil time.Time
	rem       int64
	q         ring[P]
}

// NewLine returns an empty line.
func NewLine[P any](p Params) (*Line[P], error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Line[P]{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}, nil
}

// Params returns the line's parameters.
func (l *Line[P]) Params() Params { return l.p }

// Backlog is how many bytes are at the bottleneck at now (queued or being serialized).
func (l *Line[P]) Backlog(now time.Time) int {
	if l.p.Rate == 0 || !l.busyUntil.After(now) {
		return 0
	}
	left := l.busyUntil.Sub(now)
	return int((int64(left)*l.p.Rate + 8e9 - 1) / 8e9) // rounded up: a partly sent byte is still there
}

// Push offers a packet of size bytes that arrives at now. When it is Queued, the line keeps
// pkt until Pop hands it back, and due is when it reaches the far end.
func (l *Line[P]) Push(now time.Time, size int, pkt P) (v Verdict, due time.Time) {
	if l.p.Loss > 0 && l.rng.Float64() < l.p.Loss {
		return Lost, time.Time{}
	}
	out := now
	if l.p.Rate > 0 {
		if l.Backlog(now)+size > l.p.Queue {
			return QueueFull, time.Time{}
		}
		start := now
		if l.busyUntil.After(now) {
			start = l.busyUntil
		} else {
			l.rem = 0 // the link went idle: no part of a nanosecond is owed
		}
		num := int64(size)*8*1e9 + l.rem
		l.busyUntil = start.Add(time.Duration(num / l.p.Rate))
		l.rem = num % l.p.Rate
		out = l.busyUntil
	}
	due = out.Add(l.p.Delay)
	l.q.push(entry[P]{due: due, size: size, pkt: pkt})
	return Queued, due
}

// Next is when the first packet is due; ok is false when the line is empty.
func (l *Line[P]) Next() (due time.Time, ok bool) {
	if l.q.len() == 0 {
		return time.Time{}, false
	}
	return l.q.front().due, true
}

// Pop appends to out, in order, up to max packets that are due at now, and returns it.
func (l *Line[P]) Pop(now time.Time, out []P, max int) []P {
	for n := 0; n < max && l.q.len() > 0 && !l.q.front().due.After(now); n++ {
		out = append(out, l.q.pop().pkt)
	}
	return out
}

// Len is the number of packets in the line (at the bottleneck or in flight after it).
func (l *Line[P]) Len() int { return l.q.len() }

type entry[P any] struct {
	due  time.Time
	size int
	pkt  P
}

// ring is a growable FIFO.
type ring[P any] struct {
	buf        []entry[P]
	head, size int
}

func (r *ring[P]) len() int { return r.size }

func (r *ring[P]) push(e entry[P]) {
	if r.size == len(r.buf) {
		n := max(64, 2*len(r.buf))
		buf := make([]entry[P], n)
		for i := range r.size {
			buf[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = buf, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = e
	r.size++
}

func (r *ring[P]) front() *entry[P] { return &r.buf[r.head] }

func (r *ring[P]) pop() entry[P] {
	e := r.buf[r.head]
	var zero entry[P]
	r.buf[r.head] = zero // let the packet go
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return e
}
