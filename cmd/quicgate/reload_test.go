package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// SIGHUP rereads the authorized clients and the allow rules (here from the config file): a
// broken file keeps the old ones; flows the new rules deny are reset, others go on; a client
// removed from the list loses its connection; the server keeps running throughout.
func TestServerReload(t *testing.T) {
	echo := func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 64)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
		}
	}
	keep, drop := tcpServer(t, echo), tcpServer(t, echo)
	p := newPair(t)
	config := filepath.Join(p.dir, "server.yaml")
	writeConfig := func(rules ...string) {
		t.Helper()
		s := "allow:\n"
		for _, r := range rules {
			s += fmt.Sprintf("  - %q\n", r)
		}
		if err := os.WriteFile(config, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("127.0.0.1/32:"+port(t, keep), "127.0.0.1/32:"+port(t, drop))
	// Files are not watched here: each reload below is the signal's alone.
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth, "--config", config,
		"--watch-interval", "0")
	addr := srv.waitFor(t, "server ready")["addr"].(string)
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin, "-L", "0:"+keep, "-L", "0:"+drop)
	kept := cli.waitFor(t, "forwarding")["listen"].(string)
	dropped := cli.waitFor(t, "forwarding")["listen"].(string)
	a, b := dialEcho(t, kept), dialEcho(t, dropped)

	hup := func() {
		t.Helper()
		if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A broken file: the old rules stay.
	if err := os.WriteFile(config, []byte("allow: [\"10.0.0.1/8\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	srv.waitFor(t, "reload failed: keeping the rules and clients in force")
	echoOnce(t, a, "after a broken reload")
	echoOnce(t, b, "after a broken reload")

	// The second destination is no longer allowed.
	writeConfig("127.0.0.1/32:" + port(t, keep))
	hup()
	if m := srv.waitFor(t, "reloaded"); m["reset_flows"] != 1.0 || m["closed_connections"] != 0.0 {
		t.Fatalf("reload: %v, want 1 flow reset and no connection closed", m)
	}
	expectConnReset(t, b)
	echoOnce(t, a, "after the new rules")

	// The client is no longer authorized.
	if err := os.WriteFile(p.auth, []byte("# nobody\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	if m := srv.waitFor(t, "reloaded"); m["closed_connections"] != 1.0 {
		t.Fatalf("reload: %v, want 1 connection closed", m)
	}
	expectConnReset(t, a)
	srv.stop(t)
	cli.stop(t)
}

// An edit of the authorized-clients or config file reloads them as SIGHUP does, once the file
// holds still: a broken edit is reported once and keeps the old rules, and a client removed
// from the file (replaced by a rename, as editors save) loses its connection.
func TestServerReloadOnFileChange(t *testing.T) {
	echo := tcpServer(t, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	p := newPair(t)
	config := filepath.Join(p.dir, "server.yaml")
	if err := os.WriteFile(config, []byte("allow: [\"127.0.0.1/32\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth,
		"--config", config, "--watch-interval", "20ms")
	addr := srv.waitFor(t, "server ready")["addr"].(string)
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin, "-L", "0:"+echo)
	a := dialEcho(t, cli.waitFor(t, "forwarding")["listen"].(string))

	if err := os.WriteFile(config, []byte("allow: [\"10.0.0.1/8\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := srv.waitFor(t, "reload failed: keeping the rules and clients in force"); m["trigger"] != "file changed" {
		t.Fatalf("reload: %v, want trigger \"file changed\"", m)
	}
	echoOnce(t, a, "after a broken edit")

	replace := func(path, content string) {
		t.Helper()
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	replace(config, "allow: [\"127.0.0.1/32\"]\n")
	if m := srv.waitFor(t, "reloaded"); m["trigger"] != "file changed" || m["reset_flows"] != 0.0 {
		t.Fatalf("reload: %v, want trigger \"file changed\" and no flow reset", m)
	}
	if n := srv.count("reload failed: keeping the rules and clients in force"); n != 1 {
		t.Fatalf("the broken edit was reported %d times, want once", n)
	}
	echoOnce(t, a, "after a good edit")

	replace(p.auth, "# nobody\n")
	if m := srv.waitFor(t, "reloaded"); m["closed_connections"] != 1.0 {
		t.Fatalf("reload: %v, want 1 connection closed", m)
	}
	expectConnReset(t, a)
	srv.stop(t)
	cli.stop(t)
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func dialEcho(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	echoOnce(t, c, "hello")
	return c
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(hangLimit))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := readFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// expectConnReset reads c until it fails and checks that it failed with a reset.
func expectConnReset(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(resetLimit))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v, want a reset", err)
	}
}
