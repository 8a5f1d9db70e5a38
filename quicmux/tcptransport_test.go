package quicmux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/quicgate/quicgate/httpproxy"
	"github.com/quicgate/quicgate/httpproxy/proxytest"
)

// Over the TCP transport, every kind of request works as over QUIC: a TCP flow with its bytes
// both ways and its half-close, a UDP flow with small and oversize datagrams, a reverse
// forward, a lookup and an echo; and the server counts the connection under transport tcp.
func TestTCPTransport(t *testing.T) {
	sreg, smetrics := newTestMetrics(t, "server")
	tn := newTunnel(t, withTCPTransport(), withListenPolicy(listenAnywhere), withServerConfig(func(c *ServerConfig) {
		c.Metrics = smetrics
		c.Resolver = resolverFunc(func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.9")}, nil
		})
		c.echo = func(context.Context, netip.Addr, []byte) (time.Duration, error) { return time.Millisecond, nil }
	}))
	waitMetric(t, sreg, "quicgate_connections_active", map[string]string{"transport": "tcp"}, 1)
	waitMetric(t, sreg, "quicgate_connections_active", map[string]string{"transport": "quic"}, 0)
	tn.client.mu.Lock()
	conn := tn.client.state.conn
	tn.client.mu.Unlock()
	if conn.RemoteAddr().Network() != "tcp" {
		t.Fatalf("the client's connection runs over %s, want tcp", conn.RemoteAddr().Network())
	}

	c, err := tn.client.DialContext(t.Context(), "tcp", destination(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	go func() {
		_, _ = c.Write(payload)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}

	f := mustDialUDP(t, tn.client, udpEcho(t))
	echoPacket(t, f, []byte("a datagram over TCP"))
	echoPacket(t, f, bytes.Repeat([]byte("x"), 60000)) // larger than a packet: framed on the stream
	_ = f.Close()

	ln, err := listen(t, tn.client, closedPort(t))
	if err != nil {
		t.Fatal(err)
	}
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	checkEchoVia(t, app, accept(t, ln))

	// A lookup (the TUN's DNS) and an echo (its ping).
	if addrs, err := tn.client.Resolve(t.Context(), "name.test"); err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.9") {
		t.Fatalf("resolve over TCP: %v, %v", addrs, err)
	}
	if _, err := tn.client.Echo(t.Context(), netip.MustParseAddr("127.0.0.1"), []byte("ping")); err != nil {
		t.Fatalf("echo over TCP: %v", err)
	}

	if st := conn.ConnectionStats(); st.PacketsSent == 0 {
		t.Fatal("no packets counted on the connection")
	}
}

// An unauthorized client and a wrong pin fail over TCP as they do over QUIC.
func TestTCPTransportRefusals(t *testing.T) {
	tn := newTunnel(t, withTCPTransport())
	stranger, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   *Identity
		pin  Fingerprint
		want error
	}{
		{"unauthorized", stranger, tn.serverID.Fingerprint, ErrUnauthorized},
		{"wrong pin", tn.clientID, stranger.Fingerprint, ErrPinMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tn.newClient(tc.id, tc.pin)
			ctx, cancel := context.WithTimeout(t.Context(), hangLimit)
			defer cancel()
			if err := c.Connect(ctx); !errors.Is(err, tc.want) {
				t.Fatalf("connect: %v, want %v", err, tc.want)
			}
		})
	}
}

// autoClient is a TransportAuto client whose QUIC goes through proxy (a UDP path the test
// can black-hole) and whose TCP transport reaches tn's server directly.
func autoClient(t *testing.T, tn *tunnel, proxy *impairProxy, retry time.Duration) (*Client, *logEvents) {
	t.Helper()
	log, events := watchLog(t)
	c, err := NewClient(ClientConfig{Server: proxy.addr(), ServerTCP: tn.tcpAddr, Identity: tn.clientID,
		Pin: tn.serverID.Fingerprint, DialTimeout: 3 * time.Second, QUICRetry: retry, Logger: log.WithField("side", "client")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, events
}

// transportOf is the transport of the client's live connection.
func transportOf(c *Client) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.conn == nil {
		return "none"
	}
	return c.state.conn.RemoteAddr().Network()
}

// Where UDP does not pass from the start, TransportAuto connects over TCP after QUIC's head
// start, and says so once.
func TestAutoFallsBackToTCP(t *testing.T) {
	tn := newTunnel(t, withTCPTransport())
	proxy := newImpairProxy(t, tn.serverAddr, 1, 0, 0) // UDP is black-holed
	c, events := autoClient(t, tn, proxy, time.Hour)
	start := time.Now()
	conn, err := c.DialContext(t.Context(), "tcp", destination(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	checkEcho(t, conn, "over the fallback")
	t.Logf("first flow over the fallback after %v", time.Since(start).Round(time.Millisecond))
	if got := transportOf(c); got != "tcp" {
		t.Fatalf("connected over %s, want tcp", got)
	}
	if n := events.count("connected to server over TCP"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once", n)
	}
	if proxy.dropped.Load() == 0 {
		t.Fatal("QUIC was not tried first")
	}
}

// Where UDP stops passing in the middle, the open flow is reset, new flows work over TCP,
// and once UDP passes again new flows go over QUIC while the flow opened over TCP goes on
// there until it ends, when the TCP connection is closed; a reverse forward moves to QUIC
// at once.
func TestAutoMovesBetweenTransports(t *testing.T) {
	serverLog, serverEvents := watchLog(t)
	tn := newTunnel(t, withTCPTransport(), withListenPolicy(listenAnywhere), withServerConfig(func(c *ServerConfig) { c.Logger = serverLog }))
	proxy := newImpairProxy(t, tn.serverAddr, 0, 0, 0)
	c, events := autoClient(t, tn, proxy, 200*time.Millisecond)
	dst := destination(t, echo)
	first, err := c.DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	checkEcho(t, first, "over QUIC")
	if got := transportOf(c); got != "udp" {
		t.Fatalf("connected over %s, want QUIC (udp)", got)
	}

	proxy.setLoss(1) // a firewall starts dropping UDP
	cut := time.Now()
	expectReset(t, first, 2*c.cfg.Limits.KeepAlive+2*time.Second)
	events.wait(t, "reconnected to server over another transport", 1)
	t.Logf("on TCP %v after UDP was cut", time.Since(cut).Round(time.Millisecond))
	onTCP, err := c.DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer onTCP.Close()
	checkEcho(t, onTCP, "over TCP")
	if got := transportOf(c); got != "tcp" {
		t.Fatalf("reconnected over %s, want tcp", got)
	}
	ln, err := listen(t, c, closedPort(t))
	if err != nil {
		t.Fatal(err)
	}

	proxy.setLoss(0) // UDP passes again
	events.wait(t, "QUIC answers again; new flows go over it", 1)
	if got := transportOf(c); got != "udp" {
		t.Fatalf("moved to %s, want QUIC (udp)", got)
	}
	onQUIC, err := c.DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer onQUIC.Close()
	checkEcho(t, onQUIC, "over QUIC again")
	checkEcho(t, onTCP, "the TCP flow goes on") // its connection is kept for it
	events.wait(t, "reverse forward back", 1)   // asked for again, on the QUIC connection
	rl := ln.(*reverseListener)
	rl.mu.Lock()
	regOver := rl.reg.conn.RemoteAddr().Network()
	rl.mu.Unlock()
	if regOver != "udp" {
		t.Fatalf("the reverse forward is registered over %s, want QUIC (udp)", regOver)
	}
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	checkEchoVia(t, app, accept(t, ln))
	disconnected := serverEvents.count("client disconnected")
	_ = onTCP.Close()
	serverEvents.wait(t, "client disconnected", disconnected+1) // the TCP connection, retired
	checkEcho(t, onQUIC, "still over QUIC")
}

// Through an HTTP CONNECT proxy, with and without authentication: the client reaches the
// server's TCP transport and never tries QUIC; a proxy that wants credentials it was not
// given is one clear error.
func TestTCPTransportThroughProxy(t *testing.T) {
	tn := newTunnel(t, withTCPTransport())
	for _, tc := range []struct {
		name       string
		proxy      *proxytest.Proxy
		user, pass string
		want       error
	}{
		{"open proxy", &proxytest.Proxy{}, "", "", nil},
		{"with auth", &proxytest.Proxy{User: "u", Pass: "p"}, "u", "p", nil},
		{"auth missing", &proxytest.Proxy{User: "u", Pass: "p"}, "", "", httpproxy.ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &url.URL{Scheme: "http", Host: tc.proxy.Start(t)}
			if tc.user != "" {
				u.User = url.UserPassword(tc.user, tc.pass)
			}
			c := tn.newClientWith(func(cfg *ClientConfig) { cfg.Proxy = u; cfg.Transport = TransportAuto })
			ctx, cancel := context.WithTimeout(t.Context(), hangLimit)
			defer cancel()
			err := c.Connect(ctx)
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !errors.Is(err, ErrServerUnreachable) {
					t.Fatalf("connect: %v, want %v", err, tc.want)
				}
				if tc.proxy.Refused() == 0 {
					t.Fatal("the proxy refused nothing")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			conn, err := c.DialContext(ctx, "tcp", destination(t, echo))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			checkEcho(t, conn, "through the proxy")
			if tc.proxy.Connects() != 1 {
				t.Fatalf("the proxy opened %d tunnels, want 1", tc.proxy.Connects())
			}
		})
	}
}

// readAll reads c until it ends, within hangLimit, and returns what it read.
func readUntilClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(hangLimit))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
	return b
}

// Peers that do not complete the handshake learn nothing and are not kept: one that sends
// nothing is closed at the handshake timeout, one that speaks something else than TLS is
// closed without a byte, and a source with too many handshakes pending is closed at once.
func TestTCPTransportUnauthenticatedPeers(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		tn := newTunnel(t, withTCPTransport(), withServerConfig(func(c *ServerConfig) { c.Limits.HandshakeTimeout = 300 * time.Millisecond }))
		c, err := net.Dial("tcp", tn.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b := readUntilClosed(t, c); len(b) != 0 {
			t.Fatalf("the server sent %q to a silent peer", b)
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		tn := newTunnel(t, withTCPTransport())
		c, err := net.Dial("tcp", tn.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if b := readUntilClosed(t, c); len(b) != 0 {
			t.Fatalf("the server answered %q to HTTP", b)
		}
	})
	t.Run("too many pending", func(t *testing.T) {
		tn := newTunnel(t, withTCPTransport(), withServerConfig(func(c *ServerConfig) { c.Limits.HandshakeTimeout = time.Hour }))
		for range 16 { // streamlink.DefaultMaxPendingPerSource
			c, err := net.Dial("tcp", tn.tcpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		c, err := net.Dial("tcp", tn.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b := readUntilClosed(t, c); len(b) != 0 { // long before the hour-long handshake timeout
			t.Fatalf("the server sent %q", b)
		}
	})
}

// A QUIC connection lost soon after it began (UDP let through for a while, then blocked)
// doubles the wait before the next try from TCP, up to its bound; one that lasted resets it.
func TestQUICRetryBacksOffOnFlaps(t *testing.T) {
	c := &Client{cfg: ClientConfig{QUICRetry: time.Second}}
	if got := c.quicRetryWait(); got != time.Second {
		t.Fatalf("first wait %v, want 1s", got)
	}
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		c.quicLost(5 * time.Second)
		if got := c.quicRetryWait(); got != want {
			t.Fatalf("after a flap: %v, want %v", got, want)
		}
	}
	c.quicLost(2 * flapWindow) // neither a flap nor stable: unchanged
	if got := c.quicRetryWait(); got != 8*time.Second {
		t.Fatalf("after a middling connection: %v, want 8s", got)
	}
	for range 20 {
		c.quicLost(time.Second)
	}
	if got := c.quicRetryWait(); got != maxQUICRetry {
		t.Fatalf("after many flaps: %v, want the bound %v", got, maxQUICRetry)
	}
	c.quicLost(stableQUIC)
	if got := c.quicRetryWait(); got != time.Second {
		t.Fatalf("after a stable connection: %v, want 1s", got)
	}
}

// A proxy given explicitly carries the client alone (QUIC cannot go through it); one from the
// environment carries the TCP transport, and TransportAuto still tries QUIC first.
func TestProxyPlan(t *testing.T) {
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:3128"}
	for _, tc := range []struct {
		name         string
		cfg          ClientConfig
		quic, tcpLeg bool
	}{
		{"no proxy, auto", ClientConfig{Transport: TransportAuto}, true, true},
		{"--proxy, auto", ClientConfig{Transport: TransportAuto, Proxy: u}, false, true},
		{"environment's proxy, auto", ClientConfig{Transport: TransportAuto, Proxy: u, ProxyForTCPOnly: true}, true, true},
		{"environment's proxy, tcp", ClientConfig{Transport: TransportTCP, Proxy: u, ProxyForTCPOnly: true}, false, true},
		{"quic", ClientConfig{Transport: TransportQUIC}, true, false},
	} {
		c := &Client{cfg: tc.cfg}
		if q, tl := c.plan(); q != tc.quic || tl != tc.tcpLeg {
			t.Errorf("%s: plan = QUIC %v, TCP %v; want %v, %v", tc.name, q, tl, tc.quic, tc.tcpLeg)
		}
	}
}
