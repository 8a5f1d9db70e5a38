package quicmuxtest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/internal/testlog"
	"github.com/quicgate/quicgate/quicmux"
)

// looptest's functions are what a test's configs take.
var (
	_ quicmux.Dialer   = looptest.DialerFunc(nil)
	_ quicmux.Resolver = looptest.ResolverFunc(nil)
)

// Tunnel is a server on loopback and a client connected to it.
type Tunnel struct {
	Server     *quicmux.Server
	ServerAddr string // where the server listens (the client may dial a relay instead)
	ServerID   *quicmux.Identity
	Client     *quicmux.Client
	ClientID   *quicmux.Identity
}

// Option changes how Start sets the tunnel up.
type Option func(*options)

type options struct {
	via func(serverAddr string) string
}

// Via has the client dial the address via returns for the server's instead (a relay in
// between, such as a looptest.Relay's).
func Via(via func(serverAddr string) string) Option {
	return func(o *options) { o.via = via }
}

// ConnectTimeout bounds the client's first connection in Start.
const ConnectTimeout = 10 * time.Second

// Start starts a server on an ephemeral loopback port from sc and a client from cc, connects
// the client, and closes both at the test's cleanup (client first). It fills in sc.Identity
// and cc.Identity (fresh ones), cc.Server and cc.Pin, and, where the test left them nil,
// sc.Authorized (the client's identity alone), sc.Policy (every port on 127.0.0.0/8) and
// both Loggers (t.Log, with the field side=server or side=client).
func Start(t testing.TB, sc quicmux.ServerConfig, cc quicmux.ClientConfig, opts ...Option) *Tunnel {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	serverID, err := quicmux.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	clientID, err := quicmux.NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tn := &Tunnel{ServerID: serverID, ClientID: clientID}
	sc.Identity = serverID
	if sc.Authorized == nil {
		sc.Authorized = func(fp quicmux.Fingerprint) bool { return fp == clientID.Fingerprint }
	}
	if sc.Policy == nil {
		sc.Policy = quicmux.Rules{{Prefix: netip.MustParsePrefix("127.0.0.0/8"), PortLo: 1, PortHi: 65535}}
	}
	if sc.Logger == nil {
		sc.Logger = testlog.New(t).WithField("side", "server")
	}
	if tn.Server, err = quicmux.NewServer(sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tn.Server.Close() })
	addr, err := tn.Server.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tn.ServerAddr = addr.String()

	cc.Server = tn.ServerAddr
	if o.via != nil {
		cc.Server = o.via(tn.ServerAddr)
	}
	cc.Identity, cc.Pin = clientID, serverID.Fingerprint
	if cc.Logger == nil {
		cc.Logger = testlog.New(t).WithField("side", "client")
	}
	if tn.Client, err = quicmux.NewClient(cc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tn.Client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout)
	defer cancel()
	if err := tn.Client.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return tn
}

// Rules parses allow rules (quicmux.ParseRules), failing the test on a bad one.
func Rules(t testing.TB, specs ...string) quicmux.Rules {
	t.Helper()
	rules, err := quicmux.ParseRules(specs)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}
