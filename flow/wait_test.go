package flow

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// hangLimit bounds a wait for an event that must come; it is not a measure of speed (as in
// quicmux's tests).
const hangLimit = 60 * time.Second

// await waits for ch to deliver (or close) and fails the test if it does not within
// hangLimit.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: not within %v", what, hangLimit)
		panic("unreachable")
	}
}
