package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/privtest"
)

// ping through the TUN: the server's echo answers it. B's namespace lets every group open
// ICMP sockets (net.ipv4.ping_group_range is per namespace: nothing outside B changes), so
// the server sends its echoes from an unprivileged ICMP socket. An address the server's
// rules allow on no port is not pinged and the app gets no reply.
func TestTUNPingEndToEnd(t *testing.T) {
	privtest.Require(t, "ip", "ping", "sysctl")
	tp := newTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)
	sh(t, "ip", "netns", "exec", tp.b, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")

	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", dst4+":80", "--allow", "udp:["+dst6+"]:53", "--log-level", "debug")
	srv.waitFor(t, "server ready")
	cli := startIn(t, tp.a, "client", "--server", addrB+":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--tun-addr", "fd00:77::1/64", "--route", "10.99.0.0/16", "--route", "fd00:99::/64")
	cli.waitForAll(t, "tun ready", "connected to server")

	ping := func(addr string, wait int) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", tp.a, "ping", "-n", "-c", "1", "-W", fmt.Sprint(wait), "-s", "100", addr)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, addr := range []string{dst4, dst6} {
		out, err := ping(addr, 5)
		if err != nil || !strings.Contains(out, "1 received") || !strings.Contains(out, "108 bytes from "+addr) {
			t.Fatalf("ping %s: %v\n%s", addr, err, out)
		}
	}
	// 10.99.0.6 is routed into the TUN but no rule allows it: no reply (ping exits 1
	// after its one-second wait).
	if out, err := ping("10.99.0.6", 1); err == nil || !strings.Contains(out, "0 received") {
		t.Fatalf("ping to a denied address: %v\n%s", err, out)
	}
	if n := srv.count("echo: this server may not open ICMP sockets, so pings through TUNs go unanswered; allow its group in net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range='0 2147483647') or give it CAP_NET_RAW"); n != 0 {
		t.Fatalf("the server logged %d times that it may not open ICMP sockets", n)
	}
}
