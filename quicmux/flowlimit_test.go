package quicmux

import (
	"context"
	"errors"
	"net"
	"testing"
)

// A client identity may have MaxFlowsPerClient streams open over all its connections; one
// more is answered "too many flows" at once, and a slot frees when a flow ends.
func TestMaxFlowsPerClient(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.MaxFlowsPerClient = 3 }))
	other := tn.newClient(tn.clientID, tn.serverID.Fingerprint) // the same identity, a second connection
	dst := destination(t, echo)
	dial := func(c *Client) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		conn, err := c.DialContext(ctx, "tcp", dst)
		if err == nil {
			t.Cleanup(func() { _ = conn.Close() })
		}
		return conn, err
	}
	var open []net.Conn
	for _, c := range []*Client{tn.client, tn.client, other} {
		conn, err := dial(c)
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, conn, "held")
		open = append(open, conn)
	}
	for _, c := range []*Client{tn.client, other} {
		if _, err := dial(c); !errors.Is(err, ErrTooManyFlows) {
			t.Fatalf("a fourth flow: %v, want ErrTooManyFlows", err)
		}
	}
	_ = open[0].Close()
	var conn net.Conn
	waitFor(t, func() bool {
		var err error
		conn, err = dial(other)
		return err == nil
	}, "a flow once one of the three ended")
	checkEcho(t, conn, "after")
	for _, c := range append(open, conn) {
		_ = c.Close()
	}
	waitFor(t, func() bool {
		tn.server.liveMu.Lock()
		defer tn.server.liveMu.Unlock()
		return len(tn.server.flowsOf) == 0
	}, "every slot released")
}
