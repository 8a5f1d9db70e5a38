package ingress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

func TestParseRemoteForward(t *testing.T) {
	tests := []struct {
		in, want string // want "" means a parse error
	}{
		{"8080:127.0.0.1:80", "127.0.0.1:8080:127.0.0.1:80"},
		{"*:8080:localhost:3000", "0.0.0.0:8080:localhost:3000"},
		{"[::1]:8080:[fd00::5]:80", "[::1]:8080:[fd00::5]:80"},
		{"0:127.0.0.1:80", ""},
		{"8080:127.0.0.1", ""},
		{"x:8080:127.0.0.1:80", ""},
	}
	for _, tt := range tests {
		f, err := ParseRemoteForward(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadRemoteForward) || !strings.Contains(err.Error(), "-R") {
				t.Errorf("ParseRemoteForward(%q) = %v, %v; want ErrBadRemoteForward naming -R", tt.in, f, err)
			}
			continue
		}
		if err != nil || f.String() != tt.want {
			t.Errorf("ParseRemoteForward(%q) = %q, %v; want %q", tt.in, f, err, tt.want)
		}
	}
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) netip.AddrPort { return netip.MustParseAddrPort(closedPort(t)) }

// -R end to end: an app on the server's side reaches a destination on the client's side,
// with half-close and resets as every flow has them; a destination that refuses resets the
// app; the drain closes the server's listener.
func TestReverseForward(t *testing.T) {
	_, client := startTunnel(t, quicmux.ServerConfig{
		Policy:       quicmux.Rules{},
		ListenPolicy: func(quicmux.Fingerprint, netip.AddrPort) bool { return true },
	}, quicmux.ClientConfig{}, nil)
	dst := newDestination(t)
	bind := freeAddr(t)
	target, _ := flow.ParseTarget(dst.addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := ListenReverse(ctx, RemoteForward{Bind: bind, Target: target}, client, Options{DrainTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()

	dialApp := func() *net.TCPConn {
		t.Helper()
		c, err := net.Dial("tcp", bind.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c.(*net.TCPConn)
	}

	// Bytes both ways, then the app's FIN reaches the destination, whose reply still
	// reaches the app, then its FIN.
	app := dialApp()
	d := dst.accept(t)
	exchange(t, app, d, "to the client's side")
	exchange(t, d, app, "and back")
	_ = app.CloseWrite()
	_ = d.SetDeadline(time.Now().Add(time.Minute))
	if b, err := io.ReadAll(d); err != nil || len(b) != 0 {
		t.Fatalf("destination read %q, %v after the app's FIN; want EOF", b, err)
	}
	if _, err := d.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	_ = d.CloseWrite()
	_ = app.SetDeadline(time.Now().Add(time.Minute))
	if b, err := io.ReadAll(app); err != nil || string(b) != "last" {
		t.Fatalf("app read %q, %v; want the last bytes, then EOF", b, err)
	}

	// The destination resets: so does the app's connection.
	app = dialApp()
	d = dst.accept(t)
	exchange(t, app, d, "x")
	abortTCP(d)
	_ = app.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadAll(app); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app after the destination's reset: %v, want ECONNRESET", err)
	}

	// The destination refuses: the app's connection is reset. The server's kernel has
	// completed the app's handshake before the server accepts, so the reset can arrive
	// before net.Dial has read its socket's state (34 of 300 runs here), and then Dial
	// reports it ("connect: connection reset by peer"): the same reset, seen sooner.
	dst.closeNew.Store(true)
	_ = dst.ln.Close()
	c, err := net.Dial("tcp", bind.String())
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		_, err = io.ReadAll(c)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app whose destination refused: %v, want ECONNRESET", err)
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		c, err := net.Dial("tcp", bind.String())
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			_ = c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("the server still listens after the -R drained")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = r.Close()
}

// A server that does not allow the listen: ListenReverse fails, naming the reason.
func TestReverseForwardDenied(t *testing.T) {
	_, client := startTunnel(t, quicmux.ServerConfig{Policy: quicmux.Rules{}}, quicmux.ClientConfig{}, nil)
	target, _ := flow.ParseTarget("127.0.0.1:80")
	_, err := ListenReverse(context.Background(), RemoteForward{Bind: freeAddr(t), Target: target}, client, Options{})
	if !errors.Is(err, quicmux.ErrDenied) || !strings.Contains(err.Error(), "-R 127.0.0.1:") || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("ListenReverse on a server that allows no listen: %v, want a denied error naming the -R", err)
	}
}
