package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/privtest"
)

// fullTopology is three hosts in namespaces the test makes: the client A, whose only way out
// is a default route (IPv4 and IPv6) through the server's host B; B, which does not forward
// packets; and the destination C, behind B (10.201.0.2, web.far.test in B's hosts file),
// which A can reach only through the tunnel. B has no IPv6 beyond its link to A. Cleanup
// deletes the namespaces, which removes everything in them.
type fullTopology struct {
	a, b, c string
}

const (
	fullA   = "10.200.0.1"
	fullB   = "10.200.0.2"
	fullLAN = "10.200.0.3" // another host on A's subnet (an address of B's)
	fullDst = "10.201.0.2"
)

func newFullTopology(t *testing.T) *fullTopology {
	t.Helper()
	id := strconv.Itoa(os.Getpid())
	tp := &fullTopology{a: "qgFA" + id, b: "qgFB" + id, c: "qgFC" + id}
	addNetns(t, tp.a, tp.b, tp.c)
	for _, ns := range []string{tp.a, tp.b, tp.c} {
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "link", "add", "qgfa"+id, "netns", tp.a, "type", "veth", "peer", "name", "qgfb"+id, "netns", tp.b)
	sh(t, "ip", "link", "add", "qgfc"+id, "netns", tp.c, "type", "veth", "peer", "name", "qgfd"+id, "netns", tp.b)
	for _, c := range [][]string{
		{tp.a, "link", "set", "qgfa" + id, "name", "veth0"},
		{tp.a, "addr", "add", fullA + "/24", "dev", "veth0"},
		{tp.a, "addr", "add", "fd00:200::1/64", "dev", "veth0", "nodad"},
		{tp.a, "link", "set", "veth0", "up"},
		{tp.a, "route", "add", "default", "via", fullB},
		{tp.a, "-6", "route", "add", "default", "via", "fd00:200::2"},
		{tp.b, "link", "set", "qgfb" + id, "name", "veth0"},
		{tp.b, "addr", "add", fullB + "/24", "dev", "veth0"},
		{tp.b, "addr", "add", fullLAN + "/24", "dev", "veth0"},
		{tp.b, "addr", "add", "fd00:200::2/64", "dev", "veth0", "nodad"},
		{tp.b, "link", "set", "veth0", "up"},
		{tp.b, "link", "set", "qgfd" + id, "name", "veth1"},
		{tp.b, "addr", "add", "10.201.0.1/24", "dev", "veth1"},
		{tp.b, "link", "set", "veth1", "up"},
		{tp.c, "link", "set", "qgfc" + id, "name", "veth0"},
		{tp.c, "addr", "add", fullDst + "/24", "dev", "veth0"},
		{tp.c, "link", "set", "veth0", "up"},
	} {
		sh(t, append([]string{"ip", "-n"}, c...)...)
	}
	return tp
}

// routing is everything of A's routing a client may touch: rules and routes of every table,
// both families, and src_valid_mark.
func (tp *fullTopology) routing(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule"}, {"-6", "rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		b.WriteString(sh(t, append([]string{"ip", "-n", tp.a}, args...)...))
	}
	b.WriteString("src_valid_mark=" + sh(t, "ip", "netns", "exec", tp.a, "cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark"))
	return b.String()
}

// routeDev is the interface A's kernel picks for dst (with a firewall mark, if not "").
func (tp *fullTopology) routeDev(t *testing.T, dst, mark string) string {
	t.Helper()
	args := []string{"ip", "-n", tp.a, "route", "get", dst}
	if mark != "" {
		args = append(args, "mark", mark)
	}
	f := strings.Fields(sh(t, args...))
	for i := range f[:len(f)-1] {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("ip route get %s: no dev in %q", dst, f)
	return ""
}

// TestFullTunnel: with --route default, every flow of host A goes through the tunnel while
// the tunnel's own packets keep A's default route; A's directly connected subnet and an
// --exclude stay off the tunnel; DNS goes through the tunnel to --tun-dns; IPv6 to a
// server that has none fails at once. After the client exits, by SIGTERM or kill -9 and a
// new start, A's rules and routes are as they were.
func TestFullTunnel(t *testing.T) {
	privtest.Require(t, "ip", "curl")
	tp := newFullTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)
	const dns = "10.77.0.53"
	netnsFile(t, tp.b, "hosts", "127.0.0.1 localhost\n"+fullDst+" web.far.test\n")
	netnsFile(t, tp.a, "resolv.conf", "nameserver "+dns+"\noptions timeout:5 attempts:1\n")
	// Strict reverse-path filtering, as some distributions set it: the server's replies
	// must still pass it.
	sh(t, "ip", "netns", "exec", tp.a, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	before := tp.routing(t)

	startHTTPIn(t, tp.c, fullDst+":80")
	startHTTPIn(t, tp.b, fullLAN+":8080") // on A's subnet: reached directly, never through the tunnel
	srv := startIn(t, tp.b, "server", "--listen", fullB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", "10.201.0.0/24", "--allow", "web.far.test:80", "--allow", "::/0")
	srv.waitFor(t, "server ready")
	clientArgs := []string{"client", "--server", fullB + ":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--tun-addr", "fd00:77::1/64", "--route", "default",
		"--tun-dns", dns, "--exclude", "198.51.100.0/24"}
	curl := func(args ...string) (string, error) { return curlIn(tp.a, args...) }
	far := func(t *testing.T) {
		t.Helper()
		for _, url := range []string{"http://" + fullDst + "/", "http://web.far.test/"} {
			if out, err := curl(url); err != nil || !strings.HasPrefix(out, "hello from the far side") {
				t.Fatalf("%s through the full tunnel: %q, %v", url, out, err)
			}
		}
	}

	capture := captureProtocols(t, tp.a, "veth0")
	cli := startIn(t, tp.a, clientArgs...)
	cli.waitFor(t, "tun ready")
	t.Run("everything through the tunnel", func(t *testing.T) {
		far(t)
		if got := tp.routeDev(t, fullDst, ""); got != tunDev {
			t.Fatalf("A routes %s by %s, want %s", fullDst, got, tunDev)
		}
		// The tunnel's own packets, marked, keep A's default route.
		if got := tp.routeDev(t, fullDst, "29031"); got != "veth0" {
			t.Fatalf("A routes marked packets to %s by %s, want veth0", fullDst, got)
		}
		// The server's address stays off the tunnel for unmarked lookups too: the kernel's
		// reverse-path check of its replies is one.
		if got := tp.routeDev(t, fullB, ""); got != "veth0" {
			t.Fatalf("A routes the server's address by %s, want veth0", got)
		}
	})
	t.Run("IPv6 where the server has none", func(t *testing.T) {
		start := time.Now()
		_, err := curl("-g", "http://[2001:db8::5]/")
		if err == nil {
			t.Fatal("curl to an IPv6 address the server cannot reach succeeded")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the failure took %v, want it at once (the server's dial fails with no route)", d)
		}
		t.Logf("IPv6 to a server without IPv6: %v after %v", err, time.Since(start).Round(time.Millisecond))
	})
	counts := capture.stop()
	t.Logf("frames on A's veth0 by protocol: %v", counts)
	if counts["tcp"] != 0 || counts["udp/53"] != 0 {
		t.Fatalf("%d TCP and %d DNS frames crossed A's veth0: flows or lookups left the tunnel", counts["tcp"], counts["udp/53"])
	}
	t.Run("connected subnet and --exclude stay off", func(t *testing.T) {
		// A host on A's own subnet: directly, not through the tunnel (whose server would
		// deny it: no rule allows it).
		if out, err := curl("http://" + fullLAN + ":8080/"); err != nil || !strings.HasPrefix(out, "hello from the far side") {
			t.Fatalf("A's own subnet: %q, %v", out, err)
		}
		if got := tp.routeDev(t, fullLAN, ""); got != "veth0" {
			t.Fatalf("A routes its own subnet by %s, want veth0", got)
		}
		if got := tp.routeDev(t, "198.51.100.7", ""); got != "veth0" {
			t.Fatalf("A routes an --exclude'd address by %s, want veth0", got)
		}
	})
	if n := cli.count("connected to server"); n != 1 || cli.count("no answer from server; connection lost, reconnecting") != 0 {
		t.Fatalf("the client connected %d times: its own packets went astray", n)
	}

	cli.stop(t)
	if after := tp.routing(t); after != before {
		t.Fatalf("A's routing after SIGTERM differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	t.Run("kill -9 and a new start", func(t *testing.T) {
		cli := startIn(t, tp.a, clientArgs...)
		cli.waitFor(t, "tun ready")
		_ = cli.cmd.Process.Kill()
		<-cli.done
		_ = cli.cmd.Wait()
		if rules := sh(t, "ip", "-n", tp.a, "rule"); !strings.Contains(rules, "29031") {
			t.Fatalf("no rule left behind by the killed client, so the test proves nothing:\n%s", rules)
		}
		cli = startIn(t, tp.a, clientArgs...)
		left := cli.waitFor(t, "removed the rules and routes a quicgate that did not exit cleanly left behind")
		t.Logf("the new start: %v", left)
		cli.waitFor(t, "tun ready")
		far(t)
		cli.stop(t)
		if after := tp.routing(t); after != before {
			t.Fatalf("A's routing after kill -9 and a new start differs:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	t.Run("--exclude-connected=false", func(t *testing.T) {
		cli := startIn(t, tp.a, append(clientArgs, "--exclude-connected=false")...)
		// The server's address is kept off the TUN's routes when the client dials it: the
		// route below is looked up once it has connected.
		cli.waitForAll(t, "tun ready", "connected to server")
		if got := tp.routeDev(t, fullLAN, ""); got != tunDev {
			t.Fatalf("A routes its own subnet by %s with --exclude-connected=false, want %s", got, tunDev)
		}
		// The server is on that subnet: its address alone stays off the tunnel, and its
		// replies pass A's strict reverse-path filter.
		if got := tp.routeDev(t, fullB, ""); got != "veth0" {
			t.Fatalf("A routes the server's address by %s, want veth0", got)
		}
		far(t)
		cli.stop(t)
	})
	srv.stop(t)
}
