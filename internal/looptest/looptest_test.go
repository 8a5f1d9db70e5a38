package looptest

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A Destination runs its handler for each connection (Echo copies back, then FINs); a
// closed port refuses; a reset is told from an EOF.
func TestDestination(t *testing.T) {
	c, err := net.Dial("tcp", Destination(t, Echo))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "hello" {
		t.Fatalf("echo: %q, %v; want hello, then EOF", b, err)
	}

	if _, err := net.Dial("tcp", ClosedPort(t)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial a closed port: %v, want refused", err)
	}

	r, err := net.Dial("tcp", Destination(t, func(c *net.TCPConn) {
		_, _ = c.Read(make([]byte, 1))
		_ = c.SetLinger(0) // the close sends RST
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ExpectReset(t, r, time.Minute)
}

// A Relay carries datagrams both ways until Blackhole.
func TestRelay(t *testing.T) {
	server, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	r := NewRelay(t, server.LocalAddr().String())
	client, err := net.Dial("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	buf := make([]byte, 64)
	// The first datagram both ways; UDP may drop on a loaded host, so a few tries.
	var from *net.UDPAddr
	for try := 0; from == nil; try++ {
		if try == 50 {
			t.Fatal("no datagram through the relay")
		}
		_, _ = client.Write([]byte("ping"))
		_ = server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, a, err := server.ReadFromUDP(buf)
		if err == nil && string(buf[:n]) == "ping" {
			from = a
		}
	}
	if _, err := server.WriteToUDP([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(time.Minute))
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("answer through the relay: %q, %v", buf[:n], err)
	}

	r.Blackhole()
	_, _ = client.Write([]byte("lost"))
	_ = server.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := server.ReadFromUDP(buf); err == nil {
		t.Fatalf("the server got %q after Blackhole", buf[:n])
	}
}
