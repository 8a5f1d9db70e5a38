package quicmux

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicgate/quicgate/internal/logging"
	"github.com/quicgate/quicgate/internal/quichold"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// TestHandshakeLimits holds handshakes in progress on a server with RetryHandshakes 1 and
// MaxHandshakes 2: an Initial from a source that never answers costs no state once one is
// in progress (it gets a Retry), a legitimate client still connects through the Retry, a
// client that answers the Retry fills the cap and the next one is refused; once the held
// handshakes time out, the count is back to zero and a client connects without a Retry.
func TestHandshakeLimits(t *testing.T) {
	log, events := watchLog(t)
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) {
		c.MaxHandshakes, c.RetryHandshakes = 2, 1
		c.Limits.HandshakeTimeout = time.Second // the held handshakes' lifetime
		c.Logger = log
	}))
	hs := tn.server.hs
	waitFor(t, func() bool { return hs.inProgress() == 0 }, "the tunnel's handshake released at accept")
	server, err := net.ResolveUDPAddr("udp", tn.serverAddr)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := clientTLS(tn.clientID, tn.serverID.Fingerprint)
	hold := func(opt quichold.Options) *quichold.Handshake {
		t.Helper()
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		h, err := quichold.Start(ctx, pc, server, tlsConf, opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		return h
	}
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		return quic.DialAddr(ctx, tn.serverAddr, tlsConf, tn.server.cfg.Limits.quicConfig(false))
	}

	// One held handshake: in progress until it times out.
	h1 := hold(quichold.Options{})
	waitFor(t, func() bool { return hs.inProgress() == 1 }, "the held handshake counted")

	// At RetryHandshakes, a source that does not answer the Retry leaves no state.
	h2 := hold(quichold.Options{})
	waitFor(t, func() bool { return hs.retries.Load() >= 1 }, "a Retry for the second held handshake")
	events.wait(t, "many handshakes in progress: new clients must prove their address (Retry)", 1)
	if n := hs.inProgress(); n != 1 {
		t.Fatalf("%d handshakes in progress after a Retry that was not answered, want 1", n)
	}

	// A legitimate client answers the Retry and connects.
	retries := hs.retries.Load()
	qc, err := dial()
	if err != nil {
		t.Fatalf("a client at RetryHandshakes: %v", err)
	}
	if hs.retries.Load() == retries {
		t.Error("the client connected without a Retry")
	}
	_ = qc.CloseWithError(0, "")
	waitFor(t, func() bool { return hs.inProgress() == 1 }, "the client's handshake released")

	// A held client that answers the Retry fills the cap; the next client is refused.
	h3 := hold(quichold.Options{AnswerRetry: true})
	if !h3.Retried() {
		t.Error("the third held handshake got no Retry")
	}
	waitFor(t, func() bool { return hs.inProgress() == 2 }, "the third held handshake counted")
	_, err = dial()
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("a client beyond MaxHandshakes: got %v, want CONNECTION_REFUSED", err)
	}
	events.wait(t, "handshakes in progress at their limit: refusing new connections", 1)
	if hs.refusals.Load() == 0 { // one a datagram of the client's flight
		t.Error("no refusal counted")
	}

	// Connections that are open are not affected.
	roundTrip(t, tn, destination(t, echo))

	// The held handshakes time out on the server (their clients never send again).
	for _, h := range []*quichold.Handshake{h1, h2, h3} {
		h.Close()
	}
	waitFor(t, func() bool { return hs.inProgress() == 0 }, "the held handshakes timed out")
	retries = hs.retries.Load()
	if qc, err = dial(); err != nil {
		t.Fatalf("a client after the flood: %v", err)
	}
	if hs.retries.Load() != retries {
		t.Error("a client got a Retry with no handshake in progress")
	}
	_ = qc.CloseWithError(0, "")
	waitFor(t, func() bool { return hs.inProgress() == 0 }, "the last handshake released")

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tn.server.HandshakeCollector())
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "action" {
					name += "/" + l.GetValue()
				}
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["quicgate_handshakes_in_progress"] != 0 || got["quicgate_handshake_limit_total/refused"] != float64(hs.refusals.Load()) ||
		got["quicgate_handshake_limit_total/retry"] != float64(hs.retries.Load()) {
		t.Errorf("metrics %v, want 0 in progress, %d refused and %d retries", got, hs.refusals.Load(), hs.retries.Load())
	}
}

// roundTrip carries one message through the tunnel's client to an echo at target.
func roundTrip(t *testing.T, tn *tunnel, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	c, err := tn.client.DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangLimit))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

// TestHandshakeReleasedOnce: a handshake ends once whether its connection is accepted, ends,
// or both race; a refusal leaves nothing counted.
func TestHandshakeReleasedOnce(t *testing.T) {
	h := newHandshakes(ServerConfig{MaxHandshakes: 1, RetryHandshakes: -1}, logging.Discard())
	h.logEvery = hangLimit
	defer h.stopLogging()
	for range 200 {
		parent, cancel := context.WithCancel(context.Background())
		ctx, err := h.connContext(parent, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.connContext(context.Background(), nil); !errors.Is(err, errTooManyHandshakes) {
			t.Fatalf("second handshake at MaxHandshakes 1: %v", err)
		}
		hs := ctx.Value(handshakeKey{}).(*handshake)
		var wg sync.WaitGroup
		wg.Go(cancel)                             // the connection ends...
		wg.Go(func() { hs.stop(); hs.release() }) // ...as it is accepted
		wg.Wait()
		waitFor(t, func() bool { return h.inProgress() == 0 }, "the handshake released")
		if h.inProgress() != 0 {
			t.Fatalf("%d in progress", h.inProgress())
		}
	}
	if h.verifySource(nil) {
		t.Error("a Retry with RetryHandshakes negative")
	}
}

// TestHandshakeFloodLog: a flood logs once when it starts, a summary per period while it
// lasts and once when a period passed without it.
func TestHandshakeFloodLog(t *testing.T) {
	log, events := watchLog(t)
	h := newHandshakes(ServerConfig{MaxHandshakes: 1, RetryHandshakes: 1}, log)
	h.logEvery = hangLimit // the test ends the periods itself
	defer h.stopLogging()
	if _, err := h.connContext(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if !h.verifySource(nil) {
			t.Fatal("no Retry at RetryHandshakes")
		}
		if _, err := h.connContext(context.Background(), nil); err == nil {
			t.Fatal("no refusal at MaxHandshakes")
		}
	}
	h.tick()
	h.tick()
	for msg, n := range map[string]int{
		"many handshakes in progress: new clients must prove their address (Retry)": 1,
		"handshakes in progress at their limit: refusing new connections":           1,
		"handshake flood goes on": 1,
		"handshake flood over":    1,
	} {
		events.wait(t, msg, n)
		events.mu.Lock()
		got := events.seen[msg]
		events.mu.Unlock()
		if got != n {
			t.Errorf("%q logged %d times, want %d", msg, got, n)
		}
	}
}
