package httpproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// The tests that need a working proxy use proxytest.Proxy; serve is for the raw test
// proxies that answer what no proper proxy would.

// serve listens on 127.0.0.1 and runs handle for every conn until the test ends, when the
// listener and the conns are closed and serve waits for the handlers to return. It returns
// the listener's address.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			mu.Lock()
			conns = append(conns, c)
			late := closed
			mu.Unlock()
			if late {
				_ = c.Close()
				return
			}
			wg.Go(func() { handle(c) })
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

// readRequest reads a CONNECT request's header from c, for raw test proxies.
func readRequest(c net.Conn) (*bufio.Reader, error) {
	br := bufio.NewReader(c)
	_, err := http.ReadRequest(br)
	return br, err
}
