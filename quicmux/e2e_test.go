package quicmux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"golang.org/x/sync/errgroup"
)

// A request whose sender shuts its write side gets the whole reply: the app's FIN crosses
// the tunnel as a stream FIN, and the reply comes back after it.
func TestHalfClosedRequest(t *testing.T) {
	tn := newTunnel(t)
	dst := destination(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c) // until the client's FIN
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes: %s", len(got), got)
		_ = c.CloseWrite()
	})
	for name, dial := range map[string]func() (net.Conn, error){
		"-L": func() (net.Conn, error) { return net.Dial("tcp", tn.forward(dst)) },
		"DialContext": func() (net.Conn, error) {
			return tn.client.DialContext(context.Background(), "tcp", dst)
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(hangLimit))
			reply, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(reply) != "got 5 bytes: hello" {
				t.Fatalf("reply %q", reply)
			}
		})
	}
}

// A large transfer both ways at once arrives intact: the echo's reply hashes the same as
// what was sent.
func TestBulkTransferBothWays(t *testing.T) {
	size := int64(256 << 20)
	if raceEnabled || testing.Short() {
		size = 16 << 20
	}
	tn := newTunnel(t)
	local := tn.forward(destination(t, echo))
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))

	var g errgroup.Group
	sent := sha256.New()
	g.Go(func() error {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), sent)
		if _, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil {
			return err
		}
		return c.(*net.TCPConn).CloseWrite()
	})
	got := sha256.New()
	var n int64
	g.Go(func() error {
		var err error
		n, err = io.CopyBuffer(got, c, make([]byte, 256<<10))
		return err
	})
	start := time.Now()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("received %d bytes, sent %d", n, size)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatal("SHA-256 of the echo differs from what was sent")
	}
	t.Logf("%d MiB each way in %v", size>>20, time.Since(start).Round(time.Millisecond))
}

// 1,000 flows at once share the one QUIC connection.
func TestThousandConcurrentFlows(t *testing.T) {
	const flows = 1000
	tn := newTunnel(t)
	local := tn.forward(destination(t, echo))
	var g errgroup.Group
	for i := range flows {
		g.Go(func() error {
			c, err := net.Dial("tcp", local)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			msg := fmt.Sprintf("flow %d", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
			_ = c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				return fmt.Errorf("flow %d: %w", i, err)
			}
			if string(got) != msg {
				return fmt.Errorf("flow %d got %q", i, got)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := tn.client.Dials(); n != 1 {
		t.Fatalf("client made %d connections, want 1", n)
	}
}

// Refused, denied, unreachable and timed-out destinations reach the app at once: as a reset
// on a -L connection, and as the matching error from DialContext.
func TestFailedDestinations(t *testing.T) {
	hang := netip.MustParseAddrPort("127.0.0.9:9")
	unreach := netip.MustParseAddrPort("127.0.0.10:10")
	tn := newTunnel(t,
		withRules("127.0.0.1/32", "127.0.0.9/32", "127.0.0.10/32", "allowed.test"),
		withDialTimeout(300*time.Millisecond),
		withDialer(dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
			switch address {
			case hang.String():
				<-ctx.Done()
				return nil, ctx.Err()
			case unreach.String():
				return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.EHOSTUNREACH}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		})),
		withResolver(resolverFunc(func(ctx context.Context, _, host string) ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		})),
	)
	tests := []struct {
		name   string
		target string
		want   error
	}{
		{"refused", closedPort(t), syscall.ECONNREFUSED},
		{"denied", "127.0.0.2:80", ErrDenied},
		{"denied name", "example.com:80", ErrUnreachable}, // a name the policy cannot judge without resolving, and it does not resolve
		{"unreachable", unreach.String(), ErrUnreachable},
		{"timed out", hang.String(), ErrTimedOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := tn.forward(tt.target)
			// The reset can come so fast that it lands on the dial itself.
			c, err := net.Dial("tcp", local)
			if err != nil && !flow.IsReset(err) {
				t.Fatal(err)
			}
			if err == nil {
				defer c.Close()
				// Payload sent before the status. The reset can also land before this write,
				// which then reports it (and the read after it sees only the end).
				if _, werr := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); werr != nil {
					if !flow.IsReset(werr) {
						t.Fatalf("write: %v, want a reset or nothing", werr)
					}
				} else {
					expectReset(t, c, resetLimit)
				}
			}

			// The answers come within the server's 300 ms dial timeout; the bound leaves room
			// for a loaded machine and stays below the client's 9 s wait for a status and the
			// 10 s default dial timeout.
			start := time.Now()
			_, err = tn.client.DialContext(context.Background(), "tcp", tt.target)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DialContext error %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > resetLimit {
				t.Fatalf("DialContext took %v", d)
			}
		})
	}
}

// Name targets: a name the rules allow is dialed; a name that resolves only to addresses the
// rules forbid is denied, so a name cannot smuggle in an address.
func TestNamePolicy(t *testing.T) {
	dst := netip.MustParseAddrPort(destination(t, echo))
	tn := newTunnel(t,
		withRules(fmt.Sprintf("127.0.0.1/32:%d", dst.Port())),
		withResolver(resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			switch host {
			case "good.test.":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "evil.test.":
				return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		})),
	)
	c, err := tn.client.DialContext(context.Background(), "tcp", fmt.Sprintf("good.test:%d", dst.Port()))
	if err != nil {
		t.Fatalf("allowed by its address: %v", err)
	}
	_ = c.Close()
	if _, err := tn.client.DialContext(context.Background(), "tcp", fmt.Sprintf("evil.test:%d", dst.Port())); !errors.Is(err, ErrDenied) {
		t.Fatalf("evil.test: %v, want ErrDenied", err)
	}
}

// An unknown client and a wrong pin are both turned away with their own error, fast.
func TestIdentityRejected(t *testing.T) {
	// A rejection that were not final would be retried until the client's dial timeout, and
	// then reported as the same error: the timeout is made far longer than the bound below,
	// which leaves room for a loaded machine.
	tn := newTunnel(t, withClientConfig(func(c *ClientConfig) { c.DialTimeout = hangLimit }))
	stranger, _ := NewEphemeralIdentity()
	other, _ := NewEphemeralIdentity()
	tests := []struct {
		name string
		id   *Identity
		pin  Fingerprint
		want error
	}{
		{"unauthorized client", stranger, tn.serverID.Fingerprint, ErrUnauthorized},
		{"wrong pin", tn.clientID, other.Fingerprint, ErrPinMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tn.newClient(tt.id, tt.pin)
			start := time.Now()
			err := c.Connect(context.Background())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Connect: %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > resetLimit {
				t.Fatalf("rejection took %v", d)
			}
			if _, err := c.DialContext(context.Background(), "tcp", "127.0.0.1:1"); !errors.Is(err, tt.want) {
				t.Fatalf("DialContext: %v, want %v", err, tt.want)
			}
		})
	}
}

// Malformed and oversized headers get "bad request" and a reset stream; the connection and a
// flow running beside them carry on.
func TestMalformedHeaderIsolated(t *testing.T) {
	tn := newTunnel(t)
	dst := destination(t, echo)
	running, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()

	qc, err := quic.DialAddr(context.Background(), tn.serverAddr, clientTLS(tn.clientID, tn.serverID.Fingerprint), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	for _, hdr := range [][]byte{
		{9, 0, 1, 1},    // unknown version
		{1, 0xff, 0xff}, // oversized length
		append([]byte{1, 0, 7, 1, 9}, bytes.Repeat([]byte{1}, 5)...), // unknown address type
		append([]byte{1, 1, 0}, bytes.Repeat([]byte{'x'}, 300)...),   // 256 bytes over the limit
	} {
		str, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = str.SetDeadline(time.Now().Add(hangLimit))
		if _, err := str.Write(hdr); err != nil {
			t.Fatal(err)
		}
		var se *StatusError
		if err := ReadStatus(str); !errors.As(err, &se) || se.Status != StatusBadRequest {
			t.Fatalf("header %x: got %v, want bad request", hdr, err)
		}
		// The server stops reading the stream (STOP_SENDING), which ends our send side: its
		// context ends with the server's code, and writes fail with it.
		await(t, str.Context().Done(), fmt.Sprintf("header %x: the server's STOP_SENDING", hdr))
		var streamErr *quic.StreamError
		if cause := context.Cause(str.Context()); !errors.As(cause, &streamErr) || streamErr.ErrorCode != codeBadRequest || !streamErr.Remote {
			t.Fatalf("header %x: send side ended by %v, want the server's stop with code bad request", hdr, cause)
		}
		_, werr := str.Write(make([]byte, 1024))
		if !errors.As(werr, &streamErr) || streamErr.ErrorCode != codeBadRequest {
			t.Fatalf("header %x: writes after the status: %v, want a stream reset with code bad request", hdr, werr)
		}
	}
	// The flow that was running still works, and so does a new one on the raw connection.
	checkEcho(t, running, "still alive")
	c, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, c, "new flow")
	_ = c.Close()
	if qc.Context().Err() != nil {
		t.Fatal("the server closed the connection that sent bad headers")
	}
}

func checkEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(hangLimit))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
	_ = c.SetDeadline(time.Time{})
}

// A reset on one side becomes a reset on the other, both ways.
func TestResetPropagates(t *testing.T) {
	t.Run("destination resets", func(t *testing.T) {
		tn := newTunnel(t)
		dst := destination(t, func(c *net.TCPConn) {
			buf := make([]byte, 5)
			_, _ = io.ReadFull(c, buf)
			_ = c.SetLinger(0) // Close sends RST
		})
		c, err := net.Dial("tcp", tn.forward(dst))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello"))
		expectReset(t, c, resetLimit)
	})
	t.Run("app resets", func(t *testing.T) {
		tn := newTunnel(t)
		reached := make(chan struct{})
		got := make(chan error, 1)
		dst := destination(t, func(c *net.TCPConn) {
			// The deadline only guards against a hang: the reset must come long before it,
			// or this read ends with its timeout, which is no reset.
			_ = c.SetReadDeadline(time.Now().Add(hangLimit))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err != nil {
				got <- err
				return
			}
			close(reached)
			_, err := io.Copy(io.Discard, c)
			got <- err
		})
		c, err := net.Dial("tcp", tn.forward(dst))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("hello"))
		// The flow is established end to end once the destination has the bytes.
		select {
		case <-reached:
		case err := <-got:
			t.Fatalf("destination read %v before the reset", err)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
		if err := <-got; !flow.IsReset(err) {
			t.Fatalf("destination saw %v, want a reset", err)
		}
	})
}

// When the server goes away, open flows end with a reset, the client reconnects once the
// server is back, and new flows work.
func TestServerRestart(t *testing.T) {
	log, events := watchLog(t)
	tn := newTunnel(t, withClientConfig(func(c *ClientConfig) { c.Logger = log.WithField("side", "client") }))
	dst := destination(t, echo)
	local := tn.forward(dst)
	inflight, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Close()
	checkEcho(t, inflight, "before")

	addr := tn.serverAddr
	_ = tn.server.Close()
	// Without the server's close reaching the client, only the 60 s idle timeout would end it.
	expectReset(t, inflight, resetLimit)

	tn.startServer(addr)
	start := time.Now()
	events.wait(t, "reconnected to server", 1)
	// The client redials with a backoff capped at 5 s (plus jitter); the bound leaves room
	// for a loaded machine and catches a client that waits for something slower, such as
	// the 60 s idle timeout.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("reconnected %v after the restart", d)
	}
	t.Logf("reconnected %v after the restart", time.Since(start).Round(time.Millisecond))
	// Reconnected, a new flow works at the first try.
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, c, "after")
	_ = c.Close()
	if n := tn.client.Dials(); n != 2 {
		t.Fatalf("client dialed %d times, want 2", n)
	}
}

// A client that cannot reach any server fails its flows within the dial timeout.
func TestServerUnreachable(t *testing.T) {
	id, _ := NewEphemeralIdentity()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // a UDP port that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := NewClient(ClientConfig{Server: pc.LocalAddr().String(), Identity: id, Pin: id.Fingerprint, DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if err := c.Connect(context.Background()); !errors.Is(err, ErrServerUnreachable) {
		t.Fatalf("Connect: %v, want ErrServerUnreachable", err)
	}
	if _, err := c.DialContext(context.Background(), "tcp", "127.0.0.1:1"); !errors.Is(err, ErrServerUnreachable) {
		t.Fatalf("DialContext: %v, want ErrServerUnreachable", err)
	}
	// Two waits of the 500 ms dial timeout; the bound leaves room for a loaded machine and
	// stays below the 10 s default dial timeout that a client ignoring its setting would use.
	if d := time.Since(start); d > resetLimit {
		t.Fatalf("took %v", d)
	}
}

// DialContext's conn works as an http.Transport dialer would use it, and bad arguments fail.
func TestDialContextArguments(t *testing.T) {
	tn := newTunnel(t)
	for _, tt := range []struct{ network, addr string }{
		{"udp", "127.0.0.1:53"},
		{"tcp", "no-port"},
		{"tcp", "[::1]"},
	} {
		if _, err := tn.client.DialContext(context.Background(), tt.network, tt.addr); err == nil {
			t.Errorf("DialContext(%q, %q) succeeded", tt.network, tt.addr)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tn.client.DialContext(ctx, "tcp", destination(t, echo)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// Shutting everything down leaves no goroutine behind (TestMain checks with goleak), even
// with flows open.
func TestShutdownWithOpenFlows(t *testing.T) {
	tn := newTunnel(t)
	local := tn.forward(destination(t, echo))
	var conns []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, c, "open")
		conns = append(conns, c)
	}
	_ = tn.client.Close()
	_ = tn.server.Close()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); expectReset(t, c, resetLimit); _ = c.Close() }()
	}
	wg.Wait()
}
