package quicmuxtest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/quicmux"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Start's tunnel carries a flow to a loopback destination under its default policy, and
// through a relay with Via; a test's own policy replaces the default.
func TestStart(t *testing.T) {
	dst := looptest.Destination(t, looptest.Echo)
	roundTrip := func(tn *Tunnel) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := tn.Client.DialContext(ctx, "tcp", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
			t.Fatalf("echo: %q, %v", b, err)
		}
		return nil
	}
	if err := roundTrip(Start(t, quicmux.ServerConfig{}, quicmux.ClientConfig{})); err != nil {
		t.Fatalf("through the tunnel: %v", err)
	}

	var relay *looptest.Relay
	tn := Start(t, quicmux.ServerConfig{}, quicmux.ClientConfig{}, Via(func(server string) string {
		relay = looptest.NewRelay(t, server)
		return relay.Addr()
	}))
	if relay == nil {
		t.Fatal("Via was not asked")
	}
	if err := roundTrip(tn); err != nil {
		t.Fatalf("through the relay: %v", err)
	}

	denied := Start(t, quicmux.ServerConfig{Policy: Rules(t, "10.0.0.0/8")}, quicmux.ClientConfig{})
	if err := roundTrip(denied); !errors.Is(err, quicmux.ErrDenied) {
		t.Fatalf("a destination the test's policy denies: %v, want ErrDenied", err)
	}
}
