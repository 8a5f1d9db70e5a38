package ingress

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// ErrBadDynamicForward: a -D specification could not be parsed.
var ErrBadDynamicForward = errors.New("ingress: bad -D forward")

// DynamicForward is one -D: a local address where a SOCKS5 and HTTP proxy listens, each of
// whose requests names its own target.
type DynamicForward struct {
	Bind netip.AddrPort // port 0 picks a free port
}

func (f DynamicForward) String() string { return f.Bind.String() }

// ParseDynamicForward parses "[bind_address:]port" as ssh -D does. IPv6 addresses go in
// brackets; the bind address defaults to 127.0.0.1, "localhost" means 127.0.0.1 and "*" (or
// an empty address) all interfaces.
func ParseDynamicForward(spec string) (DynamicForward, error) {
	bad := func(why string) (DynamicForward, error) {
		return DynamicForward{}, fmt.Errorf("%w %q: %s (want [bind_address:]port)", ErrBadDynamicForward, spec, why)
	}
	fields, err := splitForward(spec)
	if err != nil {
		return bad(err.Error())
	}
	bind := "127.0.0.1"
	switch len(fields) {
	case 1:
	case 2:
		bind, fields = fields[0], fields[1:]
	default:
		return bad(fmt.Sprintf("%d fields", len(fields)))
	}
	addr, err := parseBind(bind, fields[0])
	if err != nil {
		return bad(err.Error())
	}
	return DynamicForward{Bind: addr}, nil
}

// ProxyConfig is what a -D proxy asks of its clients.
type ProxyConfig struct {
	// Users, when not empty, are the user names and passwords a client must present: RFC
	// 1929 username/password for SOCKS5, "Proxy-Authorization: Basic" for HTTP. Both send
	// them in clear text. Empty: no authentication.
	Users map[string]string
	// HandshakeTimeout bounds a request's handshake (SOCKS5 greeting, authentication and
	// request; an HTTP request's head); default DefaultProxyHandshakeTimeout.
	HandshakeTimeout time.Duration
	// UDP carries the datagrams of SOCKS5 UDP ASSOCIATE (socksudp.go): *quicmux.Client is
	// one, and ListenProxy sets it to its tunnel when it is nil. Nil (NewProxy): the command
	// is answered "command not supported".
	UDP UDPTunnel
}

// DefaultProxyHandshakeTimeout is how long a proxy client has for its handshake by default.
const DefaultProxyHandshakeTimeout = 10 * time.Second

// maxHandshakeBytes bounds what a proxy reads before it knows a request's target: a SOCKS5
// handshake is at most 1,037 bytes, an HTTP request head is what it costs.
const maxHandshakeBytes = 64 << 10

// maxCredential is RFC 1929's limit on a user name and on a password.
const maxCredential = 255

// ParseProxyUsers reads a credentials file for ProxyConfig.Users: one "user:password" a line
// (the password is everything after the first colon), blank lines and lines starting with
// '#' ignored. Each part is 1-255 bytes, as RFC 1929 carries them.
func ParseProxyUsers(r io.Reader) (map[string]string, error) {
	users := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("line %d: want user:password", n)
		case user == "" || len(user) > maxCredential:
			return nil, fmt.Errorf("line %d: the user name must be 1-%d bytes", n, maxCredential)
		case pass == "" || len(pass) > maxCredential:
			return nil, fmt.Errorf("line %d: the password must be 1-%d bytes", n, maxCredential)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("line %d: user %q is listed again", n, user)
		}
		users[user] = pass
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New("no user:password line")
	}
	return users, nil
}

// LoadProxyUsers reads a credentials file (ParseProxyUsers); errors name the file.
func LoadProxyUsers(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// As ssh with a private key: passwords others may read are not passwords.
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %#o lets other users read the passwords (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	users, err := ParseProxyUsers(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

// checkUser reports whether user and pass are a configured pair, in time that depends on
// neither (both sides are hashed first).
func checkUser(users map[string]string, user, pass string) bool {
	want, ok := users[user]
	a, b := sha256.Sum256([]byte(pass)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && ok
}

// Proxy is the dynamic ingress, one -D: a SOCKS5 server (RFC 1928: CONNECT to IPv4, IPv6 and
// domain targets; no authentication, or RFC 1929 username/password) that also takes HTTP
// proxy requests (CONNECT, and plain-HTTP requests with absolute URLs) on the same listener.
// Every request becomes a flow to the target it names, carried like any other ingress's
// flows; a domain target goes to the server as a name, which only the server resolves. The
// client is answered only once the server has: with success, or with the reply that says why
// not (SOCKS5 reply codes, HTTP statuses; docs/operations.md, "-D").
//
// A Proxy serves any net.Listener (NewProxy), which is its Go API; ListenProxy binds a -D.
type Proxy struct {
	ln    net.Listener
	name  string // "-D bind:port", with the bound port
	tun   Tunnel
	cfg   ProxyConfig // cfg.UDP nil: no UDP ASSOCIATE
	opt   Options
	log   *logrus.Entry
	flows *flow.Group
	// writers are the goroutines that write plain-HTTP requests for their destinations
	// (plainFlow); each ends with its flow.
	writers sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var _ Ingress = (*Proxy)(nil)

// ListenProxy binds f's local address (accepted sockets keep alive, Options.TCPKeepAlive)
// and returns the proxy on it, which carries UDP ASSOCIATE's datagrams through t as well
// unless cfg.UDP says otherwise.
func ListenProxy(f DynamicForward, t ProxyTunnel, opt Options, cfg ProxyConfig) (*Proxy, error) {
	lc := flow.TCPListenConfig(opt.TCPKeepAlive)
	ln, err := lc.Listen(context.Background(), "tcp", f.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("ingress: -D %s: %w", f, err)
	}
	if cfg.UDP == nil {
		cfg.UDP = t
	}
	return NewProxy(ln, t, opt, cfg), nil
}

// NewProxy returns a proxy that serves the connections ln accepts, once Serve runs; it owns
// ln from now on. Its flows go through t, and UDP ASSOCIATE's datagrams through cfg.UDP. A kernel TCP socket's end is reset (RST) when its flow is; a conn of
// another kind (flow.AsConn) can only be closed.
func NewProxy(ln net.Listener, t Tunnel, opt Options, cfg ProxyConfig) *Proxy {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultProxyHandshakeTimeout
	}
	if len(cfg.Users) == 0 {
		cfg.Users = nil
	}
	return &Proxy{
		ln:    ln,
		name:  "-D " + ln.Addr().String(),
		tun:   t,
		cfg:   cfg,
		opt:   opt,
		log:   opt.logger().WithField("listen", ln.Addr().String()),
		flows: flow.NewGroup(context.Background()),
	}
}

// Addr is the bound address (with the chosen port when -D asked for port 0).
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// Serve accepts until ctx ends or the listener fails. Then it closes the listener, lets the
// open flows (and handshakes under way) finish for up to the drain timeout, resets the
// rest, and returns once all are gone.
func (p *Proxy) Serve(ctx context.Context) error {
	// A connection counts as a flow from its accept: a drain waits for its handshake, and a
	// reset (Close, the drain timeout) ends the handshake too. Its goroutine lives for the
	// handshake and until the flow is under way.
	defer p.writers.Wait() // after the drain: every flow has ended
	return acceptFlows(ctx, p.ln, p.flows, p.opt, p.log, p.name, p.serveConn)
}

// Close stops accepting and resets the open flows and handshakes at once.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.closeErr = p.ln.Close()
		if errors.Is(p.closeErr, net.ErrClosed) {
			p.closeErr = nil
		}
		p.flows.Close()
		p.writers.Wait()
	})
	return p.closeErr
}

// errProxyAuth: a proxy client did not present a configured user and password.
var errProxyAuth = errors.New("authentication failed")

// proxyRequest is what a handshake read: where the flow goes, and how to answer the client.
type proxyRequest struct {
	proto  string // "socks5", "http connect" or "http", for the log
	target flow.Target
	// plain is a plain-HTTP request, in origin form (toOrigin), for the destination;
	// its body is still to be read from the connection.
	plain *http.Request
	// associate is a SOCKS5 UDP ASSOCIATE: no target, a UDP relay (serveAssociate).
	associate bool
	// accept writes the reply that opens the flow (local: the proxy's end, SOCKS5's BND);
	// reject the reply that says why the flow failed.
	accept func(w io.Writer, local net.Addr) error
	reject func(w io.Writer, err error)
}

// serveConn reads one connection's request and carries its flow.
func (p *Proxy) serveConn(conn net.Conn) {
	local := flow.AsConn(conn)
	peer := conn.RemoteAddr().String()
	// Until the flow is carried, a reset of the group (Close, a drain's timeout) aborts the
	// handshake; Carry watches the same context from then on.
	stop := context.AfterFunc(p.flows.Context(), local.Abort)
	_ = conn.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	limit := &limitedReader{r: conn, n: maxHandshakeBytes}
	br := bufio.NewReader(limit)
	req, err := readProxyRequest(br, conn, p.cfg.Users)
	limit.n = math.MaxInt // the request is read: a plain-HTTP body may be any size
	if !stop() {
		p.flows.Done() // reset during the handshake: the conn is aborted already
		return
	}
	if err != nil {
		level := logrus.DebugLevel
		if errors.Is(err, errProxyAuth) {
			level = logrus.InfoLevel
		}
		p.log.WithField("peer", peer).WithError(err).Log(level, "proxy request refused")
		closeAfterReply(conn, local)
		p.flows.Done()
		return
	}
	// The request is read; the wait for the server is bounded by the tunnel's dial timeout.
	_ = conn.SetDeadline(time.Time{})
	if req.associate {
		p.serveAssociate(conn, local, peer)
		return
	}
	var pending []byte
	if req.plain == nil && br.Buffered() > 0 {
		pending, _ = br.Peek(br.Buffered())
	}
	f := quicmux.Pending{
		Target:  req.target,
		Ingress: p.name,
		Peer:    peer,
		Accept: func() (flow.Conn, error) {
			if err := req.accept(conn, conn.LocalAddr()); err != nil {
				local.Abort()
				return nil, err
			}
			if req.plain != nil {
				return newPlainFlow(local, req.plain, &p.writers), nil
			}
			if len(pending) == 0 {
				return local, nil
			}
			return &prefixedFlow{Conn: local, pending: pending}, nil
		},
		Reject: func(err error) {
			req.reject(conn, err)
			closeAfterReply(conn, local)
		},
	}
	carry(p.tun, p.flows, f, p.log.WithField("proto", req.proto))
}

// readProxyRequest tells SOCKS5 from HTTP by the first byte and reads the request. On an
// error the reply that says so, where the protocol has one, is written already.
func readProxyRequest(br *bufio.Reader, w io.Writer, users map[string]string) (*proxyRequest, error) {
	first, err := br.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("no request: %w", err)
	}
	switch first[0] {
	case socksVersion:
		return readSOCKS(br, w, users)
	case 4:
		// SOCKS4: "request rejected or failed", in its own reply format.
		_, _ = w.Write([]byte{0, 0x5b, 0, 0, 0, 0, 0, 0})
		return nil, errors.New("SOCKS4 is not supported (use SOCKS5)")
	}
	return readHTTPProxy(br, w, users)
}

// closeAfterReply ends a connection that got a failure reply: a FIN after the reply, and
// what the client still sends is read and dropped for a moment, so that it finds the reply
// rather than a reset (closing a socket with unread bytes sends a RST, which may overtake the
// reply).
func closeAfterReply(conn net.Conn, local flow.Conn) {
	if local.CloseWrite() == nil {
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, maxHandshakeBytes))
	}
	_ = local.Close()
}

// limitedReader reads at most n bytes from r, then io.EOF: a handshake's bound.
type limitedReader struct {
	r io.Reader
	n int
}

var errHandshakeTooLong = errors.New("handshake longer than 64 KiB")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHandshakeTooLong
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// prefixedFlow is a local end whose first bytes for the destination are pending: what the
// handshake read past the request (a SOCKS5 or CONNECT client's early bytes).
// It embeds only the flow.Conn interface, so the relay copies through Read instead of reading
// the socket itself.
type prefixedFlow struct {
	flow.Conn
	pending []byte
}

func (c *prefixedFlow) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
