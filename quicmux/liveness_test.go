package quicmux

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go"
)

// A server that falls silent (its host died: every packet to and from it is lost) is given
// up after the silence limit, not the 60 s idle timeout: an open flow is reset within twice
// the keepalive period of the server's last packet, a new flow fails within the dial
// timeout, one line says so, and once the server answers again the client reconnects from
// a new UDP socket and new flows work.
func TestSilentServer(t *testing.T) {
	log, events := watchLog(t)
	tn := newTunnel(t)
	proxy := newImpairProxy(t, tn.serverAddr, 0, 0, 0)
	const dialTimeout = 3 * time.Second
	c, err := NewClient(ClientConfig{Server: proxy.addr(), Identity: tn.clientID, Pin: tn.serverID.Fingerprint,
		DialTimeout: dialTimeout, Logger: log.WithField("side", "client")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := destination(t, echo)
	open, err := c.DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	checkEcho(t, open, "before")
	firstSocket := proxy.clientAddr()

	proxy.setLoss(1)
	start := time.Now()
	// The documented bounds (docs/operations.md, "A server that stops answering"): the
	// silence limit is twice the keepalive period (the client's, 1 s), and a flow that
	// waits for the server fails within the dial timeout. The slack is for a loaded
	// machine; either wait is far below the 60 s idle timeout this replaces.
	const slack = 2 * time.Second
	silenceLimit := 2 * c.cfg.Limits.KeepAlive
	newFlow := make(chan error, 1)
	var newFlowTook time.Duration
	go func() {
		_, err := c.DialContext(context.Background(), "tcp", dst)
		newFlowTook = time.Since(start)
		newFlow <- err
	}()
	expectReset(t, open, silenceLimit+slack)
	openTook := time.Since(start)
	err = await(t, newFlow, "the new flow's end")
	if !errors.Is(err, ErrServerUnreachable) {
		t.Fatalf("a new flow to a silent server: %v, want ErrServerUnreachable", err)
	}
	if newFlowTook > dialTimeout+slack {
		t.Fatalf("a new flow to a silent server failed after %v, want within the dial timeout, %v", newFlowTook, dialTimeout)
	}
	t.Logf("silent server: the open flow was reset after %v, a new flow failed after %v",
		openTook.Round(time.Millisecond), newFlowTook.Round(time.Millisecond))
	if n := events.count("no answer from server; connection lost, reconnecting"); n != 1 {
		t.Fatalf("the silence was logged %d times, want once", n)
	}

	// Down for a while, as a server host that reboots: the client's redials back off.
	time.Sleep(4 * time.Second)
	proxy.setLoss(0)
	back := time.Now()
	events.wait(t, "reconnected to server", 1)
	t.Logf("reconnected %v after the server answered again", time.Since(back).Round(time.Millisecond))
	again, err := c.DialContext(t.Context(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	checkEcho(t, again, "after")
	if n := c.Dials(); n != 2 {
		t.Fatalf("the client dialed %d times, want 2", n)
	}
	// A new socket: a load balancer that hashes the client's address may choose anew.
	if now := proxy.clientAddr(); now == firstSocket {
		t.Fatalf("the client reconnected from the same address, %s", now)
	}
	// Only the one line for the whole outage: the failed redials say nothing more.
	if n := events.count("cannot connect to server"); n != 0 {
		t.Fatalf("the redials logged %d warnings, want none after the silence line", n)
	}
}

// A request whose connection the server closes before answering is one the server never
// answered (ErrServerUnreachable), unless it closed it because this client is no longer
// authorized: then the request fails as the reconnection will, with ErrUnauthorized.
func TestNoAnswerNamesRevocation(t *testing.T) {
	revoked := &quic.ApplicationError{Remote: true, ErrorCode: connRevoked, ErrorMessage: "client no longer authorized"}
	if err := noAnswer(revoked); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("revoked: %v, want ErrUnauthorized", err)
	}
	for _, err := range []error{
		&quic.ApplicationError{Remote: true, ErrorCode: connShutdown},
		&quic.ApplicationError{Remote: false, ErrorCode: connRevoked}, // our own close
		&quic.IdleTimeoutError{},
	} {
		if got := noAnswer(err); !errors.Is(got, ErrServerUnreachable) || errors.Is(got, ErrUnauthorized) {
			t.Fatalf("%v: %v, want ErrServerUnreachable", err, got)
		}
	}
}
