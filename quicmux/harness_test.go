package quicmux

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/quicgate/quicgate/flow"
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
func withResolver(r Resolver) tunnelOption { return func(tn *tunnel) { tn.serverCfg.Resolver = r } }
func withRules(specs ...string) tunnelOption {
	return func(tn *tunnel) {
		rules, err := ParseRules(specs)
		if err != nil {
			tn.t.Fatal(err)
		}
		tn.serverCfg.Policy = rules
	}
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
}

func (tn *tunnel) newClient(id *Identity, pin Fingerprint) *Client {
	tn.t.Helper()
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

// destination is a TCP server on loopback that runs handle for every connection. Its
// cleanup closes the connections still open, so a failing test cannot hang in it.
func destination(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies everything back and closes its send side at EOF.
func echo(c *net.TCPConn) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, c)
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// expectReset reads from c until it fails, and checks that it failed with a reset (not a
// clean EOF) within limit.
func expectReset(t *testing.T, c net.Conn, limit time.Duration) {
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

// dialerFunc adapts a function to Dialer.
type dialerFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// resolverFunc adapts a function to Resolver.
type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}
