// Package proxytest runs an HTTP CONNECT proxy on loopback for tests of programs that go
// through one (quicgate's client with --proxy): net/http hijacks each CONNECT and splices it
// to its target, optionally after Basic authentication.
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

// Proxy is a CONNECT proxy. If User is set, Basic credentials User:Pass are required.
type Proxy struct {
	User, Pass string

	connects atomic.Int64
	refused  atomic.Int64

	mu    sync.Mutex
	conns []io.Closer
	wg    sync.WaitGroup
}

// Start runs p on 127.0.0.1 until the test ends and returns its address.
func (p *Proxy) Start(t testing.TB) string {
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return srv.Listener.Addr().String()
}

// Connects is how many tunnels the proxy opened.
func (p *Proxy) Connects() int64 { return p.connects.Load() }

// Refused is how many CONNECTs it refused for want of credentials.
func (p *Proxy) Refused() int64 { return p.refused.Load() }

// ServeHTTP answers CONNECT requests.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	p.mu.Lock()
	p.conns = append(p.conns, c, dst)
	p.mu.Unlock()
	p.connects.Add(1)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		_, _ = io.Copy(dst, rw.Reader)
		_ = dst.Close()
	}()
	go func() {
		defer p.wg.Done()
		_, _ = io.Copy(c, dst)
		_ = c.Close()
	}()
}

func (p *Proxy) authorized(r *http.Request) bool {
	cred, ok := strings.CutPrefix(r.Header.Get("Proxy-Authorization"), "Basic ")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(cred)
	return err == nil && string(b) == p.User+":"+p.Pass
}
