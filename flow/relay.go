package flow

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// bufSize is the size of the pooled buffers a direction reads into while bytes move.
const bufSize = 64 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// readNotifier is the optional part of the flow contract that lets a relay direction wait
// for an idle end with neither a goroutine nor a buffer: NotifyReadable(f) calls f once, as
// soon as a Read would not block (a byte, a FIN, a reset, the end closed or aborted) — at
// once if that is so already, else on whatever goroutine made it so, which f must not block.
// A QUIC stream has it (through quicgate's quic-go fork) and so does a netstack flow.
type readNotifier interface{ NotifyReadable(f func()) }

// readableChecker says whether a Read would return at once (a QUIC stream, a netstack flow).
type readableChecker interface{ Readable() bool }

// rawConner is a kernel socket: a relay direction waits for it in Go's netpoller with a
// small goroutine that holds no buffer.
type rawConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// Stats counts the bytes a relay moved each way.
type Stats struct {
	AtoB, BtoA int64
}

// RelayOptions tunes a relay. The zero value is a plain relay.
type RelayOptions struct {
	// IdleTimeout resets the flow on both sides when no byte has moved either way for this
	// long; zero means never.
	IdleTimeout time.Duration
	// AtoB and BtoA, if set, are told of every chunk moved, as it moves (live byte counters).
	AtoB, BtoA func(n int)

	// Until, if set, ends the flow with a reset when it ends, as ctx does: the client's QUIC
	// connection, whose end a half-closed or quiet flow, with nothing waiting on its stream,
	// would not otherwise notice.
	Until context.Context
	// UntilErr, if set, turns Until's cause into the error the flow ends with: the client's
	// maps a lost or closed connection to an error matching IsReset. Without it the flow
	// ends with the cause as it is.
	UntilErr func(cause error) error

	// Parker, if set, parks idle kernel sockets in one epoll set instead of a goroutine
	// each (the client's and the server's own).
	Parker *Parker
}

// Relay moves bytes both ways between a and b until both directions end, and is the one
// place that closes them; it uses only the Conn contract. An EOF on one side becomes
// CloseWrite on the other (a stream FIN or a TCP FIN); any other error on either side, or ctx
// ending, aborts both sides (a TCP RST or a stream reset), so the far end never mistakes a
// failure for a clean end. Relay returns the first error that ended the flow, or nil when both
// directions finished cleanly.
func Relay(ctx context.Context, a, b Conn) (Stats, error) {
	return RelayWith(ctx, a, b, RelayOptions{})
}

// RelayWith is Relay with options.
func RelayWith(ctx context.Context, a, b Conn, opt RelayOptions) (Stats, error) {
	type result struct {
		stats Stats
		err   error
	}
	done := make(chan result, 1)
	StartRelay(ctx, a, b, opt, func(s Stats, err error) { done <- result{s, err} })
	r := <-done
	return r.stats, r.err
}

// StartRelay is Relay without waiting: it starts the flow and returns at once, and calls done
// once, on another goroutine, after both directions have ended and a and b are closed. The
// function it returns resets the flow with err as its result (as ctx ending does); after
// the flow has ended it does nothing.
//
// A direction holds a pooled 64 KiB buffer only while bytes move. While its source is idle
// it holds no buffer, and no goroutine either when the source can say when it becomes
// readable (readNotifier: a QUIC stream, a netstack flow; a goroutine of a small pool,
// spawn, then moves each burst) or is a kernel socket idle for longer than hotWait, which
// the client's or server's parker then watches (one epoll set for all); without a parker, a
// kernel socket is waited for by a goroutine in Go's netpoller. So an idle flow costs no
// goroutine on either side of the tunnel.
func StartRelay(ctx context.Context, a, b Conn, opt RelayOptions, done func(Stats, error)) (abort func(err error)) {
	r := &relay{a: a, b: b, done: done, parker: opt.Parker}
	// Until the relay is set up, nothing may fail it or end it: a ctx already done, or a
	// direction ending at once, waits for r.mu.
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending.Store(2)
	if opt.IdleTimeout > 0 {
		r.idle = newIdleTimer(opt.IdleTimeout, func() { r.fail(ErrIdle) })
	}
	// ctx ending is a failure like any other: it is recorded (so the flow's result says why)
	// and both sides are reset.
	r.stop = context.AfterFunc(ctx, func() { r.fail(context.Cause(ctx)) })
	if opt.Until != nil {
		// A lost or closed connection reads as a reset of the flow (opt.UntilErr).
		r.stopUntil = context.AfterFunc(opt.Until, func() { r.fail(untilErr(opt, context.Cause(opt.Until))) })
	}
	r.start(&r.atob, a, b, opt.AtoB)
	r.start(&r.btoa, b, a, opt.BtoA)
	return r.fail
}

type relay struct {
	a, b      Conn
	done      func(Stats, error)
	parker    *Parker     // nil: kernel sockets wait in a goroutine each
	aborting  atomic.Bool // fail is resetting the flow: park no more
	idle      *idleTimer  // nil: no idle timeout
	stop      func() bool
	stopUntil func() bool  // nil without RelayOptions.Until
	pending   atomic.Int32 // directions still running
	abortOnce sync.Once

	atob, btoa dir

	mu       sync.Mutex
	err      error // the first error that ended the flow
	finished bool  // both directions are done; no more resets
}

// dir is one direction's state.
type dir struct {
	r     *relay
	src   Conn
	dst   Conn
	n     int64
	count func(int)
	wake  func()          // starts a drain (readNotifier) or a run (parked kernel socket)
	rc    syscall.RawConn // a kernel socket's
	dl    deadliner       // the kernel socket, when a parker can take it once it idles
}

// deadliner bounds how long a kernel socket's direction waits in the netpoller.
type deadliner interface{ SetReadDeadline(t time.Time) error }

// hotWait is how long a kernel socket's direction waits for its next bytes in Go's netpoller,
// holding a goroutine but no buffer, before it hands the socket to the parker and the
// goroutine ends. A request/response flow whose next message comes within it is served
// without the parker's extra wake-up (which doubled a loopback round trip, 0.27 ms to
// 0.6 ms); a flow idle for longer costs no goroutine. Longer is not better: the stacks of
// flows that were recently active stay resident (250 ms: 10,000 idle -L flows +96-101 MiB;
// 50 ms: +89-91 MiB, with the same round trip).
const hotWait = 50 * time.Millisecond

// start runs a direction in the cheapest way its source allows.
func (r *relay) start(d *dir, src, dst Conn, count func(int)) {
	*d = dir{r: r, src: src, dst: dst, count: count}
	switch s := src.(type) {
	case readNotifier:
		d.wake = func() { spawn(d.drain) }
		s.NotifyReadable(d.wake)
	case rawConner:
		rc, err := s.SyscallConn()
		if err != nil {
			go d.end(err)
			return
		}
		d.rc = rc
		if dl, ok := src.(deadliner); ok && r.parker != nil {
			d.dl = dl
		}
		d.wake = func() { spawn(d.run) }
		spawn(d.run)
	default:
		go d.copyBlocking()
	}
}

// The bursts of every relay run on a pool of goroutines (spawn): a burst of a new flow, or
// of one woken from idle, then runs on a goroutine whose stack has grown already, where a
// new goroutine starts with a small stack that a deep write path (gVisor's TCP send, when the
// destination is a netstack flow; the QUIC stream's) grows by copying, once per burst: 7 %
// of a TUN client's CPU at thousands of new flows a second. The pool holds no burst back: a
// burst that finds no idle goroutine starts one, and a goroutine idle for workerIdle ends,
// so an idle client keeps none of them.
var idleWorkers = make(chan func())

// workerIdle is how long a pool goroutine waits for its next burst before it ends.
const workerIdle = 100 * time.Millisecond

// spawn runs f on an idle pool goroutine, or on a new one.
func spawn(f func()) {
	select {
	case idleWorkers <- f:
	default:
		go work(f)
	}
}

// work runs f, then the bursts handed to it while it waits idle, until it has waited for
// workerIdle.
func work(f func()) {
	var idle *time.Timer
	for {
		f()
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case f = <-idleWorkers:
			idle.Stop()
		case <-idle.C:
			return
		}
	}
}

// forward writes p, just read from src, to dst: it marks the flow active (for the idle
// timeout) and counts what was written.
func (d *dir) forward(p []byte) error {
	if d.r.idle != nil {
		d.r.idle.touch()
	}
	nw, err := d.dst.Write(p)
	d.n += int64(nw)
	if d.count != nil && nw > 0 {
		d.count(nw)
	}
	return err
}

// drain reads a notifying source while it has bytes, then asks to be woken again and exits.
func (d *dir) drain() {
	src := d.src.(readNotifier)
	for {
		// A wake-up can come late, for bytes an earlier drain already read: then re-arm
		// rather than wait in Read with a buffer.
		if r, ok := src.(readableChecker); ok && !r.Readable() {
			src.NotifyReadable(d.wake)
			return
		}
		bp := bufs.Get().(*[]byte)
		nr, rerr := d.src.Read(*bp)
		if nr > 0 {
			if werr := d.forward((*bp)[:nr]); werr != nil {
				bufs.Put(bp)
				d.end(werr)
				return
			}
		}
		bufs.Put(bp)
		switch {
		case rerr == io.EOF:
			d.end(closeWrite(d.dst))
			return
		case rerr != nil:
			d.end(rerr)
			return
		case nr < bufSize:
			// Drained for now. If bytes came meanwhile, wake runs at once and a new drain
			// starts; either way this one is done.
			src.NotifyReadable(d.wake)
			return
		}
	}
}

// run moves a kernel socket's bytes while they come, and waits for more in Go's netpoller —
// for hotWait when a parker can take the socket after it (run then parks it and ends; the
// parker starts run again), else for as long as it takes. A read goes into a pooled buffer
// taken for the system call alone, so the wait holds none; and since the read happens
// inside RawConn.Read, whose readiness state is reset before the first attempt, bytes that
// come between an empty read and the wait cannot be missed.
func (d *dir) run() {
	var (
		bp   *[]byte
		nr   int
		rerr error
	)
	read := func(fd uintptr) bool {
		if bp == nil {
			bp = bufs.Get().(*[]byte)
		}
		for {
			nr, rerr = syscall.Read(int(fd), *bp)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			bufs.Put(bp)
			bp = nil
			return false // wait for readiness, holding no buffer
		}
		return true
	}
	defer func() {
		if bp != nil {
			bufs.Put(bp)
		}
	}()
	hot := d.dl != nil
	for {
		if hot {
			_ = d.dl.SetReadDeadline(time.Now().Add(hotWait))
		}
		err := d.rc.Read(read)
		if hot && errors.Is(err, os.ErrDeadlineExceeded) {
			_ = d.dl.SetReadDeadline(time.Time{})
			if d.park() {
				return
			}
			hot = false // the parker is closed: wait here from now on
			continue
		}
		switch {
		case err != nil:
			d.end(err)
			return
		case rerr != nil:
			d.end(rerr)
			return
		case nr == 0:
			d.end(closeWrite(d.dst))
			return
		}
		if werr := d.forward((*bp)[:nr]); werr != nil {
			d.end(werr)
			return
		}
	}
}

// park hands an idle kernel socket to the parker, which starts run again once it is
// readable. It reports false if it could not (the relay is being reset, or the parker is
// closed because the client is shutting down): the caller then waits in the netpoller. The
// parker checks aborting under the lock fail's unpark takes, so a socket is either found
// there by fail (which then starts the run that ends the direction) or never parked.
func (d *dir) park() bool {
	return d.r.parker.parkUnless(d.rc, d.wake, &d.r.aborting) == nil
}

// copyBlocking is the plain direction, for a source that can neither notify nor be polled: a
// goroutine blocked in Read. It reads into a small buffer of its own while the flow is quiet,
// takes a pooled one once a read fills the small one, and gives that back when a read brings
// less than the small buffer would have held.
func (d *dir) copyBlocking() {
	const smallSize = 1 << 10
	small := make([]byte, smallSize)
	var large *[]byte
	defer func() {
		if large != nil {
			bufs.Put(large)
		}
	}()
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		nr, rerr := d.src.Read(buf)
		if nr > 0 {
			if werr := d.forward(buf[:nr]); werr != nil {
				d.end(werr)
				return
			}
		}
		switch {
		case large == nil && nr == len(buf):
			large = bufs.Get().(*[]byte)
		case large != nil && nr < smallSize:
			bufs.Put(large)
			large = nil
		}
		if rerr == io.EOF {
			d.end(closeWrite(d.dst))
			return
		}
		if rerr != nil {
			d.end(rerr)
			return
		}
	}
}

// closeWrite passes an orderly end on; an end already closed by an abort is no new error.
func closeWrite(dst Conn) error {
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// end finishes a direction: a real error resets the flow; the last direction to end closes
// both sides and reports.
func (d *dir) end(err error) {
	r := d.r
	r.fail(err)
	if r.pending.Add(-1) != 0 {
		return
	}
	// From here on nothing may reset the flow: a flow that ended cleanly has sent its FINs,
	// and a reset now would abort their delivery.
	r.mu.Lock()
	r.finished = true
	err = r.err
	r.mu.Unlock()
	r.stop()
	if r.stopUntil != nil {
		r.stopUntil()
	}
	if r.idle != nil {
		r.idle.stop()
	}
	_ = r.a.Close()
	_ = r.b.Close()
	r.done(Stats{AtoB: r.atob.n, BtoA: r.btoa.n}, err)
}

// fail records err and, for a real error, resets both sides at once so that the other
// direction, blocked in a read or waiting to be woken, ends too.
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
	r.abortOnce.Do(func() {
		// A parked socket must leave the parker before it is closed, so that no later
		// socket reusing its descriptor number is taken for it; a run then ends the
		// direction on the closed socket.
		r.aborting.Store(true)
		var parked []*dir
		for _, d := range []*dir{&r.atob, &r.btoa} {
			if d.dl != nil && r.parker.unpark(d.rc) {
				parked = append(parked, d)
			}
		}
		r.a.Abort()
		r.b.Abort()
		for _, d := range parked {
			spawn(d.run) // finds the socket closed and ends the direction
		}
	})
}

// untilErr is the error a flow ends with when opt.Until ends with cause.
func untilErr(opt RelayOptions, cause error) error {
	if opt.UntilErr != nil {
		return opt.UntilErr(cause)
	}
	return cause
}

// IsReset reports whether err means the other end reset the flow.
func IsReset(err error) bool {
	return errors.Is(err, ErrReset) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
