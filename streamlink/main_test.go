package streamlink

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the tests leave no goroutine behind: every Server, Conn and QUIC
// transport they start ends with its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
