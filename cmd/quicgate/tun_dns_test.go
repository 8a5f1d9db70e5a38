package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/privtest"
)

// netnsFile writes /etc/netns/NS/NAME, which `ip netns exec NS` mounts over /etc/NAME, and
// removes it (and the directories it made) when the test ends, failed or not.
func netnsFile(t *testing.T, ns, name, content string) {
	t.Helper()
	_, statErr := os.Stat("/etc/netns")
	madeRoot := errors.Is(statErr, os.ErrNotExist)
	dir := filepath.Join("/etc/netns", ns)
	t.Cleanup(func() {
		_ = os.RemoveAll(dir)
		if madeRoot {
			_ = os.Remove("/etc/netns") // only if empty
		}
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTUNDNSEndToEnd: host A's resolver points at the client's --tun-dns address, and a
// name only host B (the server's side) knows, in its hosts file, resolves and is reached
// through the TUN under a name rule alone; a name the policy does not allow is refused and
// an unknown one does not resolve. quicgate touches neither host's DNS settings: the test
// points A's resolver itself.
func TestTUNDNSEndToEnd(t *testing.T) {
	privtest.Require(t, "ip", "curl", "getent")
	tp := newTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)
	const dns = "10.77.0.53"
	netnsFile(t, tp.b, "hosts", "127.0.0.1 localhost\n"+dst4+" web.farside.test\n"+dst4+" secret.farside.test\n")
	netnsFile(t, tp.a, "resolv.conf", "nameserver "+dns+"\noptions timeout:5 attempts:1\n")

	startHTTPIn(t, tp.b, dst4+":80")
	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", "web.farside.test:80", "--log-level", "debug")
	srv.waitFor(t, "server ready")
	cli := startIn(t, tp.a, "client", "--server", addrB+":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16", "--tun-dns", dns)
	if got := cli.waitForAll(t, "tun ready", "connected to server")["tun ready"]["dns"]; got != dns {
		t.Fatalf("tun ready with dns %v, want %s", got, dns)
	}

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", tp.a}, args...)...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), fmt.Errorf("exit %d: %s", ee.ExitCode(), ee.Stderr)
		}
		return string(out), err
	}

	out, err := run("getent", "ahostsv4", "web.farside.test")
	if err != nil || !strings.HasPrefix(out, dst4+" ") {
		t.Fatalf("getent ahostsv4 web.farside.test: %q, %v; want %s", out, err, dst4)
	}
	// The server allows web.farside.test by name only: the flow to its address goes as a
	// flow to the name.
	out, err = run("curl", "--silent", "--show-error", "--max-time", "50", "http://web.farside.test/")
	if err != nil || !strings.HasPrefix(out, "hello from the far side") {
		t.Fatalf("curl http://web.farside.test/: %q, %v", out, err)
	}
	// Not allowed (REFUSED) and unknown (NXDOMAIN): getent finds nothing (exit 2), at once.
	for _, name := range []string{"secret.farside.test", "nowhere.farside.test"} {
		start := time.Now()
		if out, err := run("getent", "ahostsv4", name); err == nil || !strings.Contains(err.Error(), "exit 2") {
			t.Errorf("getent %s: %q, %v; want exit 2", name, out, err)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("getent %s took %v: it should be answered, not time out", name, d)
		}
	}
}
