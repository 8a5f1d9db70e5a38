package quicmux

import (
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/internal/looptest"
)

// Waiting in tests. The tests wait for events (a channel, a log line, an error); these
// bounds only turn a hang into a failure with a message, and are far above the time anything
// takes even on a loaded machine with -race. Where a test checks that something happens
// promptly, it names the slower mechanism it must beat and stays well below it.
const (
	// hangLimit bounds a wait for an event that must come; it is not a measure of speed.
	hangLimit = 60 * time.Second
	// resetLimit bounds the wait for a reset that must come as a reset rather than by some
	// slower way: far above a reset's normal latency (milliseconds), and well below the
	// mechanisms it must beat: the client's wait for a status (3x its dial timeout, 9 s in
	// the harness), the 10 s default dial and header timeouts and the 60 s QUIC idle
	// timeout.
	resetLimit = 8 * time.Second
)

// waitFor polls cond every few milliseconds until it holds, and fails the test if it does
// not within hangLimit. It is the last resort, for states that announce themselves by no
// event (goroutine counts, metrics); what says what was awaited.
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	if !poll(cond) {
		t.Fatalf("%s: not within %v", what, hangLimit)
	}
}

// poll reports whether cond came to hold within hangLimit, checking every few milliseconds.
func poll(cond func() bool) bool {
	deadline := time.Now().Add(hangLimit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// await is looptest.Await, under the name this package's tests use.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return looptest.Await(t, ch, what)
}

// logEvents is a logrus hook that turns the code's own log lines into events a test can
// wait for: "reconnected to server" is the moment the client has a new connection.
type logEvents struct {
	mu   sync.Mutex
	seen map[string]int
	wake chan struct{} // closed and replaced on every line
}

// watchLog returns a test logger (lines go to t.Log) whose lines also reach the returned
// logEvents.
func watchLog(t testing.TB) (*logrus.Entry, *logEvents) {
	ev := &logEvents{seen: map[string]int{}, wake: make(chan struct{})}
	log := testLogger(t)
	log.Logger.AddHook(ev)
	return log, ev
}

func (ev *logEvents) Levels() []logrus.Level { return logrus.AllLevels }

func (ev *logEvents) Fire(e *logrus.Entry) error {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.seen[e.Message]++
	close(ev.wake)
	ev.wake = make(chan struct{})
	return nil
}

// wait waits until msg has been logged n times in all, and fails the test if that does not
// happen within hangLimit.
func (ev *logEvents) wait(t testing.TB, msg string, n int) {
	t.Helper()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	for {
		ev.mu.Lock()
		got, wake := ev.seen[msg], ev.wake
		ev.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-wake:
		case <-timer.C:
			t.Fatalf("%q logged %d times within %v, want %d", msg, got, hangLimit, n)
		}
	}
}

// count is how many times msg has been logged so far.
func (ev *logEvents) count(msg string) int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.seen[msg]
}
