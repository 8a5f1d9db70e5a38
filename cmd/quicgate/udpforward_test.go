package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A bad -U is one line and exit status 2; -U alone is something to forward.
func TestUDPForwardBadFlags(t *testing.T) {
	pin := fingerprint(t, filepath.Join(t.TempDir(), "s"))
	client := []string{"client", "--server", "127.0.0.1:1", "--pin", pin}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"bad -U", []string{"-U", "5353:127.0.0.1"}, `-U: ingress: bad -U forward "5353:127.0.0.1": 2 fields`},
		{"-U port out of range", []string{"-U", "70000:127.0.0.1:53"}, "bad -U forward"},
		{"-U without a target port", []string{"-U", "5353:127.0.0.1:0"}, "bad -U forward"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runQuick(t, append(client, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line saying %q", code, stderr, tt.want)
			}
		})
	}
}

// -U end to end with the binaries: a Go UDP client's packets reach a UDP echo server through
// the tunnel and its answers come back, a small one and one too large for a QUIC datagram;
// a target the server does not allow is logged as denied and never answers.
func TestUDPForwardProcesses(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	echoAddr := echo.LocalAddr().String()

	p := newPair(t)
	srv, addr := p.startServer(t, "udp:"+echoAddr)
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-U", "0:"+echoAddr, "-U", "0:127.0.0.1:9", "--log-level", "debug")
	cli.waitFor(t, "connected to server")
	first := cli.waitFor(t, "forwarding udp")
	second := cli.waitFor(t, "forwarding udp")
	if first["target"] != echoAddr || second["target"] != "127.0.0.1:9" {
		t.Fatalf("logged %v and %v", first, second)
	}

	c, err := net.Dial("udp", first["listen"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range [][]byte{[]byte("through -U"), bytes.Repeat([]byte("0123456789"), 6000)} {
		if err := udpRoundTrip(c, msg); err != nil {
			t.Fatal(err)
		}
	}

	denied, err := net.Dial("udp", second["listen"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer denied.Close()
	_, _ = denied.Write([]byte("anyone?"))
	if m := cli.waitFor(t, "flow failed"); m["result"] != "denied" || m["proto"] != "udp" {
		t.Fatalf("client logged %v", m)
	}
	if m := srv.waitFor(t, "flow rejected"); m["result"] != "denied" {
		t.Fatalf("server logged %v", m)
	}
	_ = denied.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := denied.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a denied target answered %d bytes", n)
	}

	cli.stop(t)
	srv.stop(t)
}

// udpRoundTrip sends msg on c until it comes back (UDP may lose it: again every 200 ms, for
// up to hangLimit).
func udpRoundTrip(c net.Conn, msg []byte) error {
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(hangLimit)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return err
		}
		if bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
	return fmt.Errorf("no echo of %d bytes through -U within %v", len(msg), hangLimit)
}
