package looptest

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// ExpectReset reads from c until it fails, and checks that it failed with a reset
// (flow.IsReset), not a clean EOF, within limit.
func ExpectReset(t testing.TB, c net.Conn, limit time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(limit + time.Second))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			t.Fatalf("got a clean EOF after %v, want a reset", time.Since(start))
		}
		if !flow.IsReset(err) {
			t.Fatalf("got %v after %v, want a reset", err, time.Since(start))
		}
		if d := time.Since(start); d > limit {
			t.Fatalf("reset took %v, want under %v", d, limit)
		}
		return
	}
}
