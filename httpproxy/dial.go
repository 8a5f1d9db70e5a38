package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// maxHeader bounds the proxy's answer to CONNECT: a status line and headers longer than
// this are ErrRefused, so a broken or hostile proxy cannot make the client buffer without
// end.
const maxHeader = 64 << 10

// Dialer dials TCP targets through one HTTP CONNECT proxy. Only Proxy must be set; the
// other fields may stay zero. A Dialer may be used by many goroutines at once.
type Dialer struct {
	// Proxy is the proxy to go through, from Parse or FromEnvironment; it must not be nil.
	Proxy *url.URL

	// Dial reaches the proxy; nil means a zero net.Dialer's DialContext. It is always
	// called with network "tcp" and the proxy's host:port.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSConfig is for an https:// proxy; nil means the system roots. If its ServerName is
	// empty, the proxy URL's host is used. It is cloned, never modified.
	TLSConfig *tls.Config
}

// DialContext connects to the proxy, sends "CONNECT target HTTP/1.1" with a Host header
// and, when the proxy URL has user info, "Proxy-Authorization: Basic", and returns the
// tunnel to target once the proxy answers 2xx. Bytes the proxy sent after its answer are
// the first the returned conn reads. network is "tcp", "tcp4" or "tcp6"; the proxy, not
// this host, resolves target, so the choice between them is the proxy's.
//
// ctx bounds the whole exchange, the dial included: give it a deadline, since a proxy that
// accepts and never answers holds DialContext until ctx ends. It does not bound the tunnel
// once returned.
//
// On failure the conn to the proxy is closed and the error wraps ErrUnreachable, ErrAuth or
// ErrRefused (and the cause, a net error or ctx's error, where there is one) in one line
// that names the proxy by host:port and never shows its password.
func (d *Dialer) DialContext(ctx context.Context, network, target string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("httpproxy: network %q is not supported (want tcp)", network)
	}
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if d.Proxy == nil {
		return nil, fmt.Errorf("httpproxy: %w: Dialer.Proxy is nil", ErrBadURL)
	}
	proxy := Addr(d.Proxy)

	dial := d.Dial
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	conn, err := dial(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: %w: %s: %w", ErrUnreachable, proxy, shortError{err})
	}

	// ctx bounds the exchange: when it ends (its deadline passes, or it is cancelled), the
	// conn's deadline moves to the past, which ends a Read or Write in progress. Only ctx
	// sets the deadline, so a deadline error means ctx ended.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	tunnel, err := d.handshake(ctx, conn, proxy, target)
	if !stop() && err == nil {
		// ctx ended as the exchange succeeded: the conn's deadline may already be in
		// the past, so the tunnel cannot be handed over.
		err = fmt.Errorf("httpproxy: %w: proxy %s: CONNECT %s: %w", ErrUnreachable, proxy, target, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			// Name the cause the caller knows rather than "i/o timeout".
			err = fmt.Errorf("httpproxy: %w: proxy %s did not answer CONNECT %s: %w", ErrUnreachable, proxy, target, ctxErr)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return tunnel, nil
}

// handshake runs TLS to an https:// proxy, then the CONNECT exchange. proxy is the proxy's
// host:port, for messages.
func (d *Dialer) handshake(ctx context.Context, conn net.Conn, proxy, target string) (net.Conn, error) {
	if d.Proxy.Scheme == "https" {
		tc := tls.Client(conn, d.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("httpproxy: %w: %s: TLS: %w", ErrUnreachable, proxy, shortError{err})
		}
		conn = tc
	}
	return connect(conn, d.Proxy, proxy, target)
}

// connect sends CONNECT target on conn and reads the answer.
func connect(conn net.Conn, u *url.URL, proxy, target string) (net.Conn, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if u.User != nil {
		pass, _ := u.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pass))
		fmt.Fprintf(&req, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("httpproxy: %w: proxy %s did not take CONNECT %s: %w", ErrUnreachable, proxy, target, err)
		}
		return nil, fmt.Errorf("httpproxy: %w: proxy %s: sending CONNECT %s: %w", ErrRefused, proxy, target, shortError{err})
	}

	// The reader cannot pull more than maxHeader bytes from conn, so a longer header ends
	// in an error; whatever it pulled past the header stays in its buffer for the tunnel.
	limited := &io.LimitedReader{R: conn, N: maxHeader}
	br := bufio.NewReader(limited)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	switch {
	case err != nil && limited.N == 0:
		return nil, fmt.Errorf("httpproxy: %w: proxy %s answered CONNECT %s with a header longer than %d KiB", ErrRefused, proxy, target, maxHeader>>10)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("httpproxy: %w: proxy %s closed the connection without answering CONNECT %s", ErrRefused, proxy, target)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("httpproxy: %w: proxy %s did not answer CONNECT %s: %w", ErrUnreachable, proxy, target, err)
	case errors.As(err, new(*net.OpError)):
		return nil, fmt.Errorf("httpproxy: %w: proxy %s: reading its answer to CONNECT %s: %w", ErrRefused, proxy, target, shortError{err})
	case err != nil:
		// The error quotes the answer: bound it.
		return nil, fmt.Errorf("httpproxy: %w: proxy %s sent a malformed answer to CONNECT %s: %s", ErrRefused, proxy, target, printable(err.Error()))
	}
	status := printable(resp.Status)
	switch {
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return nil, fmt.Errorf("httpproxy: %w: proxy %s answered %s to CONNECT %s (%s)", ErrAuth, proxy, status, target, authHint(u, resp.Header))
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("httpproxy: %w: proxy %s answered %s to CONNECT %s", ErrRefused, proxy, status, target)
	}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		return &bufferedConn{Conn: conn, early: append([]byte(nil), early...)}, nil
	}
	return conn, nil
}

// authHint says, after a 407, what the user can do.
func authHint(u *url.URL, h http.Header) string {
	if u.User == nil {
		return "give user:pass in the proxy URL"
	}
	var schemes []string
	for _, v := range h.Values("Proxy-Authenticate") {
		scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "Basic") {
			return "it did not accept the user:pass in the proxy URL"
		}
		if scheme != "" {
			schemes = append(schemes, printable(scheme))
		}
	}
	if len(schemes) > 0 {
		return "it asks for " + strings.Join(schemes, ", ") + "; only Basic is supported"
	}
	return "it did not accept the user:pass in the proxy URL"
}

// checkTarget refuses a target that is not host:port, or that would change the request
// line (a space, CR or LF).
func checkTarget(target string) error {
	if strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("httpproxy: bad target %q: it holds a space or a control character", target)
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("httpproxy: bad target %q: want host:port", target)
	}
	return nil
}

// Addr is the proxy's host:port, with the scheme's default port if u (not from Parse or
// FromEnvironment) has none: where a Dialer connects.
func Addr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (d *Dialer) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if d.TLSConfig != nil {
		cfg = d.TLSConfig.Clone()
	} else {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = d.Proxy.Hostname()
	}
	return cfg
}

// printable bounds text the proxy sent (a status line, a scheme) for a one-line message.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 120 {
		s = strings.ToValidUTF8(s[:120], "") + "..."
	}
	return s
}

// shortError shows a dial or I/O error without the parts the message already gives: "dial
// tcp 127.0.0.1:3128: connect: connection refused" becomes "connection refused". errors.Is
// and errors.As still see the whole error.
type shortError struct{ err error }

func (e shortError) Error() string {
	err := e.err
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) {
		err = sc.Err
	}
	return err.Error()
}

func (e shortError) Unwrap() error { return e.err }

// bufferedConn is the tunnel when the proxy sent bytes right after its answer's header:
// Read returns them before reading conn again.
type bufferedConn struct {
	net.Conn
	mu    sync.Mutex
	early []byte
}

var _ net.Conn = (*bufferedConn)(nil)

func (c *bufferedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// CloseWrite ends the send side (a TCP FIN, a TLS close_notify) if the conn to the proxy
// can, so the tunnel half-closes as a plain TCP conn does.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("httpproxy: %T cannot half-close: %w", c.Conn, errors.ErrUnsupported)
}

// NetConn is the conn to the proxy under the buffer, as tls.Conn's NetConn is: a caller
// that tunes the socket (TCP_NOTSENT_LOWAT) finds it.
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }
