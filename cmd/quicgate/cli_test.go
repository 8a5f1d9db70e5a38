package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary as a user would: built once, started as processes.

var quicgateBin string

// Waiting in these tests is for events: a log line, a process's exit, a read's result. The
// bounds below only turn a hang into a failure with a message, or, where a test checks
// that something is prompt, stay well below the slower mechanism it must beat.
const (
	// hangLimit bounds a wait for an event that must come; it is no measure of speed.
	hangLimit = 60 * time.Second
	// resetLimit bounds the wait for a reset that must come as a reset: far above its normal
	// latency (milliseconds) and well below the 60 s QUIC idle timeout, the slow way a flow
	// would otherwise end.
	resetLimit = 20 * time.Second
)

func TestMain(m *testing.M) {
	if addrs := os.Getenv("QUICGATE_TEST_HTTP"); addrs != "" {
		os.Exit(serveTestHTTP(strings.Split(addrs, ",")))
	}
	if url := os.Getenv("QUICGATE_TEST_FETCH"); url != "" {
		os.Exit(fetchForTest(url))
	}
	dir, err := os.MkdirTemp("", "quicgate-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = os.Chmod(dir, 0o755) // TestTUNWithoutPrivilege runs it as nobody
	quicgateBin = filepath.Join(dir, "quicgate")
	if out, err := exec.Command("go", "build", "-o", quicgateBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building quicgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// runQuick runs a command that must end by itself within 15 s.
func runQuick(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, quicgateBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%v did not end within 15s", args)
	}
	return out.String(), errb.String(), code
}

func fingerprint(t *testing.T, dir string) string {
	t.Helper()
	out, errOut, code := runQuick(t, "fingerprint", "--state-dir", dir)
	if code != 0 {
		t.Fatalf("fingerprint: exit %d: %s", code, errOut)
	}
	return strings.TrimSpace(out)
}

func TestFingerprintStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "id")
	a, b := fingerprint(t, dir), fingerprint(t, dir)
	if a != b {
		t.Fatalf("fingerprint changed: %s then %s", a, b)
	}
	if !regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`).MatchString(a) {
		t.Fatalf("fingerprint %q is not in the --pin form", a)
	}
}

// Mistakes on the command line give one line on stderr and exit status 2.
func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	auth := filepath.Join(dir, "auth")
	if err := os.WriteFile(auth, []byte(fingerprint(t, filepath.Join(dir, "c"))+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pin := fingerprint(t, filepath.Join(dir, "s"))
	state := filepath.Join(dir, "s")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage"},
		{"unknown command", []string{"frob"}, `unknown command "frob"`},
		{"unknown flag", []string{"client", "--bogus"}, "flag provided but not defined"},
		{"server without allow", []string{"server", "--state-dir", state, "--authorized-clients", auth}, "no --allow rule"},
		{"server bad allow", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "10.0.0.1/8"}, "did you mean 10.0.0.0/8"},
		{"server without authorized clients", []string{"server", "--state-dir", state, "--allow", "127.0.0.1"}, "--authorized-clients is required"},
		{"server bad log level", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--log-level", "loud"}, "--log-level"},
		{"client without server", []string{"client", "--pin", pin, "-L", "0:127.0.0.1:80"}, "--server is required"},
		{"client without pin", []string{"client", "--server", "127.0.0.1:1", "-L", "0:127.0.0.1:80"}, "--pin is required"},
		{"client bad pin", []string{"client", "--server", "127.0.0.1:1", "--pin", "abc", "-L", "0:127.0.0.1:80"}, "bad fingerprint"},
		{"negative tcp keepalive", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "-L", "0:127.0.0.1:80", "--tcp-keepalive", "-1s"}, "cannot be negative"},
		{"tcp keepalive below a second", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--tcp-keepalive", "500ms"}, "want at least 1s"},
		{"bad duration", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--dial-timeout", "5x"}, `invalid value "5x" for flag -dial-timeout: want a duration such as 10s, 1m30s or 2h`},
		{"max conns per client below one", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--max-conns-per-client", "0"}, "--max-conns-per-client 0: want at least 1"},
		{"negative flow idle timeout", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--flow-idle-timeout", "-5m"}, "cannot be negative"},
		{"client bad -L", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "-L", "80:host"}, "bad -L forward"},
		{"client nothing to forward", []string{"client", "--server", "127.0.0.1:1", "--pin", pin}, "nothing to forward"},
		{"client bad log format", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "-L", "0:127.0.0.1:80", "--log-format", "xml"}, "--log-format"},
		{"client bad congestion", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "-L", "0:127.0.0.1:80", "--congestion", "vegas"}, `--congestion "vegas": want bbr or cubic`},
		{"server bad congestion", []string{"server", "--state-dir", state, "--authorized-clients", auth, "--allow", "127.0.0.1", "--congestion", "reno"}, "--congestion"},
		{"client stray argument", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "extra"}, `unexpected argument "extra"`},
		{"tun-dns without tun", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "-L", "0:127.0.0.1:80", "--tun-dns", "10.77.0.53"}, "need --tun"},
		{"tun-dns not an address", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "--tun", "qg9", "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16", "--tun-dns", "dns.example"}, `--tun-dns "dns.example": want an IP address`},
		{"tun-dns outside the tun", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "--tun", "qg9", "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16", "--tun-dns", "10.78.0.53"}, "--tun-dns 10.78.0.53 is not inside a --tun-addr prefix or a --route"},
		{"tun-dns the tun's own address", []string{"client", "--server", "127.0.0.1:1", "--pin", pin, "--tun", "qg9", "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16", "--tun-dns", "10.77.0.1"}, "--tun-dns 10.77.0.1 is the interface's own address"},
		{"demo bad size", []string{"demo", "--size", "0"}, "--size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runQuick(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Fatalf("stderr %q does not say %q", stderr, tt.want)
			}
			if tt.args != nil && tt.name != "unknown command" && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("want one line, got:\n%s", stderr)
			}
		})
	}
}

// process is a long-running quicgate whose JSON log lines the test reads.
type process struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	done  chan struct{}
	mu    sync.Mutex
	log   []string
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	return startProc(t, args[0], exec.Command(quicgateBin, append(args, "--log-format", "json")...))
}

// startProc starts cmd and reads its stderr as JSON log lines.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, lines: make(chan map[string]any, 100), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		_ = cmd.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s log:\n%s", name, strings.Join(p.log, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// count returns how many log lines so far have msg as their msg.
func (p *process) count(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.log {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			n++
		}
	}
	return n
}

// logLines returns the log lines so far.
func (p *process) logLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// waitFor returns the first log line whose msg is msg.
func (p *process) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(hangLimit)
	for {
		select {
		case m := <-p.lines:
			if m["msg"] == msg {
				return m
			}
		case <-p.done:
			t.Fatalf("process exited before logging %q", msg)
		case <-timeout:
			t.Fatalf("no %q log line within %v", msg, hangLimit)
		}
	}
}

// waitForAll waits until each of msgs has been logged, in any order (a client connects to its
// server while its TUN comes up), and returns the first line of each by msg.
func (p *process) waitForAll(t *testing.T, msgs ...string) map[string]map[string]any {
	t.Helper()
	got := map[string]map[string]any{}
	timeout := time.After(hangLimit)
	for len(got) < len(msgs) {
		select {
		case m := <-p.lines:
			msg, _ := m["msg"].(string)
			if _, seen := got[msg]; !seen && slices.Contains(msgs, msg) {
				got[msg] = m
			}
		case <-p.done:
			t.Fatalf("process exited before logging all of %q (got %d)", msgs, len(got))
		case <-timeout:
			t.Fatalf("not all of %q logged within %v (got %d)", msgs, hangLimit, len(got))
		}
	}
	return got
}

// stop sends SIGTERM, checks that the process exits 0, and returns how long the exit took
// (for tests that check it was prompt: the wait itself is only a guard against a hang).
func (p *process) stop(t *testing.T) time.Duration {
	t.Helper()
	begin := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(hangLimit):
		t.Fatalf("no exit within %v of SIGTERM", hangLimit)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	return time.Since(begin)
}

type pair struct {
	dir, pin, clientFP, auth string
}

func newPair(t *testing.T) pair {
	t.Helper()
	dir := t.TempDir()
	p := pair{dir: dir, pin: fingerprint(t, filepath.Join(dir, "server")), clientFP: fingerprint(t, filepath.Join(dir, "client"))}
	p.auth = filepath.Join(dir, "authorized_clients")
	if err := os.WriteFile(p.auth, []byte("# the test's client\n"+p.clientFP+" test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p pair) startServer(t *testing.T, allow ...string) (*process, string) {
	t.Helper()
	args := []string{"server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	srv := start(t, args...)
	ready := srv.waitFor(t, "server ready")
	return srv, ready["addr"].(string)
}

// The product's main job, end to end: server and client processes, a forwarded port, an
// HTTP fetch through it, a denied destination, and clean exits on SIGTERM.
func TestServerClientProcesses(t *testing.T) {
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "through the tunnel")
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = web.Serve(ln) }()
	defer web.Close()
	webPort := ln.Addr().(*net.TCPAddr).Port

	p := newPair(t)
	srv, addr := p.startServer(t, fmt.Sprintf("127.0.0.1/32:%d", webPort))
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", fmt.Sprintf("0:127.0.0.1:%d", webPort), "-L", "0:127.0.0.1:1")
	cli.waitFor(t, "connected to server")
	allowed := cli.waitFor(t, "forwarding")["listen"].(string)
	denied := cli.waitFor(t, "forwarding")["listen"].(string)

	hc := &http.Client{Transport: &http.Transport{}}
	resp, err := hc.Get("http://" + allowed + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections() // no open flow left to drain
	if string(body) != "through the tunnel" {
		t.Fatalf("body %q", body)
	}

	// The reset can come so fast that it lands on the dial itself.
	c, err := net.Dial("tcp", denied)
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(resetLimit))
		_, err = c.Read(make([]byte, 1))
		_ = c.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("denied destination: got %v, want a reset", err)
	}
	if m := srv.waitFor(t, "flow rejected"); m["result"] != "denied" {
		t.Fatalf("server logged %v", m)
	}

	cli.stop(t)
	srv.stop(t)
}

// Failures to reach the server are one line and exit 1, within the dial timeout (1 s here;
// the bound leaves room for a loaded machine and stays below the 10 s default that a client
// ignoring --dial-timeout would wait; a pin or identity failure does not wait at all).
func TestClientCannotConnect(t *testing.T) {
	p := newPair(t)
	srv, addr := p.startServer(t, "127.0.0.1/32")
	stranger := filepath.Join(p.dir, "stranger")
	strangerFP := fingerprint(t, stranger)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tests := []struct {
		name, server, state, pin, want string
	}{
		{"wrong pin", addr, filepath.Join(p.dir, "client"), p.clientFP, "does not match the pin"},
		// The client is told its own fingerprint, which is what the server's operator needs.
		{"unauthorized client", addr, stranger, p.pin, "add this client's fingerprint, " + strangerFP + ", as a line of the server's authorized-clients file"},
		{"no server", silent.LocalAddr().String(), filepath.Join(p.dir, "client"), p.pin, "server unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			begin := time.Now()
			_, stderr, code := runQuick(t, "client", "--server", tt.server, "--state-dir", tt.state, "--pin", tt.pin,
				"-L", "0:127.0.0.1:80", "--dial-timeout", "1s")
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("want one line saying %q, got:\n%s", tt.want, stderr)
			}
			if d := time.Since(begin); d > 6*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
	// The server logged the stranger once, with its address and fingerprint.
	if m := srv.waitFor(t, "client rejected: fingerprint not authorized"); m["peer"] == "" || !strings.HasPrefix(fmt.Sprint(m["fingerprint"]), "SHA256:") {
		t.Fatalf("rejection logged as %v", m)
	}
	// A repeated rejection would come from the stranger's handshakes, all sent before its
	// process exited. An authorized client's handshake, started after that exit and taking
	// round trips the server's answers to the stranger did not, is logged after them: once
	// it is, the count is final.
	barrier := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", "0:127.0.0.1:80")
	if m := srv.waitFor(t, "client connected"); m["fingerprint"] != p.clientFP {
		t.Fatalf("connection logged as %v, want the authorized client's", m)
	}
	barrier.stop(t)
	if n := srv.count("client rejected: fingerprint not authorized"); n != 1 {
		t.Fatalf("the stranger was logged %d times, want once", n)
	}
}

func TestDemo(t *testing.T) {
	out, stderr, code := runQuick(t, "demo", "--size", "16")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"through -L: \"hello from the far side", "through Client.DialContext", "SHA-256 matches"} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// A server configured by file, metrics scraped over HTTP, and a client that drains: a flow
// open when SIGTERM arrives still completes, and the client exits 0.
func TestConfigMetricsAndDrain(t *testing.T) {
	// A destination that answers only once the client has begun to drain, so the flow is
	// open when the client is told to stop.
	reached, draining := make(chan struct{}), make(chan struct{})
	dst := tcpServer(t, func(c net.Conn) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		close(reached)
		<-draining
		_, _ = c.Write([]byte("late reply"))
	})
	p := newPair(t)
	cfg := filepath.Join(p.dir, "server.yaml")
	// Drain timeouts far longer than the test: a process that missed the end of its last
	// flow would wait them out, and fail the bounds on its exit below.
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\nstate-dir: %s\nauthorized-clients: %s\nallow:\n  - 127.0.0.1/32\nmetrics: 127.0.0.1:0\ncongestion: cubic\ndrain-timeout: %s\n",
		filepath.Join(p.dir, "server"), p.auth, hangLimit)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := start(t, "server", "--config", cfg)
	metricsURL := srv.waitFor(t, "metrics serving")["addr"].(string) + "/metrics"
	addr := srv.waitFor(t, "server ready")["addr"].(string)

	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", "0:"+dst, "--drain-timeout", hangLimit.String(), "--pprof", "127.0.0.1:0")
	pprofURL := cli.waitFor(t, "pprof serving")["addr"].(string) + "/debug/pprof/goroutine?debug=1"
	cli.waitFor(t, "connected to server")
	if resp, err := http.Get(pprofURL); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	local := cli.waitFor(t, "forwarding")["listen"].(string)

	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select { // the flow is open end to end once the destination has the request
	case <-reached:
	case <-time.After(hangLimit):
		t.Fatalf("the request did not reach the destination within %v", hangLimit)
	}
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	cli.waitFor(t, "shutting down: draining open flows")
	close(draining)
	_ = c.SetReadDeadline(time.Now().Add(hangLimit))
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "late reply" {
		t.Fatalf("flow open at SIGTERM: got %q, %v; want the whole reply", reply, err)
	}
	_ = c.Close() // the app's side ends too: nothing is left to drain
	// The exit takes milliseconds; the bound leaves room for a loaded machine and stays well
	// below the drain timeout.
	if d := cli.stop(t); d > resetLimit {
		t.Fatalf("client took %v to stop after its last flow ended", d)
	}

	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`quicgate_flows_total{result="ok",side="server"} 1`,
		`quicgate_bytes_total{direction="down",side="server"} 10`,
		`quicgate_dial_results_total{side="server",status="ok"} 1`,
		`quicgate_quic_rtt_seconds{side="server"}`,
		`quicgate_congestion_control_info{algorithm="cubic",side="server"} 1`,
		`quicgate_quic_pacing_rate_bits_per_second{side="server"}`,
		`quicgate_handshakes_in_progress{side="server"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q; they have:\n%s", want, grepLines(string(body), "quicgate_"))
		}
	}
	if d := srv.stop(t); d > resetLimit {
		t.Fatalf("server with no open flow took %v to stop", d)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A server killed without warning and started again: the flow that was open ends with a
// reset (not a clean EOF), the client reconnects, and new flows work at once.
func TestServerKilledAndRestarted(t *testing.T) {
	dst := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := newPair(t)
	srv, addr := p.startServer(t, "127.0.0.1/32")
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin, "-L", "0:"+dst)
	cli.waitFor(t, "connected to server")
	local := cli.waitFor(t, "forwarding")["listen"].(string)
	echoOnce := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(hangLimit))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	inflight, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer inflight.Close()
	if err := echoOnce(inflight); err != nil {
		t.Fatal(err)
	}

	_ = srv.cmd.Process.Kill()
	<-srv.done
	srv2 := start(t, "server", "--listen", addr, "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth, "--allow", "127.0.0.1/32")
	srv2.waitFor(t, "server ready")
	ready := time.Now()

	// The client's probe (every 1 s) draws a stateless reset from the new server; without
	// it only the 60 s idle timeout would end the connection, well after resetLimit.
	_ = inflight.SetReadDeadline(time.Now().Add(resetLimit))
	_, err = inflight.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the flow open when the server died ended with %v, want a reset", err)
	}
	cli.waitFor(t, "reconnected to server")
	if d := time.Since(ready); d > resetLimit {
		t.Fatalf("reconnected %v after the restarted server was ready", d)
	}
	t.Logf("reconnected %v after the restarted server was ready", time.Since(ready).Round(time.Millisecond))
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	err = echoOnce(c)
	_ = c.Close() // no flow is left for the client's drain to wait for
	if err != nil {
		t.Fatalf("new flow after the reconnect: %v", err)
	}
	cli.stop(t)
	srv2.stop(t)
}

// tcpServer serves handle for every connection on a loopback port until the test ends.
func tcpServer(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// A server that does not answer is reported within 2 s, long before the dial timeout ends the
// wait with its error.
func TestSlowServerWarning(t *testing.T) {
	p := newPair(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cli := start(t, "client", "--server", silent.LocalAddr().String(), "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", "0:127.0.0.1:80", "--dial-timeout", "1m")
	m := cli.waitFor(t, "no answer from server "+silent.LocalAddr().String()+" yet, still trying")
	if m["level"] != "warning" {
		t.Fatalf("logged as %v", m)
	}
	cli.stop(t)
}

// A state directory without an identity gets a new one, and the log says so, with its
// fingerprint: a mistyped --state-dir does not pass silently for the identity the peer knows.
func TestNewIdentityIsLogged(t *testing.T) {
	p := newPair(t)
	srv, _ := p.startServer(t, "127.0.0.1/32")
	if n := srv.count("no identity in the state directory: created a new one, which the other side does not know yet; if you meant an existing identity, check --state-dir"); n != 0 {
		t.Fatalf("an existing identity was reported as new")
	}
	fresh := filepath.Join(p.dir, "typo")
	_, stderr, code := runQuick(t, "client", "--server", "127.0.0.1:1", "--state-dir", fresh, "--pin", p.pin, "-L", "0:127.0.0.1:80", "--dial-timeout", "1s")
	if code != 1 || !strings.Contains(stderr, "created a new one") || !strings.Contains(stderr, fingerprint(t, fresh)) {
		t.Fatalf("exit %d, stderr:\n%s\nwant the new identity's warning with its fingerprint", code, stderr)
	}
	srv.stop(t)
}

// A command's -h is asked for: its flags go to stdout, with status 0.
func TestHelpToStdout(t *testing.T) {
	for _, cmd := range []string{"server", "client", "fingerprint", "demo"} {
		stdout, stderr, code := runQuick(t, cmd, "-h")
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "Usage of quicgate "+cmd) {
			t.Errorf("%s -h: exit %d, stdout %.40q, stderr %q; want the usage on stdout, status 0", cmd, code, stdout, stderr)
		}
	}
}

// version prints one line naming the build, and takes no arguments.
func TestVersion(t *testing.T) {
	stdout, stderr, code := runQuick(t, "version")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "quicgate ") || !strings.Contains(stdout, runtime.Version()) || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("version printed %q, want one line with the Go version %s", stdout, runtime.Version())
	}
	if _, _, code := runQuick(t, "version", "extra"); code != 2 {
		t.Fatalf("version with an argument: exit %d, want 2", code)
	}
}

// status reads a running server's or client's --metrics and prints its state for a person:
// the flows open per ingress and the recent failures too. With nothing listening it says so
// in one line and exits 1.
func TestStatus(t *testing.T) {
	dst := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := newPair(t)
	srv := start(t, "server", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(p.dir, "server"), "--authorized-clients", p.auth,
		"--allow", "127.0.0.1/32", "--metrics", "127.0.0.1:0")
	metrics := strings.TrimPrefix(srv.waitFor(t, "metrics serving")["addr"].(string), "http://")
	addr := srv.waitFor(t, "server ready")["addr"].(string)
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", "0:"+dst, "-L", "0:127.0.0.2:9", "--metrics", "127.0.0.1:0")
	cliMetrics := strings.TrimPrefix(cli.waitFor(t, "metrics serving")["addr"].(string), "http://")
	local := cli.waitFor(t, "forwarding")["listen"].(string)
	denied := cli.waitFor(t, "forwarding")["listen"].(string)

	// A flow the server's policy denies: the app sees a reset, and both ends list it.
	d, err := net.Dial("tcp", denied)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.SetReadDeadline(time.Now().Add(hangLimit))
	if _, err := d.Read(make([]byte, 1)); err == nil {
		t.Fatal("a denied flow read data")
	}
	_ = d.Close()
	cli.waitFor(t, "flow failed")

	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "status")
	// The client's status while the flow is open: one flow on the first -L.
	stdout, stderr, code := runQuick(t, "status", "--metrics", cliMetrics)
	if code != 0 {
		t.Fatalf("client status: exit %d, %s", code, stderr)
	}
	for _, want := range []string{
		"quicgate client (metrics at " + cliMetrics + ")",
		"flows open:         1\n",
		"flows ended:        rejected 1\n",
		"  -L " + local + ":" + dst + ": 1\n",
		"  -L " + denied + ":127.0.0.2:9: 0\n",
		"recent failures (newest first):\n",
		" -L " + denied + ":127.0.0.2:9 from 127.0.0.1:",
		" to 127.0.0.2:9: ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("client status lacks %q:\n%s", want, stdout)
		}
	}
	_ = c.Close()

	// The server counts the flow once both its ends are done; nothing else tells when (its
	// end is logged at debug only), so status is asked until the count shows.
	var out string
	for deadline := time.Now().Add(hangLimit); ; {
		stdout, stderr, code := runQuick(t, "status", "--metrics", metrics)
		if code != 0 {
			t.Fatalf("status: exit %d, %s", code, stderr)
		}
		out = stdout
		if strings.Contains(out, "flows ended:        ok 1") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"quicgate server (metrics at " + metrics + ")", "connections:        1 open, RTT ", "congestion control bbr", "transport:          quic 1\n",
		"flows open:         0", "flows ended:        ok 1, rejected 1", "dial results:       denied 1, ok 1",
		"recent failures (newest first):\n", "  quic from " + p.clientFP + " to 127.0.0.2:9: denied\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	cli.stop(t)
	srv.stop(t)
	_, stderr, code = runQuick(t, "status", "--metrics", metrics)
	if code != 1 || !strings.Contains(stderr, "no quicgate metrics at "+metrics) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("status of a stopped server: exit %d, %q", code, stderr)
	}
}
