package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freeLoopbackPort is a loopback port nothing listens on now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// -R end to end with the binaries: curl on the server's side reaches a web service on the
// client's side through the server's listener; a listen the server does not allow, and a
// port another client holds, fail the client's start with one line naming the reason.
func TestReverseForwardCLI(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("QUICGATE_REQUIRE_PRIV") == "1" {
			t.Fatal("curl is missing (make deps installs it)")
		}
		t.Skip("curl is missing")
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the client's side, %s", r.URL.Path)
	}))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")

	p := newPair(t)
	port := freeLoopbackPort(t)
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth,
		"--allow", "127.0.0.1/32:1", "--allow-listen", fmt.Sprintf("127.0.0.1:%d", port))
	addr := srv.waitFor(t, "server ready")["addr"].(string)
	client := func(extra ...string) []string {
		return append([]string{"client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin}, extra...)
	}
	cli := start(t, client("-R", fmt.Sprintf("%d:%s", port, webAddr))...)
	if m := cli.waitFor(t, "reverse forwarding"); m["remote_listen"] != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("reverse forwarding: %v", m)
	}
	srv.waitFor(t, "listening for the client (reverse forward)")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "20", fmt.Sprintf("http://127.0.0.1:%d/via-R", port)).CombinedOutput()
	if err != nil || string(out) != "hello from the client's side, /via-R" {
		t.Fatalf("curl through -R: %q, %v", out, err)
	}

	// The same port for a second client (an identity of its own, also authorized): in use.
	second := filepath.Join(p.dir, "second")
	if err := os.WriteFile(p.auth, []byte(p.clientFP+"\n"+fingerprint(t, second)+" second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.waitFor(t, "reloaded") // the server rereads the file when it changes
	_, stderr, code := runQuick(t, "client", "--server", addr, "--state-dir", second, "--pin", p.pin, "-R", fmt.Sprintf("%d:%s", port, webAddr))
	if code != 1 || !strings.Contains(lastLine(stderr), "-R 127.0.0.1:") || !strings.Contains(lastLine(stderr), "in use") {
		t.Fatalf("second -R on the same port: exit %d, stderr %q; want 1 and one line saying in use", code, stderr)
	}
	// A port the server does not allow: denied.
	_, stderr, code = runQuick(t, client("-R", fmt.Sprintf("%d:%s", freeLoopbackPort(t), webAddr))...)
	if code != 1 || !strings.Contains(lastLine(stderr), "-R 127.0.0.1:") || !strings.Contains(lastLine(stderr), "denied") {
		t.Fatalf("-R where the server allows no listen: exit %d, stderr %q; want 1 and one line saying denied", code, stderr)
	}
	// A bad spec: a usage error.
	_, stderr, code = runQuick(t, client("-R", "0:"+webAddr)...)
	if code != 2 || !strings.Contains(stderr, "bad -R forward") {
		t.Fatalf("-R with port 0: exit %d, stderr %q; want 2", code, stderr)
	}

	cli.stop(t)
	srv.stop(t)
}

// permitlisten= in the authorized-clients file lets one client have the server listen
// where the server's own --allow-listen does not.
func TestPermitListenCLI(t *testing.T) {
	web := tcpServer(t, func(c net.Conn) { _, _ = c.Write([]byte("hi")); _ = c.Close() })
	p := newPair(t)
	port := freeLoopbackPort(t)
	if err := os.WriteFile(p.auth, []byte(fmt.Sprintf("%s permitlisten=\"localhost:%d\" ci runner\n", p.clientFP, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth, "--allow", "127.0.0.1/32:1")
	addr := srv.waitFor(t, "server ready")["addr"].(string)
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin, "-R", fmt.Sprintf("%d:%s", port, web))
	cli.waitFor(t, "reverse forwarding")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangLimit))
	b := make([]byte, 2)
	if _, err := c.Read(b); err != nil || string(b) != "hi" {
		t.Fatalf("through the permitted -R: %q, %v", b, err)
	}
	cli.stop(t)
	srv.stop(t)
}

// lastLine is the last line of a command's stderr: its error, after any log lines.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
