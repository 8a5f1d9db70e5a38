package looptest

import (
	"testing"
	"time"
)

// HangLimit bounds a test's wait for an event that must come: far above the time it takes
// even on a loaded machine with -race, it turns a hang into a failure and is no measure of
// speed.
const HangLimit = 60 * time.Second

// Await waits for ch to deliver (or close) and fails the test if it does not within
// HangLimit; what names the awaited event in the failure.
func Await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(HangLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: not within %v", what, HangLimit)
		panic("unreachable")
	}
}
