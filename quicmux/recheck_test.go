package quicmux

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/logging"
)

// policyFunc adapts a function to Policy.
type policyFunc func(flow.Target) bool

func (f policyFunc) Allow(t flow.Target) bool { return f(t) }

// A reload takes effect on what is open: flows the new rules deny are reset, other flows go
// on, and a client removed from the authorized list loses its connection and cannot come
// back.
func TestRecheckAfterReload(t *testing.T) {
	keep := netip.MustParseAddrPort(destination(t, echo))
	drop := netip.MustParseAddrPort(destination(t, echo))
	var rules atomic.Pointer[Rules]
	all := Rules{
		{Prefix: netip.PrefixFrom(keep.Addr(), 32), PortLo: keep.Port(), PortHi: keep.Port()},
		{Prefix: netip.PrefixFrom(drop.Addr(), 32), PortLo: drop.Port(), PortHi: drop.Port()},
	}
	rules.Store(&all)
	var revoked atomic.Bool
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) {
		c.Policy = policyFunc(func(tg flow.Target) bool { return rules.Load().Allow(tg) })
		authorized := c.Authorized
		c.Authorized = func(fp Fingerprint) bool { return !revoked.Load() && authorized(fp) }
	}))

	kept := tn.forward(keep.String())
	dropped := tn.forward(drop.String())
	a, err := net.Dial("tcp", kept)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	checkEcho(t, a, "kept")
	b, err := net.Dial("tcp", dropped)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkEcho(t, b, "dropped")

	// New rules without the second destination: its flow is reset, the first goes on.
	fewer := all[:1]
	rules.Store(&fewer)
	if conns, flows, _ := tn.server.Recheck(); conns != 0 || flows != 1 {
		t.Fatalf("Recheck closed %d connections and reset %d flows, want 0 and 1", conns, flows)
	}
	expectReset(t, b, resetLimit)
	checkEcho(t, a, "still here")

	// The client is no longer authorized: its connection closes, its flow is reset, and it
	// cannot reconnect.
	revoked.Store(true)
	if conns, _, _ := tn.server.Recheck(); conns != 1 {
		t.Fatalf("Recheck closed %d connections, want 1", conns)
	}
	expectReset(t, a, resetLimit)
	if _, err := tn.client.DialContext(context.Background(), "tcp", keep.String()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("dial after revocation: %v, want ErrUnauthorized", err)
	}
}

// Authorization is checked on every handshake, a resumed one included: the server's
// VerifyConnection sees the certificate a session ticket carries and applies the list as it is
// now.
func TestAuthorizationOnResumedHandshake(t *testing.T) {
	server, _ := NewEphemeralIdentity()
	client, _ := NewEphemeralIdentity()
	var allowed atomic.Bool
	allowed.Store(true)
	base := serverTLS(server, func(fp Fingerprint) bool { return allowed.Load() && fp == client.Fingerprint }, logging.Discard(), func(string) {})
	conf, err := base.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if conf.VerifyConnection == nil {
		t.Fatal("no VerifyConnection: resumed handshakes would skip the authorization check")
	}
	leaf, err := x509.ParseCertificate(client.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	resumed := tls.ConnectionState{DidResume: true, PeerCertificates: []*x509.Certificate{leaf}}
	if err := conf.VerifyConnection(resumed); err != nil {
		t.Fatalf("authorized client, resumed: %v", err)
	}
	allowed.Store(false)
	if err := conf.VerifyConnection(resumed); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("revoked client, resumed: %v, want ErrUnauthorized", fmt.Sprint(err))
	}
}

// One client identity may hold at most MaxConnsPerClient connections: one more is refused
// with its own error, and gets in once another has closed.
func TestMaxConnsPerClient(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.MaxConnsPerClient = 1 }))
	second := tn.newClient(tn.clientID, tn.serverID.Fingerprint)
	ctx, cancel := context.WithTimeout(context.Background(), resetLimit)
	defer cancel()
	if err := second.Connect(ctx); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("second connection: %v, want ErrTooManyConns", err)
	}
	_ = tn.client.Close()
	ctx, cancel = context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	for {
		err := second.Connect(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrTooManyConns) {
			t.Fatalf("second connection after the first closed: %v", err)
		}
	}
}
