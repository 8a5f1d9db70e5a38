package streamlink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/looptest"
)

// guard bounds every wait of these tests, as looptest.Await's on a channel: an event that
// does not come within it fails the test (it is a hang guard, not a delay: nothing waits for
// it to pass).
const guard = looptest.HangLimit

// listen listens on 127.0.0.1 until the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// newServer serves a loopback listener with cfg until the test ends.
func newServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	srv := NewServer(listen(t), cfg)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Server.Close: %v", err)
		}
	})
	return srv
}

// dialTCP connects to addr from local (an IP address; "" for any) and closes the conn when
// the test ends.
func dialTCP(t *testing.T, addr net.Addr, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: guard}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialConn returns a Conn over a new TCP connection to addr, closed when the test ends.
func dialConn(t *testing.T, addr net.Addr) *Conn {
	t.Helper()
	return ownConn(t, dialTCP(t, addr, ""))
}

// ownConn returns the Conn over c, closed when the test ends.
func ownConn(t *testing.T, c net.Conn) *Conn {
	t.Helper()
	pc := NewConn(c)
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// pipeConn returns a Conn over one end of a net.Pipe and the other end. The other end is
// closed first when the test ends, so that closing the Conn does not wait for a peer that
// does not read.
func pipeConn(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	pc := ownConn(t, a)
	t.Cleanup(func() { _ = b.Close() })
	return pc, b
}

// send writes p to addr on pc and checks that it was taken whole.
func send(t *testing.T, pc net.PacketConn, p []byte, addr net.Addr) {
	t.Helper()
	n, err := pc.WriteTo(p, addr)
	if err != nil || n != len(p) {
		t.Fatalf("WriteTo(%d bytes, %v) = %d, %v; want %d, nil", len(p), addr, n, err, len(p))
	}
}

// recvConn reads c's next packet and checks that it comes from the stream's far end.
func recvConn(t *testing.T, c *Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(guard))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	p := make([]byte, MaxPacket)
	n, addr, err := c.ReadFrom(p)
	if err != nil {
		t.Fatalf("Conn.ReadFrom: %v", err)
	}
	if addr == nil || addr.String() != c.RemoteAddr().String() {
		t.Fatalf("Conn.ReadFrom: packet from %v, want %v", addr, c.RemoteAddr())
	}
	return p[:n]
}

// recvServer reads srv's next packet.
func recvServer(t *testing.T, srv *Server) ([]byte, net.Addr) {
	t.Helper()
	_ = srv.SetReadDeadline(time.Now().Add(guard))
	defer func() { _ = srv.SetReadDeadline(time.Time{}) }()
	p := make([]byte, MaxPacket)
	n, addr, err := srv.ReadFrom(p)
	if err != nil {
		t.Fatalf("Server.ReadFrom: %v", err)
	}
	return p[:n], addr
}

// expectEOF checks that c's stream ends (cleanly, at a frame boundary) with no packet
// before its end.
func expectEOF(t *testing.T, c *Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(guard))
	p := make([]byte, MaxPacket)
	n, _, err := c.ReadFrom(p)
	if err != io.EOF {
		t.Fatalf("Conn.ReadFrom = %d bytes, %v; want the stream's end (io.EOF)", n, err)
	}
}

// waitDone waits for ctx to end.
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	looptest.Await(t, ctx.Done(), what)
}

// sameAddr checks that a and b are the same address.
func sameAddr(t *testing.T, what string, a, b net.Addr) {
	t.Helper()
	if a == nil || b == nil || a.String() != b.String() {
		t.Fatalf("%s: %v, want %v", what, a, b)
	}
}

// rejection is one call of ServerConfig.Rejected.
type rejection struct {
	peer   string
	reason string
	err    error
}

// rejections records the Rejected calls of a server.
type rejections chan rejection

// newRejections returns a recorder and the ServerConfig.Rejected func that feeds it.
func newRejections() (rejections, func(net.Addr, string, error)) {
	r := make(rejections, 64)
	return r, func(peer net.Addr, reason string, err error) {
		select {
		case r <- rejection{peer: peer.String(), reason: reason, err: err}:
		default: // Rejected must not block; 64 is more than any test makes
		}
	}
}

// next waits for the next rejection and checks its peer and reason.
func (r rejections) next(t *testing.T, peer net.Addr, reason string) rejection {
	t.Helper()
	got := looptest.Await(t, r, "Rejected("+reason+")")
	if got.peer != peer.String() || got.reason != reason {
		t.Fatalf("Rejected(%s, %q, %v); want (%v, %q)", got.peer, got.reason, got.err, peer, reason)
	}
	return got
}

// none checks that no rejection is waiting.
func (r rejections) none(t *testing.T) {
	t.Helper()
	select {
	case got := <-r:
		t.Fatalf("unexpected Rejected(%s, %q, %v)", got.peer, got.reason, got.err)
	default:
	}
}

// packet returns a packet of n bytes (n >= 4) that starts with seq and whose content
// depends on both.
func packet(seq uint32, n int) []byte {
	p := make([]byte, n)
	binary.BigEndian.PutUint32(p, seq)
	for i := 4; i < n; i++ {
		p[i] = byte(uint32(i)*31 + seq*7)
	}
	return p
}

// readFrames reads frames from r until it ends, and returns them and the error that ended
// them.
func readFrames(r io.Reader) ([][]byte, error) {
	fr := frameReader{r: bufio.NewReaderSize(r, readBuffer)}
	var frames [][]byte
	p := make([]byte, MaxPacket)
	for {
		n, err := fr.readFrame(p)
		if err != nil {
			return frames, err
		}
		frames = append(frames, bytes.Clone(p[:n]))
	}
}
