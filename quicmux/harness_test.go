package quicmux

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tunnel is a server and a client on loopback, with the test's own identities.
type tunnel struct {
	t          testing.TB
	clientMut  func(*ClientConfig)
	serverID   *Identity
	clientID   *Identity
	serverCfg  ServerConfig
	server     *Server
	serverAddr string
	client     *Client
	// tcp: the server serves the TCP transport too (withTCPTransport), and tcpAddr is
	// where (a port of its own: the UDP port's number may be taken on TCP by another test).
	tcp     bool
	tcpAddr string
}

type tunnelOption func(*tunnel)

func withDialer(d Dialer) tunnelOption { return func(tn *tunnel) { tn.serverCfg.Dialer = d } }
func withServerConfig(f func(*ServerConfig)) tunnelOption {
	return func(tn *tunnel) { f(&tn.serverCfg) }
}
func withClientConfig(f func(*ClientConfig)) tunnelOption {
	return func(tn *tunnel) { tn.clientMut = f }
}
func withDialTimeout(d time.Duration) tunnelOption {
	return func(tn *tunnel) { tn.serverCfg.DialTimeout = d }
}

// withTCPTransport has the server serve the TCP transport too, and the client use it alone.
func withTCPTransport() tunnelOption {
	return func(tn *tunnel) {
		tn.tcp = true
		prev := tn.clientMut
		tn.clientMut = func(c *ClientConfig) {
			c.Transport, c.ServerTCP = TransportTCP, tn.tcpAddr
			if prev != nil {
				prev(c)
			}
		}
	}
}
func withResolver(r Resolver) tunnelOption { return func(tn *tunnel) { tn.serverCfg.Resolver = r } }
func withRules(specs ...string) tunnelOption {
	return func(tn *tunnel) { tn.serverCfg.Policy = mustRules(tn.t, specs...) }
}

// mustRules parses rule specs (ParseRules), failing t if they do not parse.
func mustRules(t testing.TB, specs ...string) Rules {
	t.Helper()
	rules, err := ParseRules(specs)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

func testLogger(t testing.TB) *logrus.Entry { return testlog.New(t) }

func newTunnel(t testing.TB, opts ...tunnelOption) *tunnel {
	t.Helper()
	tn := &tunnel{t: t}
	var err error
	if tn.serverID, err = NewEphemeralIdentity(); err != nil {
		t.Fatal(err)
	}
	if tn.clientID, err = NewEphemeralIdentity(); err != nil {
		t.Fatal(err)
	}
	tn.serverCfg = ServerConfig{
		Identity:    tn.serverID,
		Authorized:  func(fp Fingerprint) bool { return fp == tn.clientID.Fingerprint },
		Policy:      Rules{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), PortLo: 1, PortHi: 65535}},
		DialTimeout: 2 * time.Second,
		Logger:      testLogger(t).WithField("side", "server"),
	}
	for _, o := range opts {
		o(tn)
	}
	tn.startServer("127.0.0.1:0")
	tn.client = tn.newClient(tn.clientID, tn.serverID.Fingerprint)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tn.client.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return tn
}

func (tn *tunnel) startServer(addr string) {
	tn.t.Helper()
	srv, err := NewServer(tn.serverCfg)
	if err != nil {
		tn.t.Fatal(err)
	}
	a, err := srv.Listen(addr)
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.server, tn.serverAddr = srv, a.String()
	tn.t.Cleanup(func() { _ = srv.Close() })
	if tn.tcp {
		ta, err := srv.ListenTCP("127.0.0.1:0")
		if err != nil {
			tn.t.Fatal(err)
		}
		tn.tcpAddr = ta.String()
	}
}

func (tn *tunnel) newClient(id *Identity, pin Fingerprint) *Client {
	tn.t.Helper()
	return tn.newClientWith(func(c *ClientConfig) { c.Identity, c.Pin = id, pin })
}

// newClientWith is a client of tn's identity, changed by mut after the tunnel's options.
func (tn *tunnel) newClientWith(mut func(*ClientConfig)) *Client {
	tn.t.Helper()
	id, pin := tn.clientID, tn.serverID.Fingerprint
	cfg := ClientConfig{
		Server:      tn.serverAddr,
		Identity:    id,
		Pin:         pin,
		DialTimeout: 3 * time.Second,
		Logger:      testLogger(tn.t).WithField("side", "client"),
	}
	if tn.clientMut != nil {
		tn.clientMut(&cfg)
	}
	mut(&cfg)
	c, err := NewClient(cfg)
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { _ = c.Close() })
	return c
}

// forward starts a -L listener for target and returns its address.
// forward listens on a loopback port and carries each connection to target through the
// client, as a -L does (package ingress has the real one; it imports this package).
func (tn *tunnel) forward(target string) string {
	tn.t.Helper()
	tgt, err := flow.ParseTarget(target)
	if err != nil {
		tn.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tn.t.Fatal(err)
	}
	flows := flow.NewGroup(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !flows.Start() {
				_ = c.Close()
				continue
			}
			go tn.client.Carry(flows.Context(), Flow{Target: tgt, Conn: flow.AsConn(c)}, func(flow.Stats, error) { flows.Done() })
		}
	}()
	tn.t.Cleanup(func() { _ = ln.Close(); <-done; flows.Close() })
	return ln.Addr().String()
}

// The loopback ends around the tunnel are package looptest's (which imports no quicmux, so
// these tests can use it; internal/quicmuxtest, which other packages' tests use for the
// tunnel itself, imports quicmux and cannot be used here). They keep their names here.

// destination is a TCP server on loopback that runs handle for every connection. Its
// cleanup closes the connections still open, so a failing test cannot hang in it.
func destination(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	return looptest.Destination(t, handle)
}

// echo copies everything back and closes its send side at EOF.
func echo(c *net.TCPConn) { looptest.Echo(c) }

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	return looptest.ClosedPort(t)
}

// expectReset reads from c until it fails, and checks that it failed with a reset (not a
// clean EOF) within limit.
func expectReset(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	looptest.ExpectReset(t, c, limit)
}

// dialerFunc adapts a function to Dialer.
type dialerFunc = looptest.DialerFunc

// resolverFunc adapts a function to Resolver.
type resolverFunc = looptest.ResolverFunc
