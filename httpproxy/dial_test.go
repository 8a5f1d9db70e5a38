package httpproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/httpproxy/proxytest"
	"github.com/quicgate/quicgate/internal/looptest"
)

// secret is the password of every test that has one: no error may show it.
const secret = "s3cr3t-Pa55"

// wait bounds how long a test waits for an event that should come at once, so that a bug
// fails the test instead of hanging it.
const wait = 10 * time.Second

func dialer(t *testing.T, raw string) *Dialer {
	t.Helper()
	u, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &Dialer{Proxy: u}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	t.Cleanup(cancel)
	return ctx
}

// exchange writes msg on c, ends its side and returns what c reads until the far end ends
// its own.
func exchange(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

// roundTrip checks that the echo server at the tunnel's end sends msg back and ends its side
// once c has ended its own.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if got := exchange(t, c, msg); got != msg {
		t.Fatalf("echo through the tunnel = %q, want %q", got, msg)
	}
}

// checkNoSecret fails if err's text shows the password.
func checkNoSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestTunnel(t *testing.T) {
	target := echoServer(t)
	p := &proxytest.Proxy{}
	proxy := p.Start(t)

	c, err := dialer(t, "http://"+proxy).DialContext(testContext(t), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "hello through the proxy")

	seen := p.Seen()
	if len(seen) != 1 {
		t.Fatalf("proxy saw %d requests, want 1: %+v", len(seen), seen)
	}
	req := seen[0]
	if req.Method != "CONNECT" || req.Host != target {
		t.Errorf("proxy saw %s %s, want CONNECT %s", req.Method, req.Host, target)
	}
	if h := req.Header.Get("Proxy-Authorization"); h != "" {
		t.Errorf("Proxy-Authorization %q sent without user info", h)
	}
}

func TestTunnelAuth(t *testing.T) {
	target := echoServer(t)
	p := &proxytest.Proxy{User: "alice", Pass: secret}
	u := &url.URL{Scheme: "http", Host: p.Start(t), User: url.UserPassword("alice", secret)}

	c, err := dialer(t, u.String()).DialContext(testContext(t), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "authenticated")
}

func TestAuthFailures(t *testing.T) {
	p := &proxytest.Proxy{User: "alice", Pass: secret}
	addr := p.Start(t)
	const target = "example.com:443"

	for _, tc := range []struct {
		name     string
		user     *url.Userinfo
		wantHint string
	}{
		{"missing", nil, "(give user:pass in the proxy URL)"},
		{"wrong password", url.UserPassword("alice", secret+"x"), "(it did not accept the user:pass in the proxy URL)"},
		{"wrong user", url.UserPassword("bob", secret), "(it did not accept the user:pass in the proxy URL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &url.URL{Scheme: "http", Host: addr, User: tc.user}
			c, err := dialer(t, u.String()).DialContext(testContext(t), "tcp", target)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, ErrAuth) {
				t.Errorf("error %v is not ErrAuth", err)
			}
			want := fmt.Sprintf("httpproxy: proxy needs authentication: proxy %s answered 407 Proxy Authentication Required to CONNECT %s %s", addr, target, tc.wantHint)
			if err.Error() != want {
				t.Errorf("error\n %s\nwant\n %s", err, want)
			}
			checkNoSecret(t, err)
		})
	}
}

func TestAuthSchemeNotBasic(t *testing.T) {
	addr := serve(t, func(c net.Conn) {
		if _, err := readRequest(c); err == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n")
		}
	})
	_, err := dialer(t, "http://u:"+secret+"@"+addr).DialContext(testContext(t), "tcp", "example.com:443")
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "it asks for NTLM, Negotiate; only Basic is supported") {
		t.Errorf("error %v: want ErrAuth naming NTLM and Negotiate", err)
	}
	checkNoSecret(t, err)
}

func TestForbidden(t *testing.T) {
	p := &proxytest.Proxy{Status: 403}
	addr := p.Start(t)
	u := &url.URL{Scheme: "http", Host: addr, User: url.UserPassword("alice", secret)}

	_, err := dialer(t, u.String()).DialContext(testContext(t), "tcp", "example.com:443")
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v is not ErrRefused", err)
	}
	want := "httpproxy: proxy refused the connection: proxy " + addr + " answered 403 Forbidden to CONNECT example.com:443"
	if err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
	checkNoSecret(t, err)
}

func TestOtherStatus(t *testing.T) {
	p := &proxytest.Proxy{} // dials the target itself: a closed port gives 502
	_, err := dialer(t, "http://"+p.Start(t)).DialContext(testContext(t), "tcp", looptest.ClosedPort(t))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "answered 502 Bad Gateway") {
		t.Errorf("error %v: want ErrRefused after 502", err)
	}
}

func TestUnreachable(t *testing.T) {
	addr := looptest.ClosedPort(t)
	_, err := dialer(t, "http://alice:"+secret+"@"+addr).DialContext(testContext(t), "tcp", "example.com:443")
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("error %v is not ErrUnreachable", err)
	}
	want := "httpproxy: proxy unreachable: " + addr + ": connection refused"
	if err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("error %v does not wrap the *net.OpError", err)
	}
	checkNoSecret(t, err)
}

// silentProxy accepts, reads the CONNECT request, reports it on read, never answers, and
// reports on closed once the client has closed the conn.
func silentProxy(t *testing.T) (addr string, read, closed <-chan struct{}) {
	r, c := make(chan struct{}, 1), make(chan struct{}, 1)
	addr = serve(t, func(conn net.Conn) {
		br, err := readRequest(conn)
		if err != nil {
			return
		}
		r <- struct{}{}
		_, _ = io.Copy(io.Discard, br) // returns when the client closes
		c <- struct{}{}
	})
	return addr, r, c
}

// dialAsync runs DialContext in a goroutine and returns its result on a channel.
func dialAsync(ctx context.Context, d *Dialer, target string) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := d.DialContext(ctx, "tcp", target)
		if err == nil {
			c.Close()
			err = errors.New("dial succeeded")
		}
		done <- err
	}()
	return done
}

func TestSilentProxyDeadline(t *testing.T) {
	addr, _, closed := silentProxy(t)
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()

	var err error
	select {
	case err = <-dialAsync(ctx, dialer(t, addr), "example.com:443"):
	case <-time.After(wait):
		t.Fatal("DialContext outlived its context")
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("DialContext returned after %v, before the deadline %v", elapsed, timeout)
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v: want ErrUnreachable and context.DeadlineExceeded", err)
	}
	want := "httpproxy: proxy unreachable: proxy " + addr + " did not answer CONNECT example.com:443: context deadline exceeded"
	if err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
	select {
	case <-closed:
	case <-time.After(wait):
		t.Error("the conn to the proxy was left open")
	}
}

func TestSilentProxyCancel(t *testing.T) {
	addr, read, closed := silentProxy(t)
	ctx, cancel := context.WithCancel(t.Context()) // no deadline: only cancel ends it
	defer cancel()
	done := dialAsync(ctx, dialer(t, addr), "example.com:443")
	select {
	case <-read:
	case <-time.After(wait):
		t.Fatal("the proxy saw no request")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.Canceled) {
			t.Errorf("error %v: want ErrUnreachable and context.Canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("DialContext ignored the cancellation")
	}
	select {
	case <-closed:
	case <-time.After(wait):
		t.Error("the conn to the proxy was left open")
	}
}

func TestEarlyBytes(t *testing.T) {
	target := echoServer(t)
	p := &proxytest.Proxy{Early: "early bytes|"}

	c, err := dialer(t, "http://"+p.Start(t)).DialContext(testContext(t), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := exchange(t, c, "echoed"), "early bytes|echoed"; got != want {
		t.Errorf("tunnel read %q, want %q", got, want)
	}
}

// TestEarlyBytesBuffered makes sure the header and the bytes after it arrive in one read,
// so that the bytes are in DialContext's buffer.
func TestEarlyBytesBuffered(t *testing.T) {
	addr := serve(t, func(c net.Conn) {
		if _, err := readRequest(c); err == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nVia: test\r\n\r\nfirst bytes")
			closeWrite(c)
		}
	})
	c, err := dialer(t, addr).DialContext(testContext(t), "tcp", "example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*bufferedConn); !ok {
		t.Errorf("tunnel is a %T: the bytes after the header were not buffered", c)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "first bytes" {
		t.Errorf("tunnel read %q, want %q", got, "first bytes")
	}
	// Half-closing goes to the TCP conn under the buffer.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
}

func TestMalformedAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n", "sent a malformed answer"},
		{"long garbage", strings.Repeat("x", 1000) + "\r\n", "sent a malformed answer"},
		{"closed", "", "closed the connection without answering"},
		{"half a header", "HTTP/1.1 200 OK\r\nVia: x", "closed the connection without answering"},
		{"header too long", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("a", maxHeader) + "\r\n\r\n", "header longer than 64 KiB"},
		{"control characters in the status", "HTTP/1.1 502 Bad\x1b[31m Gateway\r\n\r\n", "answered 502 Bad[31m Gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, func(c net.Conn) {
				if _, err := readRequest(c); err == nil {
					_, _ = io.WriteString(c, tc.answer)
					_ = c.Close()
				}
			})
			_, err := dialer(t, "http://u:"+secret+"@"+addr).DialContext(testContext(t), "tcp", "example.com:443")
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v: want ErrRefused saying %q", err, tc.want)
			}
			if err != nil && (strings.ContainsAny(err.Error(), "\r\n\x1b") || len(err.Error()) > 300) {
				t.Errorf("error %q is not one short line of text", err)
			}
			checkNoSecret(t, err)
		})
	}
}

func TestBadDialArguments(t *testing.T) {
	d := dialer(t, "127.0.0.1:1")
	d.Dial = func(context.Context, string, string) (net.Conn, error) {
		t.Error("dialed the proxy for a bad argument")
		return nil, errors.New("no")
	}
	for _, tc := range []struct{ network, target string }{
		{"udp", "example.com:443"},
		{"tcp", "example.com"},
		{"tcp", "example.com:443\r\nX-Injected: 1"},
		{"tcp", "example .com:443"},
	} {
		if _, err := d.DialContext(testContext(t), tc.network, tc.target); err == nil {
			t.Errorf("DialContext(%q, %q) succeeded", tc.network, tc.target)
		}
	}
	if _, err := (&Dialer{}).DialContext(testContext(t), "tcp", "example.com:443"); !errors.Is(err, ErrBadURL) {
		t.Errorf("nil Proxy: error %v, want ErrBadURL", err)
	}
}

func TestCustomDial(t *testing.T) {
	target := echoServer(t)
	proxy := (&proxytest.Proxy{}).Start(t)

	var gotNetwork, gotAddr string
	d := dialer(t, "http://"+proxy)
	d.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		gotNetwork, gotAddr = network, addr
		return new(net.Dialer).DialContext(ctx, network, addr)
	}
	c, err := d.DialContext(testContext(t), "tcp4", target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if gotNetwork != "tcp" || gotAddr != proxy {
		t.Errorf("Dial(%q, %q), want Dial(tcp, %q)", gotNetwork, gotAddr, proxy)
	}
	roundTrip(t, c, "through a custom dial")
}

func TestHTTPSProxy(t *testing.T) {
	target := echoServer(t)
	p := &proxytest.Proxy{User: "alice", Pass: secret}
	srv := p.StartTLS(t)
	u, _ := url.Parse(srv.URL) // https://127.0.0.1:port
	u.User = url.UserPassword("alice", secret)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	t.Run("trusted", func(t *testing.T) {
		d := dialer(t, u.String())
		d.TLSConfig = &tls.Config{RootCAs: roots}
		c, err := d.DialContext(testContext(t), "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, ok := c.(*tls.Conn); !ok {
			t.Errorf("tunnel is a %T, want a *tls.Conn", c)
		}
		roundTrip(t, c, "over TLS to the proxy")
		if d.TLSConfig.ServerName != "" {
			t.Error("DialContext modified the Dialer's TLSConfig")
		}
	})
	t.Run("system roots", func(t *testing.T) {
		_, err := dialer(t, u.String()).DialContext(testContext(t), "tcp", target)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), ": TLS: ") {
			t.Errorf("error %v: want ErrUnreachable from TLS with a test certificate", err)
		}
		checkNoSecret(t, err)
	})
	t.Run("wrong name", func(t *testing.T) {
		d := dialer(t, u.String())
		d.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "proxy.invalid"}
		_, err := d.DialContext(testContext(t), "tcp", target)
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("error %v: want ErrUnreachable for a certificate of another name", err)
		}
	})
}
