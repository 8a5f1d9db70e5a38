package ingress

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/quicmux"
)

// TestFlowContract drives one flow through each ingress (-L, TUN over an in-memory device,
// Client.DialContext) to every way a flow can end, and checks what the application and the
// destination see: all bytes and io.EOF for an orderly end, a reset (never a clean EOF) for
// everything else. It is the test of the flow table in docs/protocol.md.
func TestFlowContract(t *testing.T) {
	for _, tc := range contractCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, kind := range allIngresses {
				t.Run(string(kind), func(t *testing.T) {
					if tc.only != nil && !slices.Contains(tc.only, kind) {
						t.Skipf("%s: %s", kind, tc.why)
					}
					t.Parallel()
					tc.run(t, newHarness(t, kind, tc.cfg))
				})
			}
		})
	}
}

type contractCase struct {
	name string
	cfg  harnessConfig
	only []ingressKind // nil: every ingress
	why  string        // why the others are left out
	run  func(t *testing.T, h *harness)
}

func contractCases() []contractCase {
	keepalive := netstack.DefaultTCPOptions()
	keepalive.KeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 2}
	return []contractCase{
		{name: "app FIN", run: testAppFIN},
		{name: "app RST", run: testAppRST},
		{name: "destination FIN", run: testDestinationFIN},
		{name: "destination RST", run: testDestinationRST},
		{name: "destination RST in flight", run: testDestinationRSTInFlight},
		{name: "server draining", run: testServerDraining},
		{
			name: "client draining",
			cfg:  harnessConfig{drainTimeout: drainTimeout},
			only: []ingressKind{ingressPort, ingressTUN, ingressProxy},
			why:  "a DialContext app owns its conns; no ingress drains them",
			run:  testClientDraining,
		},
		{
			name: "connection lost",
			// Keepalives must be shorter than the idle timeout. The server's is set too: quic-go
			// takes a peer's idle timeout as at least 5 s (protocol.MinRemoteIdleTimeout).
			cfg: harnessConfig{
				udpRelay:     true,
				clientLimits: quicmux.Limits{KeepAlive: 200 * time.Millisecond, IdleTimeout: time.Second},
				serverLimits: quicmux.Limits{KeepAlive: 200 * time.Millisecond, IdleTimeout: time.Second},
			},
			run: testConnectionLost,
		},
		{
			name: "client flow idle timeout",
			cfg:  harnessConfig{clientFlowIdle: idleTimeout},
			only: []ingressKind{ingressPort, ingressTUN, ingressProxy},
			why:  "the client's FlowIdleTimeout applies to the flows it relays; a DialContext conn has no client relay",
			run:  testFlowIdle,
		},
		{name: "server flow idle timeout", cfg: harnessConfig{serverFlowIdle: idleTimeout}, run: testFlowIdle},
		{
			name: "keepalive failure",
			cfg:  harnessConfig{tunTCP: &keepalive},
			only: []ingressKind{ingressTUN},
			why:  "only the TUN app can vanish without a packet in a test without root",
			run:  testKeepAliveFailure,
		},
		{
			name: "keepalive failure, bytes unacknowledged",
			cfg:  harnessConfig{tunTCP: &keepalive},
			only: []ingressKind{ingressTUN},
			why:  "only the TUN app can vanish without a packet in a test without root",
			run:  testKeepAliveUnacked,
		},
	}
}

const idleTimeout = 300 * time.Millisecond

// payload is 1-4 MiB of random bytes.
func payload() []byte {
	b := make([]byte, 1<<20+mrand.IntN(3<<20))
	rand.Read(b)
	return b
}

// sendFIN writes data to c and then ends its send side; the result comes on the channel.
func sendFIN(c interface {
	io.Writer
	CloseWrite() error
}, data []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		if _, err := c.Write(data); err != nil {
			done <- err
			return
		}
		done <- c.CloseWrite()
	}()
	return done
}

// expectAll checks that who reads exactly want and then io.EOF from c within bound.
func expectAll(t *testing.T, who string, c net.Conn, want []byte, bound time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(bound))
	h := sha256.New()
	n, err := io.Copy(h, c) // nil at io.EOF
	if err != nil {
		t.Fatalf("%s: read %d of %d bytes, then %v; want every byte, then EOF", who, n, len(want), err)
	}
	if sum := sha256.Sum256(want); n != int64(len(want)) || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("%s: read %d bytes, want %d; SHA-256 equal: %v", who, n, len(want), bytes.Equal(h.Sum(nil), sum[:]))
	}
}

// expectReset reads from c until it fails and checks that it failed with a reset (as
// isReset tells), never io.EOF, within bound; it returns how long that took. Bytes read on
// the way must be a prefix of sent (nil: nothing may arrive).
func expectReset(t *testing.T, who string, c net.Conn, isReset func(error) bool, sent []byte, bound time.Duration) time.Duration {
	t.Helper()
	err, d := readToError(t, who, c, sent, bound)
	checkReset(t, who, err, isReset, d)
	return d
}

// readToError reads from c until it fails (bound is a read deadline) and returns the error
// and how long it took; what it reads must be a prefix of sent.
func readToError(t *testing.T, who string, c net.Conn, sent []byte, bound time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(bound))
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if len(got) > len(sent) || !bytes.Equal(got, sent[:len(got)]) {
			t.Fatalf("%s: read %d bytes that are not a prefix of the %d sent", who, len(got), len(sent))
		}
		if err != nil {
			return err, time.Since(start)
		}
	}
}

func checkReset(t *testing.T, who string, err error, isReset func(error) bool, after time.Duration) {
	t.Helper()
	switch {
	case errors.Is(err, io.EOF):
		t.Fatalf("%s: clean EOF after %v; want a reset", who, after)
	case !isReset(err):
		t.Fatalf("%s: %v (%T) after %v; want a reset", who, err, err, after)
	}
}

func destReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// app FIN: the app sends and half-closes; the destination gets every byte and EOF, and can
// still answer; then the destination half-closes and the app gets every byte and EOF.
func testAppFIN(t *testing.T, h *harness) {
	app, dst := h.dial()
	up, down := payload(), payload()
	sent := sendFIN(app, up)
	expectAll(t, "destination", dst, up, 30*time.Second)
	if err := <-sent; err != nil {
		t.Fatalf("app write: %v", err)
	}
	sent = sendFIN(dst, down)
	expectAll(t, "app", app, down, 30*time.Second)
	if err := <-sent; err != nil {
		t.Fatalf("destination write: %v", err)
	}
}

// app RST: the destination's read fails with ECONNRESET.
func testAppRST(t *testing.T, h *harness) {
	app, dst := h.open()
	app.Abort()
	d := expectReset(t, "destination", dst, destReset, nil, 10*time.Second)
	t.Logf("destination saw the reset after %v", d)
}

// destination FIN: the app gets every byte and EOF, and can still send; then the app
// half-closes and the destination gets every byte and EOF.
func testDestinationFIN(t *testing.T, h *harness) {
	app, dst := h.dial()
	up, down := payload(), payload()
	sent := sendFIN(dst, down)
	expectAll(t, "app", app, down, 30*time.Second)
	if err := <-sent; err != nil {
		t.Fatalf("destination write: %v", err)
	}
	sent = sendFIN(app, up)
	expectAll(t, "destination", dst, up, 30*time.Second)
	if err := <-sent; err != nil {
		t.Fatalf("app write: %v", err)
	}
}

// destination RST mid-flow, after the app has read what the destination sent: the app's
// next read fails with a reset, never EOF.
func testDestinationRST(t *testing.T, h *harness) {
	app, dst := h.open()
	data := make([]byte, 64<<10)
	rand.Read(data)
	if _, err := dst.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(app, make([]byte, len(data))); err != nil {
		t.Fatalf("app read: %v", err)
	}
	abortTCP(dst)
	d := expectReset(t, "app", app, h.isReset, nil, 10*time.Second)
	t.Logf("app saw the reset after %v", d)
}

// destination RST with bytes still in flight (a download cut short): whatever part of them
// the app gets, it must end in a reset, never EOF, so a truncated download never looks
// complete.
func testDestinationRSTInFlight(t *testing.T, h *harness) {
	app, dst := h.open()
	data := payload()
	written := make(chan error, 1)
	go func() {
		_, err := dst.Write(data)
		abortTCP(dst)
		written <- err
	}()
	expectReset(t, "app", app, h.isReset, data, 30*time.Second)
	if err := <-written; err != nil {
		t.Fatalf("destination write: %v", err)
	}
}

// server draining: Shutdown refuses new flows at once, lets an idle open flow run until the
// drain timeout, then resets it at both ends.
func testServerDraining(t *testing.T, h *harness) {
	shut := make(chan error, 1)
	testDraining(t, h, func() {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		shut <- h.server.Shutdown(ctx)
	})
	if err := <-shut; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want context.DeadlineExceeded (a flow had to be reset)", err)
	}
}

// client draining: the ingress's drain (SIGTERM to the client) refuses new flows at once,
// lets an idle open flow run until the drain timeout, then resets it at both ends.
func testClientDraining(t *testing.T, h *harness) {
	testDraining(t, h, func() { <-h.drainIngress() })
}

const drainTimeout = time.Second

// testDraining opens an idle flow, runs drain (which must take drainTimeout) in the
// background, checks that new flows are refused meanwhile, and that the open flow is reset
// at both ends once the drain timeout is over.
func testDraining(t *testing.T, h *harness, drain func()) {
	app, dst := h.open()
	h.dest.closeNew.Store(true) // a probe accepted before the drain began ends in a FIN
	start := time.Now()
	drained := make(chan struct{})
	go func() { defer close(drained); drain() }()

	// The drain gives no event for "draining has begun": probe until a new flow is refused,
	// which must happen before the drain timeout.
	for probes := 1; ; probes++ {
		refused, how := h.probe(t)
		if time.Since(start) >= drainTimeout {
			t.Fatalf("no new flow refused during the drain (probe %d: %s)", probes, how)
		}
		if refused {
			t.Logf("probe %d refused during the drain: %s", probes, how)
			break
		}
	}

	expectReset(t, "app", app, h.isReset, nil, drainTimeout+10*time.Second)
	if since := time.Since(start); since < drainTimeout {
		t.Errorf("app reset after %v, before the drain timeout of %v", since, drainTimeout)
	}
	t.Logf("app reset %v after the drain began", time.Since(start).Round(time.Millisecond))
	expectReset(t, "destination", dst, destReset, nil, 10*time.Second)
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end within 10s of its timeout")
	}
}

// probe opens a new flow and reports whether it was refused: as a refused dial (a closed -L
// port; TUN: dial before accept; DialContext: ErrShuttingDown) or, for -L, whose app is
// connected before the server is asked, a reset. A flow that was accepted ends in the
// destination's FIN (destination.closeNew).
func (h *harness) probe(t *testing.T) (refused bool, how string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := h.dialApp(ctx)
	if err != nil {
		switch {
		case h.kind == ingressDial && errors.Is(err, quicmux.ErrShuttingDown),
			h.kind != ingressDial && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)):
			return true, "dial: " + err.Error()
		}
		t.Fatalf("probe dial: %v", err)
	}
	defer app.Close()
	_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = app.Read(make([]byte, 1))
	switch {
	case errors.Is(err, io.EOF):
		return false, "accepted (EOF)"
	case h.kind == ingressPort && h.isReset(err):
		return true, "read: " + err.Error()
	}
	t.Fatalf("probe read: %v, want EOF (accepted) or a refusal", err)
	return false, ""
}

// connection lost: the path between client and server goes silent; both QUIC ends time
// out, and the app and the destination both see a reset.
func testConnectionLost(t *testing.T, h *harness) {
	app, dst := h.open()
	h.relay.Blackhole()
	appErr, d := readToError(t, "app", app, nil, 15*time.Second)
	t.Logf("app's read failed %v after the path went silent: %v", d.Round(time.Millisecond), appErr)
	expectReset(t, "destination", dst, destReset, nil, 15*time.Second)
	checkReset(t, "app", appErr, h.isReset, d)
}

// flow idle timeout: a flow that moves no byte for the idle timeout is reset at both ends.
func testFlowIdle(t *testing.T, h *harness) {
	app, dst := h.open()
	start := h.lastWrite
	expectReset(t, "app", app, h.isReset, nil, 10*time.Second)
	appAt := time.Since(start)
	expectReset(t, "destination", dst, destReset, nil, 10*time.Second)
	dstAt := time.Since(start)
	if appAt < idleTimeout {
		t.Errorf("app reset after %v, before the idle timeout of %v", appAt, idleTimeout)
	}
	t.Logf("app reset after %v, destination by %v", appAt.Round(time.Millisecond), dstAt.Round(time.Millisecond))
}

// keepalive failure: the app behind the TUN vanishes without a packet; the netstack's
// keepalive gives up on it (1 s idle, 2 probes 1 s apart) and the relay resets the
// destination.
func testKeepAliveFailure(t *testing.T, h *harness) {
	app, dst := h.open()
	// The app's last segment acknowledges every byte sent to it: keepalive probes go out only
	// while nothing sent is unacknowledged (RFC 1122 4.2.3.6).
	exchange(t, app, dst, "idle")
	h.tunLink.Drop()
	d := expectReset(t, "destination", dst, destReset, nil, 30*time.Second)
	t.Logf("destination reset %v after the app vanished", d.Round(time.Millisecond))
}

// keepalive failure with bytes in flight: the app vanishes while bytes sent to it are
// unacknowledged. The netstack then retransmits instead of probing, so keepalive alone
// never ends the flow; it must still end within the keepalive bound.
func testKeepAliveUnacked(t *testing.T, h *harness) {
	app, dst := h.open()
	exchange(t, app, dst, "idle")
	h.tunLink.Drop()
	if _, err := dst.Write([]byte("lost on the way to the app")); err != nil {
		t.Fatal(err)
	}
	err, d := readToError(t, "destination", dst, nil, 10*time.Second)
	checkReset(t, "destination", err, destReset, d)
	t.Logf("destination reset %v after the app vanished", d.Round(time.Millisecond))
}
