package main

import (
	"bytes"
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

// A server whose host stops answering (SIGSTOP: it neither answers nor closes) is given up
// within the documented bounds (docs/operations.md, "A server that stops answering"), not
// after the 60 s idle timeout: the flow open through -L is reset within twice the client's
// keepalive period (1 s) of the server's last packet, a flow started after the silence
// began fails within --dial-timeout, one line says so, and once the server runs again the
// client reconnects and new flows work.
func TestServerStopsAnswering(t *testing.T) {
	dst := tcpServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := newPair(t)
	srv, addr := p.startServer(t, "127.0.0.1/32")
	const dialTimeout = 4 * time.Second
	cli := start(t, "client", "--server", addr, "--state-dir", filepath.Join(p.dir, "client"), "--pin", p.pin,
		"-L", "0:"+dst, "--dial-timeout", dialTimeout.String())
	local := cli.waitFor(t, "forwarding")["listen"].(string)
	open := dialEcho(t, local)

	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitProcState(t, srv.cmd.Process.Pid, 'T') // a signal is delivered when it is
	stopped := true
	defer func() {
		if stopped {
			_ = srv.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	start := time.Now()
	// The slack is for a loaded machine; both waits are far below the 60 s idle timeout.
	const keepalive, slack = time.Second, 2 * time.Second
	type ended struct {
		err  error
		took time.Duration
	}
	newFlow := make(chan ended, 1)
	go func() {
		c, err := net.Dial("tcp", local)
		if err == nil {
			defer c.Close()
			_, _ = c.Write([]byte("ping"))
			_ = c.SetReadDeadline(time.Now().Add(hangLimit))
			_, err = c.Read(make([]byte, 1))
		}
		newFlow <- ended{err, time.Since(start)}
	}()
	_ = open.SetReadDeadline(time.Now().Add(hangLimit))
	_, err := open.Read(make([]byte, 1))
	openTook := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the open flow ended with %v, want a reset", err)
	}
	if openTook > 2*keepalive+slack {
		t.Fatalf("the open flow was reset %v after the server stopped, want within %v", openTook, 2*keepalive)
	}
	var nf ended
	select {
	case nf = <-newFlow:
	case <-time.After(hangLimit):
		t.Fatal("the new flow did not end")
	}
	if !errors.Is(nf.err, syscall.ECONNRESET) {
		t.Fatalf("the new flow ended with %v, want a reset", nf.err)
	}
	if nf.took > dialTimeout+slack {
		t.Fatalf("the new flow failed %v after the server stopped, want within --dial-timeout %v", nf.took, dialTimeout)
	}
	t.Logf("server stopped: the open flow was reset after %v, a new flow after %v",
		openTook.Round(time.Millisecond), nf.took.Round(time.Millisecond))
	cli.waitFor(t, "no answer from server; connection lost, reconnecting")

	if err := srv.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	back := time.Now()
	cli.waitFor(t, "reconnected to server")
	t.Logf("reconnected %v after the server ran again", time.Since(back).Round(time.Millisecond))
	c := dialEcho(t, local)
	_ = c.Close()
	if n := cli.count("no answer from server; connection lost, reconnecting"); n != 1 {
		t.Fatalf("the silence was logged %d times, want once", n)
	}
	cli.stop(t)
	srv.stop(t)
}

// waitProcState waits until process pid is in state (the third field of /proc/PID/stat:
// 'T' stopped, 'S' sleeping, ...).
func waitProcState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(hangLimit)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The command name, in parentheses, may hold spaces: the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not in state %c within %v", pid, state, hangLimit)
		}
		time.Sleep(time.Millisecond)
	}
}
