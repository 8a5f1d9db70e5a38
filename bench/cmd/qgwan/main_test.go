package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/bench/wan"
	"github.com/quicgate/quicgate/internal/privtest"
)

// TestMain lets the test binary stand in for qgwan: in its link, serve and gen modes (the
// harness runs itself in those), and as the whole command with QGWAN_TEST_RUN=1.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "link":
			os.Exit(wan.LinkCommand(os.Args[2:]))
		case "serve":
			os.Exit(wan.ServeCommand(os.Args[2:]))
		case "gen":
			os.Exit(wan.GenCommand(os.Args[2:]))
		}
	}
	if os.Getenv("QGWAN_TEST_RUN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func qgwan(args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "QGWAN_TEST_RUN=1")
	return cmd
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-profiles", "100M/40ms"},
		{"-profiles", "100M/40ms/1%,fast/1s/0%"},
		{"-rows", "ssh-bbr,nope"},
		{"-udp", "direct,nope"},
		{"-rows", "none", "-udp", "none"},
		{"-quicgate", "/nonexistent/quicgate"},
		{"-quick", "stray"},
		{"-bogus"},
		{"-seed", "x"},
	} {
		var stderr bytes.Buffer
		cmd := qgwan(args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2", args, err)
		}
		if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "qgwan: ") {
			t.Errorf("%v: stderr %q, want one qgwan: line", args, stderr.String())
		}
	}
}

// SIGINT in the middle of a run: the command stops, writes nothing, and leaves no
// namespace, device, sysctl or process of its own behind.
func TestInterruptCleansUp(t *testing.T) {
	privtest.Require(t, "ip")
	allowed := func() string {
		b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
		return strings.TrimSpace(string(b))
	}
	before := allowed()
	out := t.TempDir()
	cmd := qgwan("-quick", "-profiles", "100M/40ms/1%", "-rows", "direct-cubic,direct-bbr", "-quicgate", "/bin/true", "-out", out)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	namespaces := []string{fmt.Sprintf("qgwanc%d", pid), fmt.Sprintf("qgwans%d", pid)}
	var inodes []uint64 // of the namespaces, to find processes still in them afterwards
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(2 * time.Minute)
	var log []string
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("qgwan ended before the second row ran:\n%s", strings.Join(log, "\n"))
			}
			log = append(log, l)
			if strings.Contains(l, "link up") {
				for _, ns := range namespaces {
					// Held open, the namespace outlives its name, so its inode is not reused
					// by a namespace made meanwhile (by tests running in parallel).
					f, err := os.Open(filepath.Join("/var/run/netns", ns))
					if err != nil {
						t.Fatalf("namespace %s: %v", ns, err)
					}
					defer f.Close()
					var st syscall.Stat_t
					if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
						t.Fatal(err)
					}
					inodes = append(inodes, st.Ino)
				}
			}
			if strings.Contains(l, "direct TCP (bbr)") && strings.Contains(l, "alone") {
				break wait
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("no second row within 2 minutes:\n%s", strings.Join(log, "\n"))
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for l := range lines {
			log = append(log, l)
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit: %v, want status 1 (interrupted)", err)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("still running a minute after SIGINT:\n%s", strings.Join(log, "\n"))
	}
	nsList, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, ns := range namespaces {
		if strings.Contains(string(nsList), ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if got := allowed(); got != before {
		t.Errorf("tcp_allowed_congestion_control %q, was %q", got, before)
	}
	// No process in the deleted namespaces (destinations, generator) and no emulator.
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		link, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "net"))
		if err != nil {
			continue
		}
		for _, ino := range inodes {
			if link == fmt.Sprintf("net:[%d]", ino) {
				cl, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
				t.Errorf("process %s still in a deleted namespace: %s", p.Name(), bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
			}
		}
		if cl, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline")); bytes.Contains(cl, []byte(namespaces[0])) {
			t.Errorf("process %s still running: %s", p.Name(), bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) > 0 {
		t.Errorf("an interrupted run wrote %d files to %s", len(entries), out)
	}
	if t.Failed() {
		t.Logf("qgwan's log:\n%s", strings.Join(log, "\n"))
	}
}
