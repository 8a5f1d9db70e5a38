package netstack

import (
	"testing"
	"time"
)

// hangLimit bounds a test's wait for an event that must come. It turns a hang into a
// failure with a message and is no measure of speed: it is far above the time anything
// takes, even on a loaded machine under -race.
const hangLimit = 60 * time.Second

// waitFor polls cond every few milliseconds until it holds, and fails the test if it does
// not within hangLimit. It is the last resort, for states that announce themselves by no
// event (counters); what says what was awaited.
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(hangLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, hangLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
