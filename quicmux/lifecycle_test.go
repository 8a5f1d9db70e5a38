package quicmux

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// An http.Transport dialing through the tunnel keeps its connection alive and reuses it, and
// a response the server cuts short with a reset is an error, even one delimited only by the
// end of the connection (where a FIN in place of the reset would look like a whole body).
func TestHTTPTransportReuseAndReset(t *testing.T) {
	tn := newTunnel(t)
	var accepted atomic.Int32
	dst := destination(t, func(c *net.TCPConn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			switch req.URL.Path {
			case "/ok":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
			case "/cut":
				// A body that ends with the connection: half of it, then a reset.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+strings.Repeat("x", 1000))
				_ = c.SetLinger(0)
				return
			}
		}
	})
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return tn.client.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	for i := range 3 {
		resp, err := hc.Get("http://" + dst + "/ok")
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || string(body) != "hello" {
			t.Fatalf("GET %d: %q, %v", i, body, err)
		}
	}
	if d, a := dials.Load(), accepted.Load(); d != 1 || a != 1 {
		t.Fatalf("3 requests took %d dials and %d destination connections, want 1 and 1 (a kept-alive connection)", d, a)
	}

	// The reset may overtake the response (a QUIC stream reset discards what the receiver
	// has not read yet) or cut its body; either way the request fails with a reset.
	resp, err := hc.Get("http://" + dst + "/cut")
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil {
			t.Fatalf("a body cut short by a reset read as complete (%d bytes)", len(body))
		}
	}
	if !flow.IsReset(err) {
		t.Fatalf("cut response: %v, want a reset", err)
	}
}

// The server dials a flow's destination under the client connection's context: when the
// client goes away, its pending dials stop at once rather than run to their timeout.
func TestServerDialEndsWithConnection(t *testing.T) {
	dialing := make(chan struct{})
	dialEnded := make(chan error, 1)
	tn := newTunnel(t,
		withDialTimeout(time.Hour),
		withDialer(dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
			close(dialing)
			<-ctx.Done()
			dialEnded <- ctx.Err()
			return nil, ctx.Err()
		})),
	)
	flowErr := make(chan error, 1)
	go func() {
		_, err := tn.client.DialContext(context.Background(), "tcp", "127.0.0.1:9")
		flowErr <- err
	}()
	<-dialing
	_ = tn.client.Close()
	if err := <-dialEnded; !errors.Is(err, context.Canceled) {
		t.Fatalf("the pending dial ended with %v, want context.Canceled (the connection closed)", err)
	}
	if err := <-flowErr; err == nil {
		t.Fatal("the flow succeeded without a destination")
	}
}

// A client flow ends with its connection even when nothing waits on the stream: here the
// destination has sent its FIN (the stream's direction is over) and the app is quiet, so only
// the connection's end can tell the relay; the flow is reset, not left open.
func TestHalfClosedFlowEndsWithConnection(t *testing.T) {
	tn := newTunnel(t)
	dst := destination(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("bye"))
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	local, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	target, _ := flow.ParseTarget(dst)
	ended := make(chan error, 1)
	tn.client.Carry(context.Background(), Flow{Target: target, Conn: flow.AsConn(local)}, func(_ flow.Stats, err error) { ended <- err })
	if got, err := io.ReadAll(app); err != nil || string(got) != "bye" {
		t.Fatalf("app read %q, %v; want the destination's bytes and its FIN", got, err)
	}
	_ = tn.server.Close()
	select {
	case err := <-ended:
		if !flow.IsReset(err) {
			t.Fatalf("flow ended with %v, want a reset", err)
		}
	case <-time.After(resetLimit):
		t.Fatalf("the half-closed flow outlived its connection by %v", resetLimit)
	}
}

// A Go program that closes a DialContext conn (a full Close, not CloseWrite) after its
// request ends the flow in order on the server too, as a TCP socket closed with nothing
// left to read does: the destination's FIN that follows is no failure.
func TestDialContextCloseEndsInOrder(t *testing.T) {
	reg, m := newTestMetrics(t, "server")
	tn := newTunnel(t, withRules("127.0.0.1/32"), withServerConfig(func(c *ServerConfig) { c.Metrics = m }))
	got := make(chan string, 1)
	dst := destination(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c) // until the client's FIN
		got <- string(b)
		_ = c.Close()
	})
	c, err := tn.client.DialContext(context.Background(), "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if b := await(t, got, "the destination's read"); b != "request" {
		t.Fatalf("destination read %q, want %q", b, "request")
	}
	result := func(r string) float64 { // flows ended with result r (metricValue: -1 for none)
		return max(0, metricValue(t, reg, "quicgate_flows_total", map[string]string{"result": r}))
	}
	if !poll(func() bool { return result("ok")+result("error")+result("reset") >= 1 }) {
		t.Fatal("the flow did not end on the server")
	}
	if result("ok") != 1 {
		t.Fatalf("flows ended ok %v, error %v, reset %v; want one ok", result("ok"), result("error"), result("reset"))
	}
}
