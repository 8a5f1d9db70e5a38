package netstack

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// payloadSize is the bulk transfer size of the data tests: smaller under -short and
// -race (which slows the gVisor path about 10x).
func payloadSize() int {
	if testing.Short() || raceEnabled {
		return 1 << 20
	}
	return 8 << 20
}

// echo copies everything read from c back to it, then half-closes it.
func echo(c net.Conn) error {
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return err
	}
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// checkEcho writes n random bytes to c, half-closes it and checks (by SHA-256) that the
// same bytes come back before EOF.
func checkEcho(t testing.TB, c net.Conn, n int) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	var g errgroup.Group
	g.Go(func() error {
		if _, err := c.Write(data); err != nil {
			return err
		}
		return c.(interface{ CloseWrite() error }).CloseWrite()
	})
	h := sha256.New()
	got, err := io.Copy(h, c)
	if werr := g.Wait(); werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	want := sha256.Sum256(data)
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echo: got %d bytes, want %d, digest match %v", got, n, bytes.Equal(h.Sum(nil), want[:]))
	}
}
