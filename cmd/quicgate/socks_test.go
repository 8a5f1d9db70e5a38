package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A bad -D, or a bad --proxy-auth, is one line and exit status 2.
func TestDynamicForwardBadFlags(t *testing.T) {
	dir := t.TempDir()
	pin := fingerprint(t, filepath.Join(dir, "s"))
	empty := filepath.Join(dir, "empty")
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("alice:s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("# nobody yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := []string{"client", "--server", "127.0.0.1:1", "--pin", pin}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"bad -D", []string{"-D", "localhost:http"}, `-D: ingress: bad -D forward "localhost:http": listen port http is not 0-65535`},
		{"-D with a target", []string{"-D", "1080:host:80"}, "bad -D forward"},
		{"proxy auth without -D", []string{"-L", "0:127.0.0.1:80", "--proxy-auth", empty}, "--proxy-auth without -D"},
		{"proxy auth file missing", []string{"-D", "0", "--proxy-auth", filepath.Join(dir, "missing")}, "--proxy-auth: open "},
		{"proxy auth file empty", []string{"-D", "0", "--proxy-auth", empty}, "no user:password line"},
		{"proxy auth file readable by others", []string{"-D", "0", "--proxy-auth", open}, "lets other users read the passwords (chmod 600 "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runQuick(t, append(client, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line saying %q", code, stderr, tt.want)
			}
		})
	}
}

// curl through -D as users run it: --socks5-hostname (the name goes to the quicgate server,
// which resolves it), -p -x http:// (CONNECT) and -x http:// (a plain-HTTP request), all with
// the proxy's credentials; without them the proxy says 407, and a target the server's rules
// deny is 403.
func TestDynamicForwardCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl ('make deps' installs it)")
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "through -D: %s %s", r.Method, r.RequestURI)
	}), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = web.Serve(ln) }()
	defer web.Close()
	webPort := ln.Addr().(*net.TCPAddr).Port

	p := newPair(t)
	users := filepath.Join(p.dir, "proxy-users")
	if err := os.WriteFile(users, []byte("# -D users\nalice:s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, addr := p.startServer(t, fmt.Sprintf("127.0.0.1/32:%d", webPort), fmt.Sprintf("localhost:%d", webPort))
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-D", "0", "--proxy-auth", users, "--log-level", "debug")
	cli.waitFor(t, "connected to server")
	proxy := cli.waitFor(t, "proxying (SOCKS5, HTTP)")["listen"].(string)

	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(curl, append([]string{"-sS", "--max-time", "30"}, args...)...)
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out) + string(ee.Stderr), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("curl: %v", err)
		}
		return string(out), 0
	}
	url := fmt.Sprintf("http://localhost:%d/page?q=1", webPort)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"socks5-hostname", []string{"--socks5-hostname", proxy, "--proxy-user", "alice:s3cret", url}, "through -D: GET /page?q=1"},
		{"http CONNECT", []string{"-p", "-x", "http://alice:s3cret@" + proxy, url}, "through -D: GET /page?q=1"},
		{"plain http", []string{"-x", "http://alice:s3cret@" + proxy, url}, "through -D: GET /page?q=1"},
		{"no credentials", []string{"-x", "http://" + proxy, "-o", "/dev/null", "-w", "%{http_code}", url}, "407"},
		{"denied", []string{"-x", "http://alice:s3cret@" + proxy, "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.2:9/"}, "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := run(tc.args...)
			if code != 0 || out != tc.want {
				t.Fatalf("curl %s: exit %d, %q; want %q", strings.Join(tc.args, " "), code, out, tc.want)
			}
		})
	}
	// The SOCKS5 flow went to the server as the name: the client never resolved it.
	for {
		m := cli.waitFor(t, "flow ended")
		if m["proto"] == "socks5" {
			if m["target"] != fmt.Sprintf("localhost:%d", webPort) {
				t.Fatalf("socks5 flow logged as %v, want the target localhost:%d", m, webPort)
			}
			break
		}
	}
	cli.stop(t)
	srv.stop(t)
}
