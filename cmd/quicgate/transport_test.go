package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicgate/quicgate/bench/wanlink"
	"github.com/quicgate/quicgate/internal/privtest"
)

// udpBlockTopology is a client host A and a server host B in namespaces the test makes,
// joined by a userspace link (bench/wanlink: 200 Mbit/s, 2 ms round trip) that can drop
// every UDP packet, as a firewall that blocks UDP does. B's server listens on 10.213.0.2
// (UDP and TCP), and its destination is 10.99.0.5:80 on B's loopback.
type udpBlockTopology struct {
	a, b string
	link *wanlink.Link
}

const (
	blockServer = "10.213.0.2"
	blockDst    = "10.99.0.5:80"
)

var blockSeq atomic.Int32

func newUDPBlockTopology(t *testing.T) *udpBlockTopology {
	t.Helper()
	id := strconv.Itoa(os.Getpid()) + "u" + strconv.Itoa(int(blockSeq.Add(1)))
	tp := &udpBlockTopology{a: "qgA" + id, b: "qgB" + id}
	addNetns(t, tp.a, tp.b)
	params := wanlink.Symmetric(200e6, 2*time.Millisecond, 0, 1500, 1)
	link, err := wanlink.Open(wanlink.Config{ClientNS: tp.a, ServerNS: tp.b,
		ClientAddr: netip.MustParsePrefix("10.213.0.1/24"), ServerAddr: netip.MustParsePrefix(blockServer + "/24"),
		Up: params, Down: params})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() }) // before the namespaces go
	tp.link = link
	for _, c := range [][]string{
		{tp.a, "link", "set", "lo", "up"},
		{tp.b, "link", "set", "lo", "up"},
		{tp.b, "addr", "add", "10.99.0.5/32", "dev", "lo"},
	} {
		sh(t, append([]string{"ip", "-n"}, c...)...)
	}
	return tp
}

// start runs the server in B, an HTTP destination beside it, and a client in A with -L to
// the destination; it returns the server, the client and the -L address.
func (tp *udpBlockTopology) start(t *testing.T, clientArgs ...string) (srv, cli *process, local string) {
	t.Helper()
	dir := t.TempDir()
	p := newPairIn(t, dir)
	startHTTPIn(t, tp.b, blockDst)
	srv = startIn(t, tp.b, "server", "--listen", blockServer+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", strings.TrimSuffix(blockDst, ":80"))
	if ready := srv.waitFor(t, "server ready"); ready["tcp_addr"] != blockServer+":4433" {
		t.Fatalf("the server's TCP transport is at %v, want %s:4433", ready["tcp_addr"], blockServer)
	}
	args := append([]string{"client", "--server", blockServer + ":4433", "--state-dir", filepath.Join(dir, "client"),
		"--pin", p.pin, "-L", "0:" + blockDst}, clientArgs...)
	cli = startIn(t, tp.a, args...)
	local = cli.waitFor(t, "forwarding")["listen"].(string)
	return srv, cli, local
}

// fetchIn fetches n bytes at rate bytes/s from the destination through local, in A, and
// returns the fetch's process (it prints "fetch progress", then "fetched" or "fetch failed").
func (tp *udpBlockTopology) fetchIn(t *testing.T, local string, n, rate int) *process {
	t.Helper()
	return startSelfIn(t, tp.a, "fetch", fmt.Sprintf("QUICGATE_TEST_FETCH=http://%s/paced?n=%d&rate=%d", local, n, rate))
}

// fetchWhole fetches n bytes and fails the test unless they all arrive.
func (tp *udpBlockTopology) fetchWhole(t *testing.T, local string, n int) {
	t.Helper()
	done := tp.fetchIn(t, local, n, 1<<30).waitFor(t, "fetched")
	if done["bytes"].(float64) != float64(n) {
		t.Fatalf("fetched %v bytes, want %d", done["bytes"], n)
	}
}

// A network that blocks UDP from the start: the client's --transport auto falls back to the
// TCP transport after QUIC's head start, says so once, and flows work.
func TestUDPBlockedFromStart(t *testing.T) {
	privtest.Require(t, "ip")
	tp := newUDPBlockTopology(t)
	tp.link.BlockUDP(true)
	begin := time.Now()
	srv, cli, local := tp.start(t)
	tp.fetchWhole(t, local, 1<<20)
	t.Logf("UDP blocked from the start: connected and the first 1 MiB fetched %v after the client started",
		time.Since(begin).Round(time.Millisecond))
	if n := cli.count("connected to server over TCP"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once", n)
	}
	if m := srv.waitFor(t, "client connected"); m["transport"] != "tcp" {
		t.Fatalf("the server's client came over %v, want tcp", m["transport"])
	}
	if tp.link.Blocked() == 0 {
		t.Fatal("QUIC was not tried first")
	}
}

// UDP blocked in the middle of a transfer: the open flow ends (not hangs), new flows work
// over TCP within a few seconds, and when UDP passes again the client moves new flows back
// to QUIC.
func TestUDPBlockedMidway(t *testing.T) {
	privtest.Require(t, "ip")
	tp := newUDPBlockTopology(t)
	srv, cli, local := tp.start(t)
	if m := srv.waitFor(t, "client connected"); m["transport"] != nil {
		t.Fatalf("the client came over %v, want QUIC", m["transport"])
	}
	const size, rate = 16 << 20, 4 << 20
	f := tp.fetchIn(t, local, size, rate)
	for {
		if m := f.waitFor(t, "fetch progress"); m["bytes"].(float64) >= size/4 {
			break
		}
	}
	tp.link.BlockUDP(true)
	cut := time.Now()
	if m := f.waitForAll(t, "fetch failed")["fetch failed"]; m["bytes"].(float64) >= size {
		t.Fatalf("the open flow ended with %v bytes", m["bytes"])
	}
	cli.waitFor(t, "reconnected to server over another transport")
	tp.fetchWhole(t, local, 1<<20)
	t.Logf("UDP blocked midway: the open flow ended, and a new one was fetched over TCP %v after UDP was cut",
		time.Since(cut).Round(time.Millisecond))
	if m := srv.waitFor(t, "client connected"); m["transport"] != "tcp" {
		t.Fatalf("the client came back over %v, want tcp", m["transport"])
	}

	tp.link.BlockUDP(false)
	opened := time.Now()
	cli.waitFor(t, "QUIC answers again; new flows go over it")
	t.Logf("back on QUIC %v after UDP passed again (the first retry is 20 s after the move to TCP: the QUIC connection had been lost within a minute)",
		time.Since(opened).Round(time.Millisecond))
	if m := srv.waitFor(t, "client connected"); m["transport"] != nil {
		t.Fatalf("the client came back over %v, want QUIC", m["transport"])
	}
	tp.fetchWhole(t, local, 1<<20)
	if m := srv.waitFor(t, "client disconnected"); m["transport"] != "tcp" { // the first: QUIC's, lost when UDP was cut
		if m = srv.waitFor(t, "client disconnected"); m["transport"] != "tcp" {
			t.Fatalf("the TCP connection was not closed once its flows had ended: %v", m)
		}
	}
}

// The TUN over the TCP transport: DNS (the client's resolve requests), a TCP flow to the
// name it answered, and a ping (the server's echo) all go through, as over QUIC.
func TestTUNOverTCP(t *testing.T) {
	privtest.Require(t, "ip", "curl", "getent", "ping", "sysctl")
	tp := newTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)
	const dns = "10.77.0.53"
	netnsFile(t, tp.b, "hosts", "127.0.0.1 localhost\n"+dst4+" web.farside.test\n")
	netnsFile(t, tp.a, "resolv.conf", "nameserver "+dns+"\noptions timeout:5 attempts:1\n")
	sh(t, "ip", "netns", "exec", tp.b, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 2147483647")
	startHTTPIn(t, tp.b, dst4+":80")
	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", "web.farside.test:80", "--allow", dst4+":80")
	srv.waitFor(t, "server ready")
	cli := startIn(t, tp.a, "client", "--server", addrB+":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--transport", "tcp", "--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16", "--tun-dns", dns)
	if m := cli.waitForAll(t, "tun ready", "connected to server")["connected to server"]; m["transport"] != "tcp" {
		t.Fatalf("connected over %v, want tcp", m["transport"])
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", tp.a}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("getent", "ahostsv4", "web.farside.test"); err != nil || !strings.HasPrefix(out, dst4+" ") {
		t.Fatalf("getent ahostsv4 web.farside.test: %q, %v; want %s", out, err, dst4)
	}
	if out, err := run("curl", "--silent", "--show-error", "--max-time", "50", "http://web.farside.test/"); err != nil || !strings.HasPrefix(out, "hello from the far side") {
		t.Fatalf("curl http://web.farside.test/: %q, %v", out, err)
	}
	if out, err := run("ping", "-n", "-c", "1", "-W", "5", dst4); err != nil || !strings.Contains(out, "1 received") {
		t.Fatalf("ping %s: %v\n%s", dst4, err, out)
	}
	if m := srv.waitFor(t, "client connected"); m["transport"] != "tcp" {
		t.Fatalf("the server's client came over %v, want tcp", m["transport"])
	}
}
