package httpproxy

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// tracker owns the conns and goroutines of a test server and ends them with the test.
type tracker struct {
	mu    sync.Mutex
	conns []io.Closer
	wg    sync.WaitGroup
}

func newTracker(t *testing.T) *tracker {
	tr := new(tracker)
	t.Cleanup(func() {
		tr.mu.Lock()
		for _, c := range tr.conns {
			_ = c.Close()
		}
		tr.mu.Unlock()
		tr.wg.Wait()
	})
	return tr
}

func (tr *tracker) own(c ...io.Closer) {
	tr.mu.Lock()
	tr.conns = append(tr.conns, c...)
	tr.mu.Unlock()
}

func (tr *tracker) run(f func()) {
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		f()
	}()
}

// serve listens on 127.0.0.1 and runs handle for every conn until the test ends, when the
// listener and the conns are closed. It returns the listener's address.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(t)
	tr.own(ln)
	tr.run(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.own(c)
			tr.run(func() { handle(c) })
		}
	})
	return ln.Addr().String()
}

// echoServer returns the address of a server that sends back what it reads and ends its
// side when the client ends its own.
func echoServer(t *testing.T) string {
	return serve(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		closeWrite(c)
	})
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// seenRequest is what the test proxy received.
type seenRequest struct {
	method, host string
	header       http.Header
}

// testProxy is a CONNECT proxy built on net/http: it hijacks CONNECT requests and splices
// them to their target.
type testProxy struct {
	user, pass string // if user is set, Basic credentials are required
	status     int    // if set, every CONNECT is answered with it
	early      string // written right after the 200 header, before the target's bytes

	seen chan seenRequest
	tr   *tracker
}

// start runs p on 127.0.0.1 (over TLS if tlsServer) and returns its server.
func (p *testProxy) start(t *testing.T, tlsServer bool) *httptest.Server {
	p.seen = make(chan seenRequest, 16)
	var srv *httptest.Server
	if tlsServer {
		srv = httptest.NewTLSServer(p)
	} else {
		srv = httptest.NewServer(p)
	}
	t.Cleanup(srv.Close)
	p.tr = newTracker(t) // cleaned up before srv: hijacked conns are not the server's
	return srv
}

func (p *testProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case p.seen <- seenRequest{r.Method, r.Host, r.Header.Clone()}:
	default:
	}
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	if p.user != "" && !p.authorized(r) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if p.status != 0 {
		w.WriteHeader(p.status)
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
	p.tr.own(c, dst)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"+p.early); err != nil {
		return
	}
	p.tr.run(func() {
		_, _ = io.Copy(dst, rw.Reader)
		closeWrite(dst)
	})
	p.tr.run(func() {
		_, _ = io.Copy(c, dst)
		closeWrite(c)
	})
}

func (p *testProxy) authorized(r *http.Request) bool {
	cred, ok := strings.CutPrefix(r.Header.Get("Proxy-Authorization"), "Basic ")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(cred)
	return err == nil && string(b) == p.user+":"+p.pass
}

// readRequest reads a CONNECT request's header from c, for raw test proxies.
func readRequest(c net.Conn) (*bufio.Reader, error) {
	br := bufio.NewReader(c)
	_, err := http.ReadRequest(br)
	return br, err
}
