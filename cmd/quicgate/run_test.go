package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/privtest"
)

// nobody is the unprivileged account the run tests use (CI runs as root).
const nobody = "65534"

// asNobody prefixes a command line so that it runs as nobody, with no supplementary groups.
func asNobody(args ...string) []string {
	return append([]string{"setpriv", "--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", "--"}, args...)
}

// openTUNDevice makes /dev/net/tun usable by every user (mode 0666, as most systems ship it)
// for the test, and puts the mode it had back when the test ends, failed or not.
func openTUNDevice(t *testing.T) {
	t.Helper()
	setTUNMode(t, 0o666)
}

// setTUNMode sets /dev/net/tun's mode for the test and restores it at the end.
// tunModeLock serializes the test processes on this host that change /dev/net/tun's mode
// (two go test runs at once: one restoring 0600 under the other's run): a process holds an
// exclusive flock on a lock file while any of its tests has the mode changed.
var tunModeLock struct {
	sync.Mutex
	held int
	file *os.File
}

func lockTUNMode(t *testing.T) {
	t.Helper()
	tunModeLock.Lock()
	defer tunModeLock.Unlock()
	if tunModeLock.held == 0 {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "quicgate-test-tun-mode.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil { // waits for the other run
			_ = f.Close()
			t.Fatal(err)
		}
		tunModeLock.file = f
	}
	tunModeLock.held++
	t.Cleanup(func() {
		tunModeLock.Lock()
		defer tunModeLock.Unlock()
		if tunModeLock.held--; tunModeLock.held == 0 {
			_ = tunModeLock.file.Close() // releases the flock
		}
	})
}

func setTUNMode(t *testing.T, mode os.FileMode) {
	t.Helper()
	lockTUNMode(t) // before the mode is read: another run may have it changed
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	old := fi.Mode().Perm()
	if old == mode {
		return
	}
	// A test binary that dies without its cleanups (a -timeout panic) must not leave the
	// device open either: a guard in a session of its own puts the mode back once this
	// process is gone, unless the cleanup has done so and ended it.
	guard := exec.Command("sh", "-c", `tail --pid="$0" -f /dev/null; chmod "$1" /dev/net/tun`, strconv.Itoa(os.Getpid()), fmt.Sprintf("%04o", old))
	guard.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := guard.Start(); err != nil {
		t.Fatalf("starting the guard that restores /dev/net/tun's mode: %v", err)
	}
	restore := func() {
		if err := os.Chmod("/dev/net/tun", old); err != nil {
			t.Errorf("restoring /dev/net/tun's mode %04o: %v", old, err)
		} else {
			t.Logf("/dev/net/tun: mode %04o restored", old)
		}
		_ = syscall.Kill(-guard.Process.Pid, syscall.SIGKILL)
		_ = guard.Wait()
	}
	if err := os.Chmod("/dev/net/tun", mode); err != nil {
		restore()
		t.Fatal(err)
	}
	t.Logf("/dev/net/tun: mode %04o for this test (it was %04o; restored when the test ends, or by a guard process if the test binary dies)", mode, old)
	t.Cleanup(restore)
}

// runSetup is a server in namespace B (with the demo's HTTP on dst4 and dst6) and what a
// `quicgate run` as nobody needs in namespace A: a client identity nobody owns, authorized
// at the server, in a directory nobody may use.
type runSetup struct {
	tp   *topology
	dir  string // nobody's working and state directory
	pin  string
	args []string // quicgate run's flags, up to the --
}

func newRunSetup(t *testing.T) *runSetup {
	t.Helper()
	tp := newTopology(t)
	dir, err := os.MkdirTemp("", "quicgate-run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o777)
	line := asNobody(quicgateBin, "fingerprint", "--state-dir", filepath.Join(dir, "client"))
	out, err := exec.Command(line[0], line[1:]...).Output()
	if err != nil {
		t.Fatalf("fingerprint as nobody: %v", err)
	}
	auth := filepath.Join(dir, "authorized_clients")
	if err := os.WriteFile(auth, out, 0o644); err != nil {
		t.Fatal(err)
	}
	pin := fingerprint(t, filepath.Join(dir, "server"))
	startHTTPIn(t, tp.b, dst4+":80", "["+dst6+"]:80")
	netnsFile(t, tp.b, "hosts", "127.0.0.1 localhost\n"+dst4+" web.farside.test\n") // for the command's DNS
	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", auth, "--allow", "10.99.0.0/16", "--allow", "fd00:99::/64")
	srv.waitFor(t, "server ready")
	return &runSetup{tp: tp, dir: dir, pin: pin, args: []string{"run", "--server", addrB + ":4433", "--pin", pin, "--state-dir", filepath.Join(dir, "client")}}
}

// command is `quicgate run` in namespace A, as nobody unless asRoot, running argv.
func (rs *runSetup) command(asRoot bool, flags []string, argv ...string) *exec.Cmd {
	line := append(append(append([]string{quicgateBin}, rs.args...), flags...), append([]string{"--"}, argv...)...)
	if !asRoot {
		line = asNobody(line...)
	}
	cmd := in(rs.tp.a, line...)
	cmd.Dir = rs.dir
	return cmd
}

// result runs cmd to its end (bounded by hangLimit) and returns its output and exit code,
// 128+N for a process killed by signal N, as a shell reports it (killedBy tells them apart).
func result(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(hangLimit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not end within %v; stderr:\n%s", cmd.Args, hangLimit, errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = shellStatus(ee)
	default:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return out.String(), errb.String(), code
}

// shellStatus is a process's exit status as a shell reports it: 128+N for signal N.
func shellStatus(ee *exec.ExitError) int {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// killedBy is the signal that ended a process that has been waited for (0 if it exited),
// and whether it dumped core.
func killedBy(cmd *exec.Cmd) (syscall.Signal, bool) {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), ws.CoreDump()
}

// TestRun: `quicgate run -- CMD` as a user without privileges (nobody) tunnels an
// unmodified program's TCP flows, passes its exit status and signals on, lets another
// command join with nsenter, and refuses with one line where /dev/net/tun is closed to it.
func TestRun(t *testing.T) {
	privtest.Require(t, "ip", "curl", "setpriv", "nsenter")
	rs := newRunSetup(t)

	t.Run("/dev/net/tun closed to the user", func(t *testing.T) {
		setTUNMode(t, 0o600)
		_, stderr, code := result(t, rs.command(false, nil, "true"))
		if code != 1 || !strings.Contains(stderr, "/dev/net/tun is not usable by this user: it is mode 0600 here") ||
			!strings.Contains(stderr, "chmod 0666 /dev/net/tun") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and one line naming the mode and the chmod", code, stderr)
		}
	})

	openTUNDevice(t)
	for _, asRoot := range []bool{false, true} {
		who := "as nobody"
		if asRoot {
			who = "as root"
		}
		t.Run("curl "+who, func(t *testing.T) {
			for _, url := range []string{"http://" + dst4 + "/", "http://[" + dst6 + "]/"} {
				out, stderr, code := result(t, rs.command(asRoot, nil, "curl", "--silent", "--show-error", "-g", "--max-time", "50", url))
				if code != 0 || !strings.HasPrefix(out, "hello from the far side") {
					t.Fatalf("%s: exit %d, %q\nstderr:\n%s", url, code, out, stderr)
				}
			}
		})
	}

	t.Run("as root of a user namespace", func(t *testing.T) {
		// uid 0 of `unshare -r` (as a rootless container's root) owns only the ids mapped
		// there; the command is root as its caller, and its flows go through the tunnel.
		args := append(append([]string{"unshare", "--user", "--map-root-user", "--", quicgateBin}, rs.args...),
			"--", "sh", "-c", "id -u; curl --silent --show-error --max-time 50 http://"+dst4+"/")
		cmd := in(rs.tp.a, asNobody(args...)...)
		cmd.Dir = rs.dir
		out, stderr, code := result(t, cmd)
		if code != 0 || !strings.HasPrefix(out, "0\nhello from the far side") {
			t.Fatalf("exit %d, %q\nstderr:\n%s", code, out, stderr)
		}
	})

	t.Run("the command's view", func(t *testing.T) {
		// The caller's uid, no capabilities, the caller's environment and directory, a
		// default route into the device, and a resolv.conf naming run's DNS address.
		script := `id -u; grep CapEff /proc/self/status; echo "$QG_TEST_MARK"; pwd; ip route show default; ip -6 route show default; cat /etc/resolv.conf`
		cmd := rs.command(false, nil, "sh", "-c", script)
		cmd.Env = append(os.Environ(), "QG_TEST_MARK=kept")
		out, stderr, code := result(t, cmd)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{nobody + "\n", "CapEff:\t0000000000000000", "kept\n", rs.dir + "\n", "default dev qg0", "nameserver 198.18.0.53\n"} {
			if !strings.Contains(out, want) {
				t.Fatalf("the command saw:\n%s\nwant %q in it", out, want)
			}
		}
		if strings.Count(out, "default dev qg0") != 2 {
			t.Fatalf("want IPv4 and IPv6 default routes into qg0:\n%s", out)
		}
	})

	t.Run("dns", func(t *testing.T) {
		// A name only the server's side knows resolves in the namespace, at the server.
		out, stderr, code := result(t, rs.command(false, nil, "getent", "ahostsv4", "web.farside.test"))
		if code != 0 || !strings.HasPrefix(out, dst4+" ") {
			t.Fatalf("getent ahostsv4 web.farside.test: exit %d, %q\nstderr:\n%s", code, out, stderr)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		// A refused destination through the tunnel: curl's own "could not connect".
		_, _, code := result(t, rs.command(false, nil, "curl", "--silent", "--max-time", "50", "http://"+dst4+":81/"))
		if code != 7 {
			t.Fatalf("curl to a refused port: exit %d, want curl's 7", code)
		}
		_, _, code = result(t, rs.command(false, nil, "sh", "-c", "exit 3"))
		if code != 3 {
			t.Fatalf("sh -c 'exit 3': exit %d", code)
		}
		_, stderr, code := result(t, rs.command(false, nil, "no-such-command-here"))
		if code != 127 || !strings.Contains(stderr, "no-such-command-here") {
			t.Fatalf("a missing command: exit %d, %s; want 127, as a shell's", code, stderr)
		}
		// A command killed by a signal: quicgate ends by the same signal, without a core.
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGQUIT} {
			cmd := rs.command(false, nil, "sh", "-c", fmt.Sprintf("ulimit -c 0; kill -%d $$", sig))
			_, stderr, code := result(t, cmd)
			if got, core := killedBy(cmd); code != 128+int(sig) || got != sig || core {
				t.Fatalf("a command killed by %v: exit %d, quicgate ended by %v (core dumped: %v); stderr:\n%s", sig, code, got, core, stderr)
			}
		}
		// Files that exec.LookPath takes (they are executable) but execve refuses, in the
		// namespace: the exit status is the one env gives, with the reason in one line.
		for _, tt := range []struct {
			name, content string
			code          int
			want          string
		}{
			{"missing-interpreter", "#!/nonexistent/interpreter\n", 127, "missing-interpreter: the interpreter its #! line names: no such file or directory"},
			{"not-a-program", "\x00\x01\x02\x03 not a program\n", 126, "not-a-program: exec format error"},
		} {
			path := filepath.Join(rs.dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.content), 0o755); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := result(t, rs.command(false, nil, path))
			if code != tt.code || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("%s: exit %d, %q; want %d and one line with %q", tt.name, code, stderr, tt.code, tt.want)
			}
		}
	})

	t.Run("signals and joining", func(t *testing.T) {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
			name := map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGINT: "INT", syscall.SIGHUP: "HUP"}[sig]
			// The command reports the signal and exits 40+signal; it waits in the shell's
			// wait builtin, which a trapped signal interrupts at once. (sleep's output goes
			// elsewhere, so that it never holds the test's pipe.)
			script := fmt.Sprintf(`trap 'kill $!; echo got %d; exit %d' %s; echo ready; sleep 1000 >/dev/null 2>&1 & wait`, sig, 40+int(sig), name)
			a := startRun(t, rs.command(false, []string{"--log-level", "info", "--log-format", "json"}, "sh", "-c", script))
			b := startRun(t, rs.command(false, []string{"--log-level", "info", "--log-format", "json"}, "sh", "-c", script))
			pidA, pidB := a.pid(t), b.pid(t)
			a.waitStdout(t, "ready")
			b.waitStdout(t, "ready")
			// Each run has its own namespace.
			nsA, errA := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pidA))
			nsB, errB := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pidB))
			if errA != nil || errB != nil || nsA == nsB {
				t.Fatalf("two runs' network namespaces: %s (%v) and %s (%v); want two", nsA, errA, nsB, errB)
			}
			if sig == syscall.SIGTERM {
				// Another command joins a running one's namespaces, as the docs say.
				join := in(rs.tp.a, asNobody("nsenter", "--preserve-credentials", "-U", "-n", "-m", "-t", fmt.Sprint(pidA),
					"curl", "--silent", "--show-error", "--max-time", "50", "http://"+dst4+"/")...)
				out, stderr, code := result(t, join)
				if code != 0 || !strings.HasPrefix(out, "hello from the far side") {
					t.Fatalf("curl joined to the run's namespace: exit %d, %q, %s", code, out, stderr)
				}
			}
			_ = a.cmd.Process.Signal(sig)
			if code := a.wait(t); code != 40+int(sig) {
				t.Fatalf("%v to quicgate: exit %d, want the command's %d; stdout:\n%s", sig, code, 40+int(sig), a.stdout())
			}
			if !strings.Contains(a.stdout(), fmt.Sprintf("got %d", sig)) {
				t.Fatalf("the command did not get %v:\n%s", sig, a.stdout())
			}
			// The other run goes on, untouched, until its own signal.
			if err := b.cmd.Process.Signal(syscall.Signal(0)); err != nil {
				t.Fatalf("the second run ended with the first: %v", err)
			}
			_ = b.cmd.Process.Signal(sig)
			if code := b.wait(t); code != 40+int(sig) {
				t.Fatalf("second run: exit %d", code)
			}
		}
	})

	t.Run("ignored signals stay ignored", func(t *testing.T) {
		// As `nohup` or a shell's background job start it: SIGHUP and SIGINT ignored. The
		// command inherits them ignored, and a hangup (to quicgate and to the command, as a
		// terminal's end sends it) ends neither: the command ends when its input does.
		args := append(append([]string{"sh", "-c", `trap '' HUP INT; exec "$@"`, "sh", quicgateBin}, rs.args...),
			"--log-level", "info", "--log-format", "json", "--", "sh", "-c", `grep SigIgn /proc/self/status; echo ready; read x; echo done`)
		cmd := in(rs.tp.a, asNobody(args...)...)
		cmd.Dir = rs.dir
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := startRun(t, cmd)
		pid := p.pid(t)
		p.waitStdout(t, "ready")
		var ign uint64
		for _, l := range strings.Split(p.stdout(), "\n") {
			if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
				ign, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			}
		}
		const hupInt = 1<<(syscall.SIGHUP-1) | 1<<(syscall.SIGINT-1)
		if ign&hupInt != hupInt {
			t.Fatalf("the command's ignored signals: %#x, want SIGHUP and SIGINT among them; stdout:\n%s", ign, p.stdout())
		}
		// An ignored signal is discarded when it is sent: once kill returns, it is gone.
		for _, target := range []int{p.cmd.Process.Pid, pid} {
			for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT} {
				if err := syscall.Kill(target, sig); err != nil {
					t.Fatalf("%v to %d: %v", sig, target, err)
				}
			}
		}
		_ = stdin.Close()
		if code := p.wait(t); code != 0 || !strings.HasSuffix(p.stdout(), "done") {
			t.Fatalf("exit %d, want 0 once the command has read its input's end; stdout:\n%s", code, p.stdout())
		}
	})

	t.Run("a signal during the setup", func(t *testing.T) {
		// No server answers: the setup waits for the connection (up to --dial-timeout) with
		// the namespace made. Any of the relayed signals stops it there, the command never
		// runs, and quicgate's status is the signal's, as a shell reports it.
		marker := filepath.Join(rs.dir, "ran")
		flags := []string{"--server", addrB + ":4434", "--dial-timeout", "2m", "--log-level", "debug", "--log-format", "json"}
		for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGINT, syscall.SIGTERM} {
			p := startRun(t, rs.command(false, flags, "touch", marker))
			p.waitLog(t, "rootless: namespace ready")
			_ = p.cmd.Process.Signal(sig)
			if code := p.wait(t); code != 128+int(sig) {
				t.Fatalf("%v during the setup: exit %d, want %d", sig, code, 128+int(sig))
			}
			// Killed by it, as a shell's loop must see to stop: not an exit status.
			if got, core := killedBy(p.cmd); got != sig || core {
				t.Fatalf("%v during the setup: quicgate ended by %v (core dumped: %v), want %v", sig, got, core, sig)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("%v during the setup: the command ran", sig)
			}
		}
	})

	t.Run("killed with quicgate", func(t *testing.T) {
		// SIGKILL leaves quicgate no say: the command must die by the parent-death signal
		// its child set on the thread that execs it. Several runs at once, as the thread a
		// goroutine resumes on after a blocking read varies.
		const runs = 4
		procs := make([]*runProc, runs)
		for i := range procs {
			procs[i] = startRun(t, rs.command(false, []string{"--log-level", "info", "--log-format", "json"}, "sh", "-c", "echo ready; exec sleep 1000"))
		}
		pidfds := make([]int, runs)
		for i, p := range procs {
			pid := p.pid(t)
			p.waitStdout(t, "ready")
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				t.Fatalf("pidfd of the command (pid %d): %v", pid, err)
			}
			pidfds[i] = fd
			t.Cleanup(func() {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // if it survived
				_ = unix.Close(fd)
			})
		}
		for i, p := range procs {
			_ = p.cmd.Process.Kill()
			if !waitPidfd(t, pidfds[i], hangLimit) {
				t.Fatalf("run %d: the command outlived a killed quicgate run by %v", i, hangLimit)
			}
		}
	})
}

// waitPidfd waits up to limit for the process behind a pidfd to end, and reports whether
// it did.
func waitPidfd(t *testing.T, fd int, limit time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			t.Fatalf("poll on a pidfd: %v", err)
		case n > 0:
			return true
		}
	}
}

// runProc is a `quicgate run` in progress whose stdout (the command's) and JSON log the
// test reads.
type runProc struct {
	cmd    *exec.Cmd
	lines  chan string
	logs   chan map[string]any
	mu     sync.Mutex
	out    []string
	log    []map[string]any
	exited chan struct{}
	err    error
}

func startRun(t *testing.T, cmd *exec.Cmd) *runProc {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runProc{cmd: cmd, lines: make(chan string, 100), logs: make(chan map[string]any, 100), exited: make(chan struct{})}
	var readers sync.WaitGroup
	readers.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	})
	readers.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": sc.Text()}
			}
			p.mu.Lock()
			p.log = append(p.log, m)
			p.mu.Unlock()
			select {
			case p.logs <- m:
			default:
			}
		}
	})
	go func() {
		defer close(p.exited)
		readers.Wait()
		p.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(hangLimit):
			t.Errorf("quicgate run's output stayed open %v after it was killed", hangLimit)
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("quicgate run: stdout %q, log %v", p.out, p.log)
			p.mu.Unlock()
		}
	})
	return p
}

func (p *runProc) waitStdout(t *testing.T, line string) {
	t.Helper()
	timeout := time.After(hangLimit)
	for {
		select {
		case l := <-p.lines:
			if l == line {
				return
			}
		case <-p.exited:
			t.Fatalf("quicgate run exited before the command printed %q", line)
		case <-timeout:
			t.Fatalf("the command did not print %q within %v", line, hangLimit)
		}
	}
}

// pid is the command's PID, from the log line that says how to join it.
func (p *runProc) pid(t *testing.T) int {
	t.Helper()
	timeout := time.After(hangLimit)
	for {
		select {
		case m := <-p.logs:
			if m["msg"] != "running the command in its own namespace" {
				continue
			}
			pid, ok := m["pid"].(float64)
			if !ok {
				t.Fatalf("no pid in %v", m)
			}
			return int(pid)
		case <-p.exited:
			t.Fatal("quicgate run exited before it ran the command")
		case <-timeout:
			t.Fatalf("no 'running the command in its own namespace' line within %v", hangLimit)
		}
	}
}

// waitLog waits for a log line whose message is msg.
func (p *runProc) waitLog(t *testing.T, msg string) {
	t.Helper()
	timeout := time.After(hangLimit)
	for {
		select {
		case m := <-p.logs:
			if m["msg"] == msg {
				return
			}
		case <-p.exited:
			t.Fatalf("quicgate run exited before it logged %q", msg)
		case <-timeout:
			t.Fatalf("no %q log line within %v", msg, hangLimit)
		}
	}
}

func (p *runProc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// wait returns the exit code, once quicgate run has exited.
func (p *runProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(hangLimit):
		t.Fatalf("quicgate run did not exit within %v", hangLimit)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return shellStatus(ee)
	}
	if p.err != nil {
		t.Fatalf("quicgate run: %v", p.err)
	}
	return 0
}

// TestRunUserNamespacesOff: where user namespaces are disabled, run says which setting
// does it and how to change it, in one line, with exit status 1. The setting is lowered
// only inside a user namespace the test makes for it (user.max_user_namespaces is per
// namespace), so nothing on the host changes.
func TestRunUserNamespacesOff(t *testing.T) {
	privtest.Require(t, "unshare", "setpriv")
	dir, err := os.MkdirTemp("", "quicgate-run")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o777)
	// The client's identity exists already, so the one line is about the namespaces.
	mk := asNobody(quicgateBin, "fingerprint", "--state-dir", filepath.Join(dir, "client"))
	if out, err := exec.Command(mk[0], mk[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("fingerprint as nobody: %v\n%s", err, out)
	}
	script := `echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"`
	line := asNobody("unshare", "--user", "--map-root-user", "--", "sh", "-c", script, "sh",
		quicgateBin, "run", "--server", "127.0.0.1:1", "--pin", fingerprint(t, filepath.Join(dir, "server")),
		"--state-dir", filepath.Join(dir, "client"), "--", "true")
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, line[0], line[1:]...)
	cmd.Dir = dir
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out.String())
	}
	got := strings.TrimSpace(out.String())
	want := "quicgate run: user namespaces are not available: user.max_user_namespaces is 0 here; allow them (as root): sysctl -w user.max_user_namespaces="
	if !strings.HasPrefix(got, want) || strings.Contains(got, "\n") {
		t.Fatalf("got:\n%s\nwant one line starting %q", got, want)
	}
}

// Mistakes on run's command line: one line, exit status 2.
func TestRunBadFlags(t *testing.T) {
	pin := fingerprint(t, filepath.Join(t.TempDir(), "s"))
	clientConf := filepath.Join(t.TempDir(), "client.yaml")
	if err := os.WriteFile(clientConf, []byte("tun: qg1\nroute: [10.99.0.0/16]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin}, "give the command after --"},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--"}, "give the command after --"},
		{[]string{"run", "--pin", pin, "--", "true"}, "--server is required"},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--tun", "x", "--", "true"}, "run makes its own device"},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--tun-addr", "nonsense", "--", "true"}, `--tun-addr "nonsense"`},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "true"}, "give the command after --"},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--tun-mtu", "100", "--", "true"}, "--tun-mtu 100: want 1280 to 65535"},
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--tun-dns", "198.18.0.1", "--", "true"}, "--tun-dns 198.18.0.1 is the interface's own address"},
		// A client's config file that sets them: its settings are named, not flags.
		{[]string{"run", "--server", "127.0.0.1:1", "--pin", pin, "--config", clientConf, "--", "true"}, clientConf + " sets tun or route, which are the client's"},
	} {
		_, stderr, code := runQuick(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, %q; want 2 and one line with %q", tt.args, code, stderr, tt.want)
		}
	}
	// -h shows the client's flags with run's own defaults.
	out, _, code := runQuick(t, "run", "-h")
	if code != 0 || !strings.Contains(out, "-server") || !strings.Contains(out, `(default "warn")`) {
		t.Fatalf("run -h: exit %d:\n%s", code, out)
	}
}
