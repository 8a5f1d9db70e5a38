package quicmux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"golang.org/x/sync/errgroup"
)

// echoThrough sends size random bytes through c to an echo destination and checks that the
// same bytes come back; mid, if set, runs once half the echo has arrived.
func echoThrough(t *testing.T, c net.Conn, size int64, mid func()) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	sent, got := sha256.New(), sha256.New()
	var g errgroup.Group
	g.Go(func() error {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), sent)
		if _, err := io.Copy(c, src); err != nil {
			return err
		}
		return c.(interface{ CloseWrite() error }).CloseWrite()
	})
	var n int64
	g.Go(func() error {
		buf := make([]byte, 32<<10)
		for {
			k, err := c.Read(buf)
			got.Write(buf[:k])
			if n < size/2 && n+int64(k) >= size/2 && mid != nil {
				mid()
			}
			n += int64(k)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	if err := g.Wait(); err != nil {
		t.Fatalf("after %d of %d bytes: %v", n, size, err)
	}
	if n != size || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echo: %d bytes, SHA-256 equal %v", n, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
}

// Through 2% loss each way, 20 ms of added delay, reordering, and a change of the client's
// source port in the middle, a transfer arrives intact on the same connection.
func TestImpairedPathAndRebinding(t *testing.T) {
	size := int64(2 << 20)
	if raceEnabled {
		size = 1 << 20
	}
	tn := newTunnel(t)
	proxy := newImpairProxy(t, tn.serverAddr, 0.02, 20*time.Millisecond, 5*time.Millisecond)
	c, err := NewClient(ClientConfig{Server: proxy.addr(), Identity: tn.clientID, Pin: tn.serverID.Fingerprint,
		Logger: testLogger(t).WithField("side", "client")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", destination(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	echoThrough(t, conn, size, proxy.rebind)
	t.Logf("%d MiB echoed in %v through the impaired path; %d datagrams dropped of %d",
		size>>20, time.Since(start).Round(time.Millisecond), proxy.dropped.Load(), proxy.dropped.Load()+proxy.passed.Load())
	if proxy.dropped.Load() == 0 {
		t.Fatal("the proxy dropped nothing: the test did not test loss")
	}
	if n := c.Dials(); n != 1 {
		t.Fatalf("the client dialed %d times: the rebinding broke the connection", n)
	}
}

// A flow that moves nothing for its idle timeout is reset on both sides.
func TestFlowIdleTimeout(t *testing.T) {
	// The timeout is long against the gaps between the echoes below (a loopback round trip,
	// milliseconds), so that a loaded machine cannot make activity look like silence.
	const idle = time.Second
	tn := newTunnel(t, withClientConfig(func(c *ClientConfig) { c.FlowIdleTimeout = idle }))
	got := make(chan error, 1)
	dst := destination(t, func(c *net.TCPConn) {
		// Only a guard: the reset must come long before it, or the flow would end with this
		// deadline's error, which is no reset.
		_ = c.SetReadDeadline(time.Now().Add(hangLimit))
		_, err := io.Copy(c, c)
		got <- err
	})
	c, err := net.Dial("tcp", tn.forward(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Activity keeps it alive past the timeout...
	first := time.Now()
	for echoes := 0; echoes < 5 || time.Since(first) < idle*3/2; echoes++ {
		checkEcho(t, c, "ping")
	}
	checkEcho(t, c, "last word")
	// ...and silence ends it. Load can only lengthen the silence, never shorten it.
	lastActive := time.Now()
	expectReset(t, c, idle+resetLimit)
	if d := time.Since(lastActive); d < idle*5/6 {
		t.Fatalf("reset after %v of silence, before the timeout", d)
	}
	if err := <-got; !flow.IsReset(err) {
		t.Fatalf("destination saw %v, want a reset", err)
	}
}

// Shutdown lets open flows finish, turns new ones away, and resets what outlives the drain.
func TestServerDrain(t *testing.T) {
	tn := newTunnel(t)
	dst := destination(t, echo)
	open, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	done := make(chan error, 1)
	go func() {
		// The drain has far longer than the test needs to end its flow: a Shutdown that
		// missed the flow's end would return this deadline's error.
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		done <- tn.server.Shutdown(ctx)
	}()
	// Draining has begun when a new flow is turned away; flows that got in before it are
	// ended cleanly, as a client would.
	waitFor(t, func() bool {
		c, err := tn.client.DialContext(context.Background(), "tcp", dst)
		if err != nil {
			if !errors.Is(err, ErrShuttingDown) {
				t.Fatalf("new flow while Shutdown begins: %v, want success or ErrShuttingDown", err)
			}
			return true
		}
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
		_, _ = io.ReadAll(c)
		_ = c.Close()
		return false
	}, "a new flow turned away with ErrShuttingDown")
	checkEcho(t, open, "still served while draining")
	if _, err := tn.client.DialContext(context.Background(), "tcp", dst); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("new flow while draining: %v, want ErrShuttingDown", err)
	}
	_ = open.(interface{ CloseWrite() error }).CloseWrite()
	if _, err := io.ReadAll(open); err != nil {
		t.Fatalf("finishing the open flow: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown after the last flow ended: %v", err)
	}

	t.Run("drain timeout resets", func(t *testing.T) {
		tn := newTunnel(t)
		stuck, err := net.Dial("tcp", tn.forward(dst))
		if err != nil {
			t.Fatal(err)
		}
		defer stuck.Close()
		checkEcho(t, stuck, "x")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := tn.server.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want the drain to time out", err)
		}
		// Without the reset, only the QUIC idle timeout (60 s) would end the flow.
		expectReset(t, stuck, resetLimit)
	})
}

// With the one dial slot held by a dial that does not return, the next flow times out
// instead of queueing forever.
func TestPendingDialLimit(t *testing.T) {
	release := make(chan struct{})
	holding := make(chan struct{})
	tn := newTunnel(t,
		withDialTimeout(400*time.Millisecond),
		withServerConfig(func(c *ServerConfig) { c.MaxPendingDials = 1 }),
		withDialer(dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
			if address == "127.0.0.9:9" {
				close(holding) // the server dials only once it holds the slot
				<-release      // a dial stuck in the kernel, deaf to ctx
				return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		})),
	)
	dst := destination(t, echo)
	var g errgroup.Group
	g.Go(func() error {
		_, err := tn.client.DialContext(context.Background(), "tcp", "127.0.0.9:9")
		return err
	})
	await(t, holding, "the first flow's dial")
	start := time.Now()
	_, err := tn.client.DialContext(context.Background(), "tcp", dst)
	close(release)
	// Only the server's wait for a slot answers "timed out": a server that queued the flow
	// until the slot freed would answer nothing before the client's own 9 s wait ends.
	if !errors.Is(err, ErrTimedOut) {
		t.Fatalf("second flow: %v, want ErrTimedOut while the only slot is busy", err)
	}
	// The wait is the 400 ms dial timeout; the bound leaves room for a loaded machine and
	// stays below the 10 s default dial timeout that a server ignoring its setting would use.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second flow waited %v", d)
	}
	if err := g.Wait(); !errors.Is(err, ErrRefused) {
		t.Fatalf("first flow: %v", err)
	}
	c, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatalf("after the slot is free: %v", err)
	}
	_ = c.Close()
}

// A stream that never sends its header is cut off after the header timeout; a header
// larger than the configured bound is a bad request.
func TestHeaderLimits(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) {
		c.HeaderTimeout = 300 * time.Millisecond
		c.MaxHeaderBytes = 16
	}))
	qc, err := quic.DialAddr(context.Background(), tn.serverAddr, clientTLS(tn.clientID, tn.serverID.Fingerprint), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	str, err := qc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = str.Write([]byte{1}) // a byte of header, then nothing
	// The read deadline stays below the 10 s default header timeout: a server that ignored
	// the 300 ms setting would let it expire, which is no stream reset.
	_ = str.SetReadDeadline(time.Now().Add(resetLimit))
	_, err = str.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("silent stream: %v, want a stream reset", err)
	}
	_, err = tn.client.DialContext(context.Background(), "tcp", "a-rather-long-name.example:80")
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("header over the bound: %v, want ErrBadRequest", err)
	}
}

// Garbage datagrams and abandoned handshakes neither crash the server nor keep it busy.
func TestGarbageAndAbandonedHandshakes(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.Limits.HandshakeTimeout = time.Second }))
	before := runtime.NumGoroutine()
	junk, err := net.Dial("udp", tn.serverAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1500)
	for i := range 5000 {
		n := 1 + rng.IntN(len(buf))
		for j := range buf[:n] {
			buf[j] = byte(rng.Uint32())
		}
		if i%2 == 0 && n >= 1200 {
			buf[0] = 0xc0 // long header: looks like an Initial
		}
		_, _ = junk.Write(buf[:n])
	}
	// Handshakes that stop after the first flight.
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		conn, err := quic.DialAddr(ctx, tn.serverAddr, clientTLS(tn.clientID, tn.serverID.Fingerprint), &quic.Config{HandshakeIdleTimeout: 50 * time.Millisecond})
		if err == nil {
			_ = conn.CloseWithError(0, "")
		}
		cancel()
	}
	c, err := tn.client.DialContext(context.Background(), "tcp", destination(t, echo))
	if err != nil {
		t.Fatalf("after the garbage: %v", err)
	}
	checkEcho(t, c, "still serving")
	_ = c.Close()
	// Abandoned handshakes time out (after 1 s), and with them their goroutines. Nothing
	// announces the last one's end, so the count is polled.
	if !poll(func() bool { return runtime.NumGoroutine() <= before+10 }) {
		t.Fatalf("%d goroutines %v on, %d before the garbage", runtime.NumGoroutine(), hangLimit, before)
	}
}

// With Retry on, clients still connect (after proving their address).
func TestRetry(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.Retry = true }))
	c, err := tn.client.DialContext(context.Background(), "tcp", destination(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, c, "retried")
	_ = c.Close()
}

// The metrics count flows, bytes, statuses, handshake failures and connections, with no
// per-flow labels.
func TestMetrics(t *testing.T) {
	sreg, sm := newTestMetrics(t, "server")
	creg, cm := newTestMetrics(t, "client")
	tn := newTunnel(t,
		withRules("127.0.0.1/32"),
		withServerConfig(func(c *ServerConfig) { c.Metrics = sm }),
		withClientConfig(func(c *ClientConfig) { c.Metrics = cm; c.Limits.Congestion = CongestionCubic }),
	)
	c, err := net.Dial("tcp", tn.forward(destination(t, echo)))
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, c, 100000, nil)
	_ = c.Close()
	if _, err := tn.client.DialContext(context.Background(), "tcp", "127.0.0.2:80"); !errors.Is(err, ErrDenied) {
		t.Fatal(err)
	}
	stranger, _ := NewEphemeralIdentity()
	_ = tn.newClient(stranger, tn.serverID.Fingerprint).Connect(context.Background())

	waitMetric(t, sreg, "quicgate_flows_total", map[string]string{"result": "ok"}, 1)
	waitMetric(t, sreg, "quicgate_bytes_total", map[string]string{"direction": "up"}, 100000)
	waitMetric(t, sreg, "quicgate_bytes_total", map[string]string{"direction": "down"}, 100000)
	waitMetric(t, sreg, "quicgate_dial_results_total", map[string]string{"status": "denied"}, 1)
	waitMetric(t, sreg, "quicgate_dial_results_total", map[string]string{"status": "ok"}, 1)
	waitMetric(t, sreg, "quicgate_handshake_failures_total", map[string]string{"reason": "unauthorized"}, 1)
	waitMetric(t, sreg, "quicgate_connections_active", map[string]string{"transport": "quic"}, 1)
	waitMetric(t, creg, "quicgate_flows_total", map[string]string{"result": "ok"}, 1)
	waitMetric(t, creg, "quicgate_bytes_total", map[string]string{"direction": "up"}, 100000)
	waitMetric(t, sreg, "quicgate_flows_active", nil, 0)
	if v := metricValue(t, sreg, "quicgate_quic_packets_sent_total", nil); v <= 0 {
		t.Fatalf("packets sent %v", v)
	}
	// Each end names its own congestion controller and exports its model of the path.
	waitMetric(t, sreg, "quicgate_congestion_control_info", map[string]string{"algorithm": "bbr"}, 1)
	waitMetric(t, creg, "quicgate_congestion_control_info", map[string]string{"algorithm": "cubic"}, 1)
	for _, reg := range []*prometheus.Registry{sreg, creg} {
		for _, name := range []string{"quicgate_quic_min_rtt_seconds", "quicgate_quic_bandwidth_estimate_bits_per_second",
			"quicgate_quic_congestion_window_bytes", "quicgate_quic_pacing_rate_bits_per_second"} {
			if v := metricValue(t, reg, name, nil); v <= 0 {
				t.Errorf("%s = %v, want > 0", name, v)
			}
		}
	}
}

func TestUnknownCongestionControl(t *testing.T) {
	if c, err := ParseCongestion("BBR"); err != nil || c != CongestionBBR {
		t.Fatalf("ParseCongestion(BBR) = %q, %v", c, err)
	}
	id, _ := NewEphemeralIdentity()
	_, err := NewServer(ServerConfig{Identity: id, Authorized: func(Fingerprint) bool { return true }, Policy: Rules{}, Limits: Limits{Congestion: "vegas"}})
	if !errors.Is(err, ErrCongestion) {
		t.Fatalf("server: %v, want ErrCongestion", err)
	}
	_, err = NewClient(ClientConfig{Server: "127.0.0.1:1", Identity: id, Pin: id.Fingerprint, Limits: Limits{Congestion: "vegas"}})
	if !errors.Is(err, ErrCongestion) {
		t.Fatalf("client: %v, want ErrCongestion", err)
	}
}

// newTestMetrics is a side's Metrics (NewMetrics) in a registry of its own.
func newTestMetrics(t *testing.T, side string) (*prometheus.Registry, *Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, side)
	if err != nil {
		t.Fatal(err)
	}
	return reg, m
}

// waitMetric waits for a metric to reach want. Metrics are updated after the event they
// count (a flow's bytes once its relay returns) and announce nothing, so they are polled.
func waitMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	if !poll(func() bool { return metricValue(t, reg, name, labels) == want }) {
		t.Fatalf("%s%v = %v after %v, want %v", name, labels, metricValue(t, reg, name, labels), hangLimit, want)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			return value(m)
		}
	}
	return -1
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// With the server's stream limit reached, a further flow waits for a free stream only as
// long as the client's dial timeout, then fails; once a flow closes, new ones go through.
func TestMaxStreams(t *testing.T) {
	tn := newTunnel(t,
		withServerConfig(func(c *ServerConfig) { c.Limits.MaxStreams = 2 }),
		withClientConfig(func(c *ClientConfig) { c.DialTimeout = 500 * time.Millisecond }),
	)
	dst := destination(t, echo)
	var held []net.Conn
	for range 2 {
		c, err := tn.client.DialContext(context.Background(), "tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The client's 500 ms dial timeout ends the wait for a free stream; ctx, far longer,
	// would end it only if the dial timeout did not apply, and then with its own error.
	ctx, cancel := context.WithTimeout(context.Background(), resetLimit)
	defer cancel()
	if _, err := tn.client.DialContext(ctx, "tcp", dst); !errors.Is(err, ErrServerUnreachable) {
		t.Fatalf("third flow: %v, want no free stream (ErrServerUnreachable)", err)
	}
	_ = held[0].Close()
	// The server grants a new stream once it has seen the closed one's end; until then each
	// attempt waits out the dial timeout for that grant.
	var lastErr error
	if !poll(func() bool {
		c, err := tn.client.DialContext(context.Background(), "tcp", dst)
		if err != nil {
			lastErr = err
			return false
		}
		checkEcho(t, c, "freed")
		_ = c.Close()
		return true
	}) {
		t.Fatalf("no flow %v after one closed: %v", hangLimit, lastErr)
	}
	_ = held[1].Close()
}

// Flows whose destinations stop reading hold only their own flow-control window: the
// connection's shared window does not run dry, and other flows go on.
func TestStalledFlowsDoNotBlockOthers(t *testing.T) {
	tn := newTunnel(t)
	release := make(chan struct{})
	stalled := destination(t, func(c *net.TCPConn) {
		_ = c.SetReadBuffer(4096)
		<-release // accept, never read
	})
	t.Cleanup(func() { close(release) })
	dst := destination(t, echo)
	conns := make([]net.Conn, 8)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	// The flows are pushed at once, each until it is stuck: a write that does not complete
	// within 500 ms. (Nothing announces a full window; a machine too slow for the 500 ms
	// only makes the flows hold less, it cannot fail the test.)
	var push errgroup.Group
	for i := range conns {
		c, err := tn.client.DialContext(context.Background(), "tcp", stalled)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		push.Go(func() error {
			chunk := make([]byte, 256<<10)
			var pushed int
			for {
				_ = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := c.Write(chunk)
				pushed += n
				if err != nil {
					break
				}
			}
			t.Logf("stalled flow %d took %d KiB", i, pushed>>10)
			return nil
		})
	}
	_ = push.Wait()
	// A connection window run dry would hold back the new flow's header, so the server's
	// status would not come within the client's wait for it (9 s) and the dial would fail;
	// or the echo would not come back within checkEcho's deadline.
	c, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatalf("new flow beside 8 stalled ones: %v", err)
	}
	defer c.Close()
	checkEcho(t, c, "not blocked")
}

// Addresses that are no single remote host are denied whatever the rules say: 0.0.0.0
// would reach the server's own loopback services through a rule like 0.0.0.0/5.
func TestNonHostTargetsDenied(t *testing.T) {
	dst := netip.MustParseAddrPort(destination(t, echo))
	tn := newTunnel(t, withRules("0.0.0.0/5", "224.0.0.0/4", "::/0"))
	for _, target := range []string{
		netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port()).String(),
		netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port()).String(),
		"224.0.0.1:80",
		"[ff02::1]:80",
	} {
		if _, err := tn.client.DialContext(context.Background(), "tcp", target); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want ErrDenied", target, err)
		}
	}
}
