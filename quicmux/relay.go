package quicmux

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Buffers. A direction reads into a small buffer of its own while its flow is quiet, and
// takes a large pooled buffer only once a read fills the small one; it gives the large one
// back when a read brings less than the small buffer would have held (the flow has gone
// quiet or interactive, and the next read will likely wait). So 10,000 idle flows hold 1 KiB
// a direction, and a bulk flow moves up to 64 KiB a call.
const (
	smallBufSize = 1 << 10
	largeBufSize = 64 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBufSize); return &b }}

// RelayStats counts the bytes a relay moved each way.
type RelayStats struct {
	AtoB, BtoA int64
}

// RelayOptions tunes a relay. The zero value is a plain relay.
type RelayOptions struct {
	// IdleTimeout resets the flow on both sides when no byte has moved either way for this
	// long; zero means never.
	IdleTimeout time.Duration
	// AtoB and BtoA, if set, are told of every chunk moved, as it moves (live byte counters).
	AtoB, BtoA func(n int)
}

// Relay moves bytes both ways between a and b until both directions end, and is the one
// place that closes them; it uses only the FlowConn contract. An EOF on one side becomes
// CloseWrite on the other (a stream FIN or a TCP FIN); any other error on either side, or ctx
// ending, aborts both sides (a TCP RST or a stream reset), so the far end never mistakes a
// failure for a clean end. Relay returns the first error that ended the flow, or nil when both
// directions finished cleanly.
//
// The calling goroutine copies a to b; one more goroutine copies b to a, so a flow costs two
// goroutines on each side of the tunnel.
func Relay(ctx context.Context, a, b FlowConn) (RelayStats, error) {
	return RelayWith(ctx, a, b, RelayOptions{})
}

// RelayWith is Relay with options.
func RelayWith(ctx context.Context, a, b FlowConn, opt RelayOptions) (RelayStats, error) {
	r := &relay{a: a, b: b}
	// ctx ending is a failure like any other: it is recorded (so the flow's result says why)
	// and both sides are reset.
	stop := context.AfterFunc(ctx, func() { r.fail(context.Cause(ctx)) })
	var activity *atomic.Int64
	var idle *time.Timer
	if opt.IdleTimeout > 0 {
		activity = new(atomic.Int64)
		activity.Store(time.Now().UnixNano())
		idle = r.watchIdle(opt.IdleTimeout, activity)
	}

	done := make(chan struct{})
	go r.copyBtoA(done, activity, opt.BtoA)
	n, err := copyHalf(a, b, activity, opt.AtoB)
	r.atob = n
	r.fail(err)
	<-done

	// From here on nothing may reset the flow: a flow that ended cleanly has sent its FINs,
	// and a reset now would abort their delivery.
	r.mu.Lock()
	r.finished = true
	err = r.err
	r.mu.Unlock()
	stop()
	if idle != nil {
		idle.Stop()
	}
	_ = a.Close()
	_ = b.Close()
	return RelayStats{AtoB: r.atob, BtoA: r.btoa}, err
}

// watchIdle resets the flow once activity is older than idle. It holds a timer, not a
// goroutine, so idle flows cost nothing while they wait.
func (r *relay) watchIdle(idle time.Duration, activity *atomic.Int64) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(idle, func() {
		quiet := time.Since(time.Unix(0, activity.Load()))
		if quiet >= idle {
			r.fail(ErrFlowIdle)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.finished {
			t.Reset(idle - quiet)
		}
	})
	return t
}

type relay struct {
	a, b       FlowConn
	atob, btoa int64
	abortOnce  sync.Once

	mu       sync.Mutex
	err      error // the first error that ended the flow
	finished bool  // both directions are done; no more resets
}

// copyBtoA runs in its own goroutine; the name keeps goroutine dumps readable.
func (r *relay) copyBtoA(done chan<- struct{}, activity *atomic.Int64, count func(int)) {
	defer close(done)
	n, err := copyHalf(r.b, r.a, activity, count)
	r.btoa = n
	r.fail(err)
}

// fail records err and, for a real error, resets both sides at once so that the other
// direction, blocked in a read, ends too.
func (r *relay) fail(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return
	}
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.abortBoth()
}

func (r *relay) abortBoth() {
	r.abortOnce.Do(func() { r.a.Abort(); r.b.Abort() })
}

// copyHalf copies src to dst; a clean EOF from src shuts dst's send side and returns nil.
func copyHalf(src, dst FlowConn, activity *atomic.Int64, count func(int)) (int64, error) {
	small := make([]byte, smallBufSize)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	var n int64
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if activity != nil {
				activity.Store(time.Now().UnixNano())
			}
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if count != nil && nw > 0 {
				count(nw)
			}
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case large == nil && nr == len(buf):
			large = largeBufs.Get().(*[]byte)
		case large != nil && nr < smallBufSize:
			// A trickle: the flow has gone quiet or interactive, so the next read will
			// likely wait; wait without holding 64 KiB.
			largeBufs.Put(large)
			large = nil
		}
		if rerr == io.EOF {
			if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
				return n, err
			}
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// IsReset reports whether err means the other end reset the flow.
func IsReset(err error) bool {
	return errors.Is(err, ErrFlowReset) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
