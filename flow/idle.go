package flow

import (
	"sync"
	"sync/atomic"
	"time"
)

// idleTimer ends a flow that moved nothing for its idle timeout, for both relays: a timer,
// not a goroutine, so an idle flow costs nothing while it waits; each movement only
// records its time (touch).
type idleTimer struct {
	idle time.Duration
	last atomic.Int64 // when something last moved, in unix nanoseconds

	mu      sync.Mutex
	t       *time.Timer
	stopped bool // the flow has ended: the timer is not armed again
}

// newIdleTimer calls onIdle once nothing has moved (touch) for idle, counting from now.
func newIdleTimer(idle time.Duration, onIdle func()) *idleTimer {
	w := &idleTimer{idle: idle}
	w.touch()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t = time.AfterFunc(idle, func() { w.check(onIdle) })
	return w
}

// touch records that something moved now.
func (w *idleTimer) touch() { w.last.Store(time.Now().UnixNano()) }

// check calls onIdle if the flow has been quiet for the whole timeout, and otherwise waits
// for the rest of it.
func (w *idleTimer) check(onIdle func()) {
	quiet := time.Since(time.Unix(0, w.last.Load()))
	if quiet >= w.idle {
		onIdle()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Reset(w.idle - quiet)
	}
}

// stop disarms the timer for good, once the flow has ended.
func (w *idleTimer) stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}
