package rootless

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/logging"
)

// DefaultTUN is the device's name inside the namespace; each namespace has its own, so
// every run can use the same.
const DefaultTUN = "qg0"

// DefaultAddrs are the device's addresses, the source of the command's flows: the IPv4
// benchmarking block (RFC 2544) and a unique-local IPv6 prefix, chosen so that no
// destination the command may want is shadowed by them.
var DefaultAddrs = []netip.Prefix{netip.MustParsePrefix("198.18.0.1/32"), netip.MustParsePrefix("fd00:7167:7275:6e::1/128")}

// DefaultRoutes send everything into the device.
var DefaultRoutes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// DefaultDNS is where quicgate run answers the command's DNS queries (the ingress's TUN DNS
// responder, which resolves names at the server): an address in the benchmarking block
// beside DefaultAddrs, routed into the device like every other.
var DefaultDNS = netip.MustParseAddr("198.18.0.53")

// ResolvConf is the resolv.conf that points the namespace's resolver at dns alone, so that
// no lookup leaks to the host's resolver (which the namespace cannot reach anyway).
func ResolvConf(dns netip.Addr) string {
	return "# quicgate run: names are resolved at the server, under its policy.\nnameserver " + dns.String() + "\n"
}

// setupTimeout bounds each exchange with the child before the command runs.
const setupTimeout = 30 * time.Second

// Config describes the command and its namespace.
type Config struct {
	// Path is the command's executable (as exec.LookPath found it; Run looks it up from
	// Args[0] if it is "") and Args its argument list, Args[0] included.
	Path string
	Args []string
	// Env is the command's environment (nil: this process's) and Dir its working
	// directory ("": this process's).
	Env []string
	Dir string
	// Stdin, Stdout and Stderr are the command's (nil: the null device); pass os.Stdin and
	// the others to give it the terminal.
	Stdin, Stdout, Stderr *os.File
	// Self is how this binary is run again to reach ChildMain: its argument list up to,
	// not including, the "--" before the command (such as {"quicgate", "run"}).
	Self []string

	// TUN is the device's name (DefaultTUN if empty), MTU its MTU, Addrs its addresses
	// (DefaultAddrs if empty), Routes what is routed into it (DefaultRoutes if empty).
	// IPv6 ones are left out where the kernel has no IPv6.
	TUN    string
	MTU    int
	Addrs  []netip.Prefix
	Routes []netip.Prefix
	// Resolv becomes /etc/resolv.conf in the namespace ("" keeps the host's).
	Resolv string

	Logger *logrus.Entry // nil: discard
}

// Proc is the child: until Exec it waits in its namespaces; from Exec on it is the command.
type Proc struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	log  *logrus.Entry
	info ready

	mu     sync.Mutex
	tunFD  int // -1 once taken
	waited bool
	status int
	sig    syscall.Signal // the signal that ended the command, 0 if it exited
	err    error
}

// Start makes the namespaces and the TUN device in them, and returns once the device's
// descriptor is here (TakeTUN); the command runs only after Exec. A refusal matches
// ErrUserNamespaces or ErrTUNAccess, its text naming the setting to change. ctx bounds
// the setup only.
func Start(ctx context.Context, cfg Config) (*Proc, error) {
	if cfg.Path == "" || len(cfg.Args) == 0 || len(cfg.Self) == 0 {
		return nil, errors.New("rootless: Config needs Path, Args and Self")
	}
	log := logging.OrDiscard(cfg.Logger)
	s := setup{TUN: cfg.TUN, MTU: cfg.MTU, Addrs: cfg.Addrs, Routes: cfg.Routes, Resolv: cfg.Resolv, Path: cfg.Path}
	if s.TUN == "" {
		s.TUN = DefaultTUN
	}
	if len(s.Addrs) == 0 {
		s.Addrs = DefaultAddrs
	}
	if len(s.Routes) == 0 {
		s.Routes = DefaultRoutes
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("rootless: socket pair: %w", err)
	}
	parentEnd := os.NewFile(uintptr(fds[0]), "quicgate-run")
	childEnd := os.NewFile(uintptr(fds[1]), "quicgate-run-child")
	defer childEnd.Close()
	c, err := net.FileConn(parentEnd)
	_ = parentEnd.Close()
	if err != nil {
		return nil, fmt.Errorf("rootless: socket pair: %w", err)
	}
	conn := c.(*net.UnixConn)

	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        append(append(append([]string(nil), cfg.Self...), "--"), cfg.Args...),
		Env:         append(env[:len(env):len(env)], childEnv+"="+fmt.Sprint(childFD)),
		Dir:         cfg.Dir,
		ExtraFiles:  []*os.File{childEnd},
		SysProcAttr: sysProcAttr(os.Getuid(), os.Getgid(), os.ReadFile),
	}
	// Set only the ones given: a nil *os.File in an io.Reader is not a nil Reader.
	if cfg.Stdin != nil {
		cmd.Stdin = cfg.Stdin
	}
	if cfg.Stdout != nil {
		cmd.Stdout = cfg.Stdout
	}
	if cfg.Stderr != nil {
		cmd.Stderr = cfg.Stderr
	}
	if err := cmd.Start(); err != nil {
		_ = conn.Close()
		return nil, namespaceRefusal(err, os.Getuid() == 0 && initialUserNamespace(), procSysctl)
	}
	_ = childEnd.Close()
	p := &Proc{cmd: cmd, conn: conn, log: log, tunFD: -1}
	fd, err := p.handshake(ctx, s)
	if err != nil {
		p.abort()
		return nil, err
	}
	p.tunFD = fd
	log.WithFields(logrus.Fields{"pid": p.PID(), "dev": p.info.Name, "ipv6": p.info.IPv6, "resolv_conf": p.info.Resolv}).Debug("rootless: namespace ready")
	return p, nil
}

// sysProcAttr puts the child in new user, network and mount namespaces. The user namespace
// maps the caller's uid and gid to themselves (root maps every id it has, so a command run
// by root sees the files it would see outside), and the child keeps CAP_NET_ADMIN and
// CAP_SYS_ADMIN in it across its exec, which it drops before the command's. The child dies
// with its parent: without the parent its network is gone. readFile reads /proc/self's
// maps (os.ReadFile; tests pass a fake).
func sysProcAttr(uid, gid int, readFile func(string) ([]byte, error)) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNET | unix.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN},
		Pdeathsig:   syscall.SIGKILL,
	}
	if uid != 0 {
		return a
	}
	// Root maps the ids its own user namespace has, each to itself: every id in the initial
	// namespace, only the mapped ones in another (uid 0 of `unshare -r` or a rootless
	// container), where asking for more fails with EPERM.
	uids, uerr := readFile("/proc/self/uid_map")
	gids, gerr := readFile("/proc/self/gid_map")
	if uerr == nil && gerr == nil {
		if u, g := identityMaps(string(uids)), identityMaps(string(gids)); len(u) > 0 && len(g) > 0 {
			a.UidMappings, a.GidMappings = u, g
		}
	}
	// setgroups stays denied in a namespace below one that denies it (writing "allow" fails).
	sg, err := readFile("/proc/self/setgroups")
	a.GidMappingsEnableSetgroups = err != nil || strings.TrimSpace(string(sg)) == "allow"
	return a
}

// identityMaps turns the extents of a /proc/PID/uid_map or gid_map ("inside outside count"
// lines) into mappings of the same ids, seen from this namespace, to themselves.
func identityMaps(content string) []syscall.SysProcIDMap {
	var maps []syscall.SysProcIDMap
	for line := range strings.Lines(content) {
		var inside, outside, count uint64
		if n, _ := fmt.Sscan(line, &inside, &outside, &count); n != 3 || count == 0 {
			continue
		}
		maps = append(maps, syscall.SysProcIDMap{ContainerID: int(inside), HostID: int(inside), Size: int(count)})
	}
	return maps
}

// initialUserNamespace reports whether this process is in the initial user namespace, whose
// uid_map maps every id to itself: root there is exempt from the settings that hold back
// unprivileged users, root in another namespace is not.
func initialUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	return err == nil && strings.Join(strings.Fields(string(b)), " ") == "0 0 4294967295"
}

// handshake sends the setup and waits for the device, within setupTimeout and ctx.
func (p *Proc) handshake(ctx context.Context, s setup) (int, error) {
	stop := p.bound(ctx)
	defer stop()
	if err := send(p.conn, s, -1); err != nil {
		return -1, p.childFailed(ctx, err)
	}
	fd, err := receive(p.conn, &p.info)
	if err != nil {
		return -1, p.childFailed(ctx, err)
	}
	if p.info.Error != "" {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, p.refusal(&stepError{Step: p.info.Step, Msg: p.info.Error, Errno: unix.Errno(p.info.Errno)})
	}
	if fd < 0 {
		return -1, errors.New("rootless: the child sent no TUN device")
	}
	return fd, nil
}

// bound puts a deadline of setupTimeout on the socket, brought forward when ctx ends.
func (p *Proc) bound(ctx context.Context) (stop func()) {
	_ = p.conn.SetDeadline(time.Now().Add(setupTimeout))
	stopAfter := context.AfterFunc(ctx, func() { _ = p.conn.SetDeadline(time.Now()) })
	return func() {
		stopAfter()
		_ = p.conn.SetDeadline(time.Time{})
	}
}

// childFailed explains a broken exchange: ctx ended, the child timed out, or it died.
func (p *Proc) childFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("rootless: setting up the namespace: %w", ctx.Err())
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("rootless: the namespace's setup did not answer within %v", setupTimeout)
	}
	return fmt.Errorf("rootless: the namespace's setup ended early: %w", err)
}

// refusal names the setting behind a failed step where there is one.
func (p *Proc) refusal(e *stepError) error {
	if e.Step == stepOpen {
		return tunRefusal(e.Errno, os.Stat)
	}
	if errors.Is(e, unix.EPERM) && !(os.Getuid() == 0 && initialUserNamespace()) {
		if r := appArmorRefusal(procSysctl); r != nil {
			return r
		}
	}
	return e
}

// TakeTUN hands over the TUN device's descriptor (for tun.FromFD), once; -1 after that.
func (p *Proc) TakeTUN() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	fd := p.tunFD
	p.tunFD = -1
	return fd
}

// PID is the child's process ID, which the command keeps: `nsenter
// --preserve-credentials -U -n -m -t PID` joins its namespaces.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Device is the TUN device's name inside the namespace.
func (p *Proc) Device() string { return p.info.Name }

// Exec lets the command run, and returns once it has replaced the child. If the exec
// failed the error is an *ExecError, with the exit status 127 or 126 (ExecStatus). ctx
// bounds the wait for the exec.
func (p *Proc) Exec(ctx context.Context) error {
	stop := p.bound(ctx)
	defer stop()
	if err := send(p.conn, start{}, -1); err != nil {
		return p.childFailed(ctx, err)
	}
	// The socket closes when exec succeeds (the child's end is close-on-exec).
	var r ready
	fd, err := receive(p.conn, &r)
	if fd >= 0 {
		_ = unix.Close(fd)
	}
	_ = p.conn.Close()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return p.childFailed(ctx, err)
	case r.Step == stepExec && r.Errno != 0:
		e := &stepError{Step: r.Step, Msg: r.Error, Errno: unix.Errno(r.Errno)}
		return &ExecError{Status: ExecStatus(e), Err: e}
	case r.Error != "":
		return &stepError{Step: r.Step, Msg: r.Error, Errno: unix.Errno(r.Errno)}
	}
	return errors.New("rootless: unexpected message from the child")
}

// Wait relays the signals that arrive on sigs to the command until it exits, and returns
// its exit status as a shell reports it: its exit code, or 128 plus the number of the
// signal that ended it. SIGINT and SIGQUIT are not relayed while the command shares a
// terminal's foreground process group with this process: the terminal sent them to both.
func (p *Proc) Wait(sigs <-chan os.Signal) (int, error) {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = p.cmd.Wait()
	}()
	for {
		select {
		case sig := <-sigs:
			if fromTerminal(sig) {
				p.log.WithField("signal", sig.String()).Debug("rootless: the terminal sent it to the command as well")
				continue
			}
			if serr := p.cmd.Process.Signal(sig); serr != nil && !errors.Is(serr, os.ErrProcessDone) {
				p.log.WithError(serr).WithField("signal", sig.String()).Warn("could not pass the signal to the command")
			}
		case <-done:
			p.mu.Lock()
			p.waited = true
			p.status, p.sig, p.err = exitStatus(err)
			status, werr := p.status, p.err
			p.mu.Unlock()
			return status, werr
		}
	}
}

// exitStatus turns exec.Cmd.Wait's error into a shell's exit status, and the signal that
// ended the command if one did.
func exitStatus(err error) (int, syscall.Signal, error) {
	if err == nil {
		return 0, 0, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 1, 0, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), ws.Signal(), nil
	}
	return ee.ExitCode(), 0, nil
}

// ExitSignal is the signal that ended the command, or 0 if it exited (or Wait has not
// returned).
func (p *Proc) ExitSignal() syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sig
}

// fromTerminal reports whether sig is a terminal's interrupt or quit that also reached the
// command: stdin is a terminal whose foreground process group is ours (which the command
// shares). A kill from elsewhere while the command runs in the foreground is then not
// relayed either; send it to the command's PID.
func fromTerminal(sig os.Signal) bool {
	if sig != syscall.SIGINT && sig != syscall.SIGQUIT {
		return false
	}
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}

// Signal sends sig to the child (the command, once Exec has returned).
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("rootless: %w", err)
	}
	return nil
}

// Close ends the child if it is still running (SIGKILL) and reaps it, and closes the
// socket and the device's descriptor if not taken. Call it once Wait has returned, or
// instead of Wait; never while Wait runs.
func (p *Proc) Close() {
	_ = p.conn.Close()
	if fd := p.TakeTUN(); fd >= 0 {
		_ = unix.Close(fd)
	}
	p.mu.Lock()
	waited := p.waited
	p.mu.Unlock()
	if !waited {
		p.abort()
	}
}

// abort kills and reaps the child.
func (p *Proc) abort() {
	_ = p.conn.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.mu.Lock()
	p.waited = true
	p.mu.Unlock()
}
