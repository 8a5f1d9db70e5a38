// Package proxytest runs an HTTP CONNECT proxy on loopback for tests of programs that go
// through one (quicgate's client with --proxy, package httpproxy's Dialer): net/http hijacks
// each CONNECT and splices it to its target, optionally after Basic authentication, over
// plain TCP or TLS.
package proxytest

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a CONNECT proxy. Set its fields before starting it; they are not to change after.
//
// A tunnel is spliced both ways: when one side ends its writes, the proxy ends its writes
// to the other side (a half-close), and once both directions have ended, or one failed, it
// closes both connections. Whatever is still open when the test ends is closed then.
type Proxy struct {
	// If User is set, Basic credentials User:Pass are required: a CONNECT without them is
	// answered 407 Proxy Authentication Required.
	User, Pass string
	// If Status is set, every CONNECT that passes authentication is answered with it, and
	// the proxy dials nothing.
	Status int
	// Early is written right after the 200 header, before the target's bytes, as a proxy
	// that sends the header and the first bytes in one segment.
	Early string

	connects atomic.Int64
	refused  atomic.Int64

	mu     sync.Mutex
	seen   []Request
	conns  []io.Closer
	closed bool           // the test has ended: no new tunnel
	wg     sync.WaitGroup // handlers and splicing goroutines
}

// Request is a request the proxy received, as the client sent it.
type Request struct {
	Method string
	Host   string // the CONNECT target: the request's authority
	Header http.Header
}

// Start runs p on 127.0.0.1 until the test ends and returns its address (host:port).
func (p *Proxy) Start(t testing.TB) string {
	return p.start(t, httptest.NewServer(p)).Listener.Addr().String()
}

// StartTLS runs p on 127.0.0.1 over TLS until the test ends (an https:// proxy) and
// returns its server, for its URL and its certificate. The test's cleanup closes it.
func (p *Proxy) StartTLS(t testing.TB) *httptest.Server {
	return p.start(t, httptest.NewTLSServer(p))
}

func (p *Proxy) start(t testing.TB, srv *httptest.Server) *httptest.Server {
	t.Cleanup(func() {
		srv.Close() // hijacked conns are not the server's: they are closed below
		p.mu.Lock()
		p.closed = true
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return srv
}

// Connects is how many tunnels the proxy opened.
func (p *Proxy) Connects() int64 { return p.connects.Load() }

// Refused is how many CONNECTs it refused for want of credentials.
func (p *Proxy) Refused() int64 { return p.refused.Load() }

// Seen returns the requests the proxy received so far, CONNECT or not, in order.
func (p *Proxy) Seen() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.seen...)
}

// ServeHTTP answers CONNECT requests.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, Request{Method: r.Method, Host: r.Host, Header: r.Header.Clone()})
	closed := p.closed
	if !closed {
		p.wg.Add(1) // under mu before closed is set: the cleanup's Wait comes after
	}
	p.mu.Unlock()
	if closed {
		http.Error(w, "test over", http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()

	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	if p.User != "" && !p.authorized(r) {
		p.refused.Add(1)
		w.Header().Set("Proxy-Authenticate", `Basic realm="proxytest"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if p.Status != 0 {
		w.WriteHeader(p.Status)
		return
	}
	dst, err := net.Dial("tcp", r.Host)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	c, rw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		_ = dst.Close()
		return
	}
	if !p.own(c, dst) {
		return
	}
	p.connects.Add(1)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+p.Early); err != nil {
		_, _ = c.Close(), dst.Close()
		return
	}
	var left atomic.Int32 // directions still copying
	left.Store(2)
	splice := func(to net.Conn, from io.Reader) {
		defer p.wg.Done()
		_, err := io.Copy(to, from)
		if err == nil {
			err = closeWrite(to)
		}
		if err != nil || left.Add(-1) == 0 {
			_, _ = c.Close(), dst.Close()
		}
	}
	p.wg.Add(2)
	go splice(dst, rw.Reader) // rw.Reader holds what the client sent after its header
	go splice(c, dst)
}

// own records conns for the test's cleanup to close, or closes them if it has run.
func (p *Proxy) own(conns ...io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	p.conns = append(p.conns, conns...)
	return true
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (p *Proxy) authorized(r *http.Request) bool {
	cred, ok := strings.CutPrefix(r.Header.Get("Proxy-Authorization"), "Basic ")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(cred)
	return err == nil && string(b) == p.User+":"+p.Pass
}
