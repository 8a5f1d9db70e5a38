package ingress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/quicmux"
)

func TestParseDynamicForward(t *testing.T) {
	tests := []struct {
		in, want string // want "" means a parse error
	}{
		{"1080", "127.0.0.1:1080"},
		{"0", "127.0.0.1:0"},
		{"127.0.0.2:1080", "127.0.0.2:1080"},
		{"localhost:1080", "127.0.0.1:1080"},
		{"*:1080", "0.0.0.0:1080"},
		{":1080", "0.0.0.0:1080"},
		{"[::1]:1080", "[::1]:1080"},
		{"[::]:1080", "[::]:1080"},
		{"", ""},
		{"x", ""},
		{"70000", ""},
		{"+80", ""},
		{"host.example:1080", ""},
		{"1:2:3", ""},
		{"[::1:1080", ""},
		{"::1:1080", ""},
		{"[fe80::1%eth0]:1080", ""},
	}
	for _, tt := range tests {
		f, err := ParseDynamicForward(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadDynamicForward) {
				t.Errorf("ParseDynamicForward(%q) = %v, %v; want ErrBadDynamicForward", tt.in, f, err)
			}
			continue
		}
		if err != nil || f.String() != tt.want {
			t.Errorf("ParseDynamicForward(%q) = %q, %v; want %q", tt.in, f, err, tt.want)
		}
	}
}

func TestParseProxyUsers(t *testing.T) {
	users, err := ParseProxyUsers(strings.NewReader("# proxy users\nalice:s3cret\n\n  \nbob:pa:ss:word\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users["alice"] != "s3cret" || users["bob"] != "pa:ss:word" {
		t.Fatalf("users = %v", users)
	}
	for _, bad := range []string{"", "# nobody\n", "alice\n", ":pw\n", "alice:\n", "a:1\na:2\n", "u:" + strings.Repeat("p", 256) + "\n"} {
		if users, err := ParseProxyUsers(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseProxyUsers(%q) = %v, want an error", bad, users)
		}
	}
}

// proxyEnv is a tunnel with a proxy in front of its client.
type proxyEnv struct{ proxy *Proxy }

// timedOutAddr is the target whose dial the server's dialer in newProxyEnv fails as timed out.
const timedOutAddr = "127.0.0.3:9"

// newProxyEnv starts a tunnel whose server allows 127.0.0.0/8, ::1 and the name localhost
// (from a hosts file of its own), and a proxy in front of its client. Other targets are
// denied; timedOutAddr times out, and names the hosts file lacks do not resolve.
func newProxyEnv(t *testing.T, cfg ProxyConfig) *proxyEnv {
	t.Helper()
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dialer := flow.TCPDialer(0)
	_, client := startTunnel(t, quicmux.ServerConfig{
		Policy: quicmux.Rules{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), PortLo: 1, PortHi: 65535},
			{Prefix: netip.MustParsePrefix("::1/128"), PortLo: 1, PortHi: 65535},
			{Host: "localhost", PortLo: 1, PortHi: 65535},
		},
		Dialer: dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
			if address == timedOutAddr {
				return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
			}
			return dialer.DialContext(ctx, network, address)
		}),
		Resolver:    noResolver{},
		HostsFile:   hosts,
		DialTimeout: 5 * time.Second,
	}, quicmux.ClientConfig{DialTimeout: 5 * time.Second}, nil)
	cfg.UDP = client // UDP ASSOCIATE through the same tunnel, as ListenProxy has it
	return &proxyEnv{proxy: serveProxy(t, client, cfg, 0)}
}

// serveProxy serves a proxy for t on an ephemeral loopback port until the test ends (UDP
// ASSOCIATE through cfg.UDP; nil: not supported).
func serveProxy(t *testing.T, tun Tunnel, cfg ProxyConfig, drainTimeout time.Duration) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(ln, tun, Options{DrainTimeout: drainTimeout, Logger: testLogger(t).WithField("side", "proxy")}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = p.Close()
	})
	return p
}

// noResolver resolves no name: the tests' names come from the hosts file.
type noResolver struct{}

func (noResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// echoServer echoes every connection on a loopback address of network ("tcp4" or "tcp6")
// until the test ends.
func echoServer(t *testing.T, network string) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); _, _ = io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	return looptest.ClosedPort(t)
}

// --- a raw-socket SOCKS5 client ---

// socksReplyError is a SOCKS5 reply other than success. It matches syscall.ECONNREFUSED, so
// that the contract tests take a flow the proxy refused as they take a refused dial.
type socksReplyError byte

func (e socksReplyError) Error() string        { return fmt.Sprintf("socks5 reply 0x%02x", byte(e)) }
func (e socksReplyError) Is(target error) bool { return target == syscall.ECONNREFUSED }

// socksRequest is a request for target ("host:port": an IPv4 or IPv6 address, else a name)
// with command cmd.
func socksRequest(cmd byte, target string) []byte {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		panic(err)
	}
	port, _ := strconv.Atoi(portStr)
	b := []byte{socksVersion, cmd, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		b = append(append(b, socksAtypIPv4), a.AsSlice()...)
	} else if err == nil {
		b = append(append(b, socksAtypIPv6), a.AsSlice()...)
	} else {
		b = append(append(b, socksAtypDomain, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, uint16(port))
}

// socksDial is socksHandshake's CONNECT to target without authentication.
func socksDial(ctx context.Context, proxy, target string) (*net.TCPConn, []byte, error) {
	return socksHandshake(ctx, proxy, socksRequest(socksConnect, target), "", "")
}

// socksHandshake connects to the proxy, negotiates (username/password when user is set), sends
// req and reads the reply. It returns the conn, positioned after the reply, and the reply;
// a reply other than success is a socksReplyError, with the conn still returned.
func socksHandshake(ctx context.Context, proxy string, req []byte, user, pass string) (*net.TCPConn, []byte, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, nil, err
	}
	c := nc.(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fail := func(err error) (*net.TCPConn, []byte, error) {
		_ = c.Close()
		return nil, nil, err
	}
	greeting := []byte{socksVersion, 1, socksNoAuth}
	if user != "" {
		greeting[2] = socksUserPass
	}
	if _, err := c.Write(greeting); err != nil {
		return fail(err)
	}
	var choice [2]byte
	if _, err := io.ReadFull(c, choice[:]); err != nil {
		return fail(fmt.Errorf("method choice: %w", err))
	}
	if choice[1] != greeting[2] {
		return fail(fmt.Errorf("method %#x chosen", choice[1]))
	}
	if user != "" {
		auth := append(append([]byte{1, byte(len(user))}, user...), byte(len(pass)))
		if _, err := c.Write(append(auth, pass...)); err != nil {
			return fail(err)
		}
		var status [2]byte
		if _, err := io.ReadFull(c, status[:]); err != nil {
			return fail(fmt.Errorf("authentication status: %w", err))
		}
		if status != [2]byte{1, 0} {
			return fail(fmt.Errorf("authentication status % x", status))
		}
	}
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	reply, err := readSOCKSReply(c)
	if err != nil {
		return fail(fmt.Errorf("reply: %w", err))
	}
	_ = c.SetDeadline(time.Time{})
	if reply[1] != socksSucceeded {
		return c, reply, socksReplyError(reply[1])
	}
	return c, reply, nil
}

// readSOCKSReply reads a whole reply: VER REP RSV ATYP BND.ADDR BND.PORT.
func readSOCKSReply(r io.Reader) ([]byte, error) {
	reply := make([]byte, 4)
	if _, err := io.ReadFull(r, reply); err != nil {
		return nil, err
	}
	n := 0
	switch reply[3] {
	case socksAtypIPv4:
		n = 4 + 2
	case socksAtypIPv6:
		n = 16 + 2
	default:
		return reply, fmt.Errorf("reply % x: address type %d", reply, reply[3])
	}
	rest := make([]byte, n)
	_, err := io.ReadFull(r, rest)
	return append(reply, rest...), err
}

// expectClosed checks that the proxy ends c (EOF, or a reset) without sending more.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after the reply: read %d bytes, %v; want the connection closed", n, err)
	}
}

// TestProxySOCKS5Connect: CONNECT to an IPv4, an IPv6 and a domain target (which the server
// resolves through its hosts file), each relayed both ways, with BND the proxy's address.
func TestProxySOCKS5Connect(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{})
	v4 := echoServer(t, "tcp4")
	_, v4port, _ := net.SplitHostPort(v4)
	proxyAddr := env.proxy.Addr().(*net.TCPAddr).AddrPort()
	for _, tc := range []struct{ name, target string }{
		{"IPv4", v4},
		{"IPv6", ""},
		{"domain", "localhost:" + v4port},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "IPv6" {
				tc.target = echoServer(t, "tcp6")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, reply, err := socksDial(ctx, env.proxy.Addr().String(), tc.target)
			if err != nil {
				t.Fatalf("CONNECT %s: %v", tc.target, err)
			}
			defer c.Close()
			if want := socksReply(socksSucceeded, net.TCPAddrFromAddrPort(proxyAddr)); !bytes.Equal(reply, want) {
				t.Fatalf("reply % x, want % x (BND: the proxy's address)", reply, want)
			}
			exchange(t, c, c, "through -D to "+tc.name)
		})
	}
}

// TestProxySOCKS5ReplyCodes: each way the server turns a flow down has its reply code, and
// the proxy closes the connection after it.
func TestProxySOCKS5ReplyCodes(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{})
	for _, tc := range []struct {
		name, target string
		want         byte
	}{
		{"denied", "10.99.0.5:80", socksNotAllowed},
		{"refused", closedPort(t), socksConnectionRefused},
		{"name that does not resolve", "nowhere.test:80", socksHostUnreachable},
		{"timed out", timedOutAddr, socksTTLExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, reply, err := socksDial(ctx, env.proxy.Addr().String(), tc.target)
			if c == nil {
				t.Fatalf("CONNECT %s: %v", tc.target, err)
			}
			defer c.Close()
			if reply[1] != tc.want {
				t.Fatalf("CONNECT %s: reply 0x%02x, want 0x%02x", tc.target, reply[1], tc.want)
			}
			expectClosed(t, c)
		})
	}
}

// rejectingTunnel turns every flow down with err, as the client does when the server (or
// the way to it) does.
type rejectingTunnel struct{ err error }

func (r rejectingTunnel) Carry(_ context.Context, l quicmux.Local, done func(flow.Stats, error)) {
	l.Release(r.err)
	done(flow.Stats{}, r.err)
}

// OpenUDP turns every UDP flow down too (ListenProxy takes a tunnel that has UDP flows).
func (r rejectingTunnel) OpenUDP(context.Context, flow.Target, string, string) (flow.PacketConn, error) {
	return nil, r.err
}

// TestProxyFailureReplies: the mapping of every reason a flow fails to its SOCKS5 reply code
// and HTTP status, the reasons from the tunnel included (no connection to the server, a
// server shutting down, a drain).
func TestProxyFailureReplies(t *testing.T) {
	status := func(s quicmux.Status) error { return &quicmux.StatusError{Status: s} }
	for _, tc := range []struct {
		name  string
		err   error
		socks byte
		http  int
	}{
		{"refused", status(quicmux.StatusRefused), socksConnectionRefused, http.StatusBadGateway},
		{"denied", status(quicmux.StatusDenied), socksNotAllowed, http.StatusForbidden},
		{"unreachable", status(quicmux.StatusUnreachable), socksHostUnreachable, http.StatusBadGateway},
		{"timed out", status(quicmux.StatusTimedOut), socksTTLExpired, http.StatusGatewayTimeout},
		{"bad request", status(quicmux.StatusBadRequest), socksGeneralFailure, http.StatusBadGateway},
		{"shutting down", status(quicmux.StatusShuttingDown), socksGeneralFailure, http.StatusServiceUnavailable},
		{"server unreachable", fmt.Errorf("%w: no answer", quicmux.ErrServerUnreachable), socksNetworkUnreachable, http.StatusServiceUnavailable},
		{"drained", context.Canceled, socksGeneralFailure, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serveProxy(t, rejectingTunnel{tc.err}, ProxyConfig{}, 0)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, reply, _ := socksDial(ctx, p.Addr().String(), "192.0.2.1:80")
			if c == nil {
				t.Fatal("no reply")
			}
			defer c.Close()
			if reply[1] != tc.socks {
				t.Errorf("SOCKS5 reply 0x%02x, want 0x%02x", reply[1], tc.socks)
			}
			expectClosed(t, c)
			resp, hc := httpConnect(t, p.Addr().String(), "192.0.2.1:80", "")
			defer hc.Close()
			if resp.StatusCode != tc.http {
				t.Errorf("CONNECT: %s, want %d", resp.Status, tc.http)
			}
			if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), tc.err.Error()) {
				t.Errorf("CONNECT: body %q does not say %q", body, tc.err)
			}
		})
	}
}

// TestProxySOCKS5Unsupported: what SOCKS5 allows but quicgate does not carry gets its reply
// code: BIND 0x07, and UDP ASSOCIATE 0x07 through a tunnel without UDP flows; an unknown
// address type 0x08, and SOCKS4 its own "rejected".
func TestProxySOCKS5Unsupported(t *testing.T) {
	p := serveProxy(t, rejectingTunnel{errors.New("no flow expected")}, ProxyConfig{}, 0)
	for _, tc := range []struct {
		name string
		req  []byte
		want byte
	}{
		{"BIND", socksRequest(socksBind, "127.0.0.1:80"), socksCommandNotSupported},
		{"UDP ASSOCIATE", socksRequest(socksUDPAssociate, "0.0.0.0:0"), socksCommandNotSupported},
		{"unknown command", socksRequest(9, "127.0.0.1:80"), socksCommandNotSupported},
		{"unknown address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, socksAtypNotSupported},
		{"request version 4", []byte{4, 1, 0, 1, 127, 0, 0, 1, 0, 80}, socksGeneralFailure},
		{"port 0", socksRequest(socksConnect, "127.0.0.1:0"), socksHostUnreachable},
		{"bad name", socksRequest(socksConnect, "bad_name-:80"), socksHostUnreachable},
		{"empty name", []byte{5, 1, 0, socksAtypDomain, 0, 0, 80}, socksHostUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, reply, err := socksHandshake(ctx, p.Addr().String(), tc.req, "", "")
			if c == nil {
				t.Fatalf("no reply: %v", err)
			}
			defer c.Close()
			if reply[1] != tc.want {
				t.Fatalf("reply 0x%02x, want 0x%02x", reply[1], tc.want)
			}
			expectClosed(t, c)
		})
	}
	t.Run("SOCKS4", func(t *testing.T) {
		c := rawExchange(t, p.Addr().String(), []byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
		defer c.Close()
		expectBytes(t, c, []byte{0, 0x5b, 0, 0, 0, 0, 0, 0})
		expectClosed(t, c)
	})
}

// rawExchange connects to addr and writes b.
func rawExchange(t *testing.T, addr string, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c
}

// expectBytes checks that c reads want next.
func expectBytes(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read % x, %v; want % x", got, err, want)
	}
}

// TestProxyMalformedHandshake: a greeting or request that is cut short, stalls or is not
// SOCKS5 or HTTP gets the protocol's failure reply where it has one, and the connection is
// closed; the proxy goes on serving.
func TestProxyMalformedHandshake(t *testing.T) {
	const handshakeTimeout = 300 * time.Millisecond
	env := newProxyEnv(t, ProxyConfig{HandshakeTimeout: handshakeTimeout})
	addr := env.proxy.Addr().String()
	echo := echoServer(t, "tcp4")
	for _, tc := range []struct {
		name     string
		send     []byte
		halfShut bool   // the client ends its side after send
		reply    []byte // what the proxy answers before it closes (nil: nothing)
	}{
		{"no method offered", []byte{5, 0}, false, []byte{5, socksNoAcceptable}},
		{"only username/password offered", []byte{5, 1, socksUserPass}, false, []byte{5, socksNoAcceptable}},
		{"greeting cut short", []byte{5, 3, 0}, true, nil},
		{"request cut short", []byte{5, 1, 0, 5, 1, 0, 1, 127, 0}, true, []byte{5, 0}},
		{"domain cut short", []byte{5, 1, 0, 5, 1, 0, 3, 200, 'a', 'b'}, true, []byte{5, 0}},
		{"greeting stalls", []byte{5, 2, 0}, false, nil},
		{"request stalls", []byte{5, 1, 0, 5, 1}, false, []byte{5, 0}},
		{"neither SOCKS5 nor HTTP", []byte("\x16\x03\x01\x02\x00garbage\r\n\r\n"), false, []byte("HTTP/1.1 400 Bad Request\r\n")},
		{"HTTP head too long", []byte("GET http://localhost/ HTTP/1.1\r\nX-Long: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"), false, []byte("HTTP/1.1 400 Bad Request\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now() // before the connection: the proxy's deadline starts after it
			c := rawExchange(t, addr, tc.send)
			defer c.Close()
			if tc.halfShut {
				_ = c.(*net.TCPConn).CloseWrite()
			}
			if tc.reply != nil {
				expectBytes(t, c, tc.reply)
			}
			if tc.reply == nil || !bytes.HasPrefix(tc.reply, []byte("HTTP/")) {
				expectClosed(t, c)
			}
			if strings.HasSuffix(tc.name, "stalls") {
				if d := time.Since(start); d < handshakeTimeout {
					t.Fatalf("closed after %v, before the handshake timeout of %v", d, handshakeTimeout)
				}
			}
		})
	}
	// Still serving.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := socksDial(ctx, addr, echo)
	if err != nil {
		t.Fatalf("CONNECT after the malformed ones: %v", err)
	}
	defer c.Close()
	exchange(t, c, c, "still serving")
}

// TestProxyAuth: with users configured, SOCKS5 takes only RFC 1929 username/password and
// HTTP only Proxy-Authorization: Basic with a configured pair.
func TestProxyAuth(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{Users: map[string]string{"alice": "s3cret", "bob": "hunter2"}})
	addr := env.proxy.Addr().String()
	echo := echoServer(t, "tcp4")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("SOCKS5 right password", func(t *testing.T) {
		c, _, err := socksHandshake(ctx, addr, socksRequest(socksConnect, echo), "alice", "s3cret")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		exchange(t, c, c, "authenticated")
	})
	for _, cred := range [][2]string{{"alice", "hunter2"}, {"mallory", "s3cret"}, {"alice", "s3cre"}} {
		t.Run("SOCKS5 "+cred[0]+":"+cred[1], func(t *testing.T) {
			auth := append(append([]byte{5, 1, socksUserPass, 1, byte(len(cred[0]))}, cred[0]...), byte(len(cred[1])))
			c := rawExchange(t, addr, append(auth, cred[1]...))
			defer c.Close()
			expectBytes(t, c, []byte{5, socksUserPass, 1, 1})
			expectClosed(t, c)
		})
	}
	t.Run("SOCKS5 without authentication", func(t *testing.T) {
		c := rawExchange(t, addr, []byte{5, 1, socksNoAuth})
		defer c.Close()
		expectBytes(t, c, []byte{5, socksNoAcceptable})
		expectClosed(t, c)
	})
	t.Run("HTTP", func(t *testing.T) {
		basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
		for _, tc := range []struct {
			auth string
			want int
		}{
			{"", http.StatusProxyAuthRequired},
			{basic("alice", "wrong"), http.StatusProxyAuthRequired},
			{"Bearer abc", http.StatusProxyAuthRequired},
			{basic("bob", "hunter2"), http.StatusOK},
		} {
			resp, c := httpConnect(t, addr, echo, tc.auth)
			if resp.StatusCode != tc.want {
				t.Errorf("Proxy-Authorization %q: %s, want %d", tc.auth, resp.Status, tc.want)
			}
			if tc.want == http.StatusProxyAuthRequired && resp.Header.Get("Proxy-Authenticate") != `Basic realm="quicgate"` {
				t.Errorf("407 without Proxy-Authenticate: %v", resp.Header)
			}
			_ = c.Close()
		}
	})
}

// httpConn is a conn whose reads go through the bufio.Reader a response was read with.
type httpConn struct {
	net.Conn
	br *bufio.Reader
}

func (c httpConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// httpConnect sends CONNECT target (with a Proxy-Authorization value if auth is set) and
// reads the response head; the conn reads on after it.
func httpConnect(t *testing.T, proxy, target, auth string) (*http.Response, httpConn) {
	t.Helper()
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	c := rawExchange(t, proxy, []byte(req+"\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = c.Close()
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return resp, httpConn{Conn: c, br: br}
}

// TestProxyHTTPConnect: CONNECT opens a flow (200, then bytes both ways, bytes sent right
// behind the request included); the server's refusals are HTTP statuses.
func TestProxyHTTPConnect(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{})
	addr := env.proxy.Addr().String()
	echo := echoServer(t, "tcp4")
	t.Run("ok", func(t *testing.T) {
		resp, c := httpConnect(t, addr, echo, "")
		defer c.Close()
		if resp.StatusCode != http.StatusOK || resp.Status != "200 Connection established" {
			t.Fatalf("CONNECT: %s", resp.Status)
		}
		exchange(t, c, c, "through CONNECT")
	})
	t.Run("bytes behind the request", func(t *testing.T) {
		// A client may send its first bytes without waiting for the 200: they are relayed
		// after it, not lost with the handshake's buffer.
		c := rawExchange(t, addr, []byte("CONNECT "+echo+" HTTP/1.1\r\nHost: "+echo+"\r\n\r\nearly bytes"))
		defer c.Close()
		expectBytes(t, c, []byte("HTTP/1.1 200 Connection established\r\n\r\nearly bytes"))
	})
	for _, tc := range []struct {
		name, target string
		want         int
	}{
		{"denied", "10.99.0.5:80", http.StatusForbidden},
		{"refused", closedPort(t), http.StatusBadGateway},
		{"unreachable", "nowhere.test:443", http.StatusBadGateway},
		{"timed out", timedOutAddr, http.StatusGatewayTimeout},
		{"no port", "localhost", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, c := httpConnect(t, addr, tc.target, "")
			defer c.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("CONNECT %s: %s, want %d", tc.target, resp.Status, tc.want)
			}
			if !resp.Close {
				t.Errorf("CONNECT %s: the response does not say Connection: close", tc.target)
			}
		})
	}
}

// TestProxyHTTPPlain: a plain-HTTP request with an absolute URL (as http.Transport sends one
// through an http:// proxy) reaches the destination in origin form, without hop-by-hop or
// Proxy-* headers and with Connection: close, its body intact; a denied target is 403.
func TestProxyHTTPPlain(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{Users: map[string]string{"alice": "s3cret"}})
	type seen struct {
		uri, host, body string
		header          http.Header
		close           bool
	}
	got := make(chan seen, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.RequestURI, r.Host, string(body), r.Header, r.Close}
		_, _ = io.WriteString(w, "hello through -D")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = web.Serve(ln) }()
	t.Cleanup(func() { _ = web.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	proxyURL := &url.URL{Scheme: "http", User: url.UserPassword("alice", "s3cret"), Host: env.proxy.Addr().String()}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	req, _ := http.NewRequest(http.MethodPost, "http://localhost:"+port+"/path?q=1", io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body")))
	req.Header.Set("Keep-Alive", "300")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("X-End-To-End", "kept")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello through -D" {
		t.Fatalf("response %s %q", resp.Status, body)
	}
	s := <-got
	if s.uri != "/path?q=1" || s.host != "localhost:"+port || s.body != "chunked body" || !s.close {
		t.Errorf("destination saw %s with Host %q, body %q, close %v; want /path?q=1, localhost:%s, the whole body, Connection: close", s.uri, s.host, s.body, s.close, port)
	}
	for _, name := range []string{"Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "X-Hop"} {
		if v := s.header.Get(name); v != "" {
			t.Errorf("destination got %s: %s", name, v)
		}
	}
	if s.header.Get("X-End-To-End") != "kept" {
		t.Errorf("an end-to-end header was lost: %v", s.header)
	}

	resp, err = hc.Get("http://10.99.0.5/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("denied target: %s, want 403", resp.Status)
	}
	// An origin-form request is not a proxy request.
	c := rawExchange(t, env.proxy.Addr().String(), []byte("GET / HTTP/1.1\r\nHost: localhost\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"))
	defer c.Close()
	expectBytes(t, c, []byte("HTTP/1.1 400 Bad Request\r\n"))
}

// A client that keeps its proxy connection alive (Go's Transport shares one for every
// http:// origin) and an origin that ignores "Connection: close": a second request on the
// connection never reaches the first origin (nor does its Proxy-Authorization), the response
// tells the client to close, and the second request goes out on a new connection to its own
// origin.
func TestProxyHTTPPlainKeepAlive(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{Users: map[string]string{"alice": "s3cret"}})
	origin := func(name string) (port string, seen chan string) {
		seen = make(chan string, 4)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// Raw HTTP that keeps every connection open and answers each request it reads.
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					br := bufio.NewReader(c)
					for {
						r, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						_, _ = io.Copy(io.Discard, r.Body)
						seen <- r.RequestURI + " auth=" + r.Header.Get("Proxy-Authorization")
						body := name + " " + r.RequestURI
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n%s", len(body), body)
					}
				}()
			}
		}()
		t.Cleanup(func() { _ = ln.Close() })
		_, port, _ = net.SplitHostPort(ln.Addr().String())
		return port, seen
	}
	portA, seenA := origin("A")
	portB, seenB := origin("B")
	proxyURL := &url.URL{Scheme: "http", User: url.UserPassword("alice", "s3cret"), Host: env.proxy.Addr().String()}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(u string) (string, bool) {
		t.Helper()
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.Close
	}
	if body, closing := get("http://localhost:" + portA + "/first"); body != "A /first" || !closing {
		t.Fatalf("first response %q (Connection: close %v), want A's with Connection: close", body, closing)
	}
	if body, _ := get("http://127.0.0.1:" + portB + "/second"); body != "B /second" {
		t.Fatalf("second response %q, want B's", body)
	}
	if got := <-seenA; got != "/first auth=" {
		t.Fatalf("origin A saw %q", got)
	}
	if got := <-seenB; got != "/second auth=" {
		t.Fatalf("origin B saw %q", got)
	}
	select {
	case got := <-seenA:
		t.Fatalf("origin A also saw %q", got)
	default:
	}
}

// TestProxyCloseEndsHandshakes: Close resets a connection still in its handshake at once,
// and a drain that outlives its timeout too.
func TestProxyCloseEndsHandshakes(t *testing.T) {
	p, err := ListenProxy(DynamicForward{Bind: netip.MustParseAddrPort("127.0.0.1:0")}, rejectingTunnel{errors.New("no flow expected")},
		Options{Logger: testLogger(t)}, ProxyConfig{HandshakeTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(context.Background()) }()
	c := rawExchange(t, p.Addr().String(), []byte{5, 1, 0})
	defer c.Close()
	expectBytes(t, c, []byte{5, 0}) // the handshake is under way
	_ = p.Close()
	expectClosed(t, c)
	if err := <-served; err == nil {
		t.Fatal("Serve returned nil after Close, want the listener's error")
	}
}

// --- the flow contract through -D (harness_test.go runs it for every ingress) ---

// startProxy serves a -D on an ephemeral loopback port; the app reaches flowTarget with a
// SOCKS5 CONNECT.
func (h *harness) startProxy(drainTimeout time.Duration) {
	t := h.t
	p, err := ListenProxy(DynamicForward{Bind: netip.MustParseAddrPort("127.0.0.1:0")}, h.client,
		Options{DrainTimeout: drainTimeout, Logger: testLogger(t).WithField("side", "ingress")}, ProxyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	h.serve(p)
	h.dialApp = func(ctx context.Context) (appConn, error) {
		c, _, err := socksDial(ctx, p.Addr().String(), flowTarget.String())
		if err != nil {
			if c != nil {
				_ = c.Close()
			}
			return nil, err
		}
		return kernelApp{c}, nil
	}
}

// The handshake's deadline ends with the handshake: a flow that then stays idle for longer
// than the handshake may take goes on.
func TestProxyHandshakeDeadlineCleared(t *testing.T) {
	const handshake = 200 * time.Millisecond
	env := newProxyEnv(t, ProxyConfig{HandshakeTimeout: handshake})
	dst := newDestination(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := socksDial(ctx, env.proxy.Addr().String(), dst.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := dst.accept(t)
	time.Sleep(3 * handshake) // the scenario, not a wait for an event: idle past the deadline
	exchange(t, c, d, "after an idle while")
	exchange(t, d, c, "both ways")
}

// TestProxySOCKS5UDPAssociate: a UDP association relays the client's datagrams, each naming
// its target (an address, or a name the server resolves), as UDP flows, and the answers come
// back with the header naming the target as the request did; the control connection's end
// ends the association.
func TestProxySOCKS5UDPAssociate(t *testing.T) {
	env := newProxyEnv(t, ProxyConfig{})
	echo := netip.MustParseAddrPort(udpEchoServer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctl, reply, err := socksHandshake(ctx, env.proxy.Addr().String(), socksRequest(socksUDPAssociate, "0.0.0.0:0"), "", "")
	if err != nil {
		t.Fatalf("UDP ASSOCIATE: %v", err)
	}
	if reply[1] != socksSucceeded || reply[3] != socksAtypIPv4 {
		t.Fatalf("reply % x", reply)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[4:8])), binary.BigEndian.Uint16(reply[8:10]))
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	// exchange sends payload to target through the relay (again every 200 ms: UDP may drop)
	// and returns the answer's header and payload.
	exchange := func(header []byte, payload string) ([]byte, string) {
		t.Helper()
		buf := make([]byte, 65536)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			if _, err := uc.WriteToUDPAddrPort(append(append([]byte(nil), header...), payload...), relay); err != nil {
				t.Fatal(err)
			}
			_ = uc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				continue
			}
			if from != relay {
				t.Fatalf("answer from %v, want the relay %v", from, relay)
			}
			return buf[:n-len(payload)], string(buf[n-len(payload) : n])
		}
		t.Fatalf("no answer for %q within a minute", payload)
		return nil, ""
	}
	byAddr := append([]byte{0, 0, 0, socksAtypIPv4}, echo.Addr().AsSlice()...)
	byAddr = binary.BigEndian.AppendUint16(byAddr, echo.Port())
	if h, p := exchange(byAddr, "to an address"); !bytes.Equal(h, byAddr) || p != "to an address" {
		t.Fatalf("answer %x %q, want header %x and the payload back", h, p, byAddr)
	}
	byName := append([]byte{0, 0, 0, socksAtypDomain, byte(len("localhost"))}, "localhost"...)
	byName = binary.BigEndian.AppendUint16(byName, echo.Port())
	if h, p := exchange(byName, "to a name"); !bytes.Equal(h, byName) || p != "to a name" {
		t.Fatalf("answer %x %q, want header %x and the payload back", h, p, byName)
	}
	if got := env.proxy.flows.Open(); got != 1 {
		t.Fatalf("%d flows open in the proxy, want the association's 1", got)
	}
	_ = ctl.Close()
	deadline := time.Now().Add(time.Minute)
	for env.proxy.flows.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the association outlived its control connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
