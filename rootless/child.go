package rootless

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/tun"
)

// childEnv marks the re-executed child; its value is the descriptor of its socket.
const childEnv = "QUICGATE_RUN_CHILD"

// childFD is the child's end of the socket pair (exec.Cmd.ExtraFiles[0]).
const childFD = 3

// IsChild reports whether this process is the child Start re-executed, which must call
// ChildMain before anything else.
func IsChild() bool { return os.Getenv(childEnv) == fmt.Sprint(childFD) }

// ChildMain is the child's side, in the new namespaces: it makes what the parent asks for,
// sends the TUN device's descriptor, waits for the go, and execs the command given after
// the first "--" in os.Args. It returns only if that fails, with the exit status to exit
// with (1 for a failed setup, ExecStatus's 126 or 127 for a failed exec); the parent has
// the reason already, so the caller prints nothing.
func ChildMain() int {
	// PR_SET_PDEATHSIG is a property of one thread, not of the process: the kernel keeps
	// the value of the thread that calls execve, threads the Go runtime starts later have
	// none, and a goroutine that blocks (the socket reads below) may resume on any thread.
	// So this goroutine takes a thread of its own first, sets the signal on it, and execs
	// the command from it; it is never unlocked on the way to a successful exec. (Go's
	// Pdeathsig, set on this process's first thread before its own exec, is lost in the
	// same way whenever the exec below runs on another thread: that, rather than a change
	// of credentials, explains why it was found cleared.)
	runtime.LockOSThread()
	// The command dies with quicgate run, whose TUN is its only network. A parent that died
	// before this finds the socket closed below, and the command never runs.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return 1
	}
	f := os.NewFile(childFD, "quicgate-run")
	c, err := net.FileConn(f) // a close-on-exec duplicate
	_ = f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "quicgate run: the child's socket: %v\n", err)
		return 1
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	var cfg setup
	if _, err := receive(conn, &cfg); err != nil {
		return 1 // the parent is gone, or not quicgate run
	}
	argv, ok := commandArgs(os.Args)
	if !ok {
		_ = send(conn, failure(stepExec, errors.New("no command after --")), -1)
		return 1
	}
	dev, r := makeNamespace(cfg)
	if r.Error != "" {
		_ = send(conn, r, -1)
		return 1
	}
	// Sent through the file's raw descriptor: File().Fd() would switch the device, which
	// the parent shares, to blocking mode.
	rc, err := dev.TUN().File().SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = send(conn, r, int(fd)) })
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return 1
	}
	var begin start
	if _, err := receive(conn, &begin); err != nil {
		return 1 // the parent gave up (it failed to connect, or was stopped)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, childEnv+"=") })
	// Capabilities are per thread and exec takes the calling thread's: drop the ambient
	// ones on the thread that execs (this one, locked above), so the command, running as the
	// caller's uid, has none.
	if err := dropCapabilities(); err != nil {
		_ = send(conn, failure(stepCaps, fmt.Errorf("dropping capabilities: %w", err)), -1)
		return 1
	}
	err = syscall.Exec(cfg.Path, argv, env)
	if _, serr := os.Stat(cfg.Path); errors.Is(err, unix.ENOENT) && serr == nil {
		// The file is there: what is missing is the interpreter its #! line names.
		err = fmt.Errorf("%s: the interpreter its #! line names: %w", cfg.Path, err)
	} else {
		err = fmt.Errorf("%s: %w", cfg.Path, err)
	}
	_ = send(conn, failure(stepExec, err), -1)
	runtime.KeepAlive(dev) // the device stays open until exec closes it (O_CLOEXEC)
	return ExecStatus(err)
}

// commandArgs returns what follows the first "--" in args.
func commandArgs(args []string) ([]string, bool) {
	i := slices.Index(args, "--")
	if i < 0 || i+1 >= len(args) {
		return nil, false
	}
	return args[i+1:], true
}

// makeNamespace brings lo up, puts cfg.Resolv over /etc/resolv.conf and creates the TUN
// device with its addresses and routes. On failure the answer names the step.
func makeNamespace(cfg setup) (*tun.Device, ready) {
	var r ready
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return nil, failure(stepLo, err)
	}
	if cfg.Resolv != "" {
		// Mounts made here stay here; "/" may be shared with the host's namespace.
		if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return nil, failure(stepMount, fmt.Errorf("making / private: %w", err))
		}
		if r.Resolv, err = bindResolv(cfg.Resolv); err != nil {
			return nil, failure(stepResolv, err)
		}
	}
	// Open the clone device first, to tell a file mode that keeps the user out (EACCES)
	// from a missing capability (EPERM), which package tun reports alike.
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, failure(stepOpen, err)
	}
	_ = unix.Close(fd)
	addrs, routes := cfg.Addrs, cfg.Routes
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		r.IPv6 = true
	} else {
		// A kernel without IPv6 (ipv6.disable=1): IPv4 only.
		not4 := func(p netip.Prefix) bool { return !p.Addr().Is4() }
		addrs = slices.DeleteFunc(slices.Clone(addrs), not4)
		routes = slices.DeleteFunc(slices.Clone(routes), not4)
	}
	dev, err := tun.Open(tun.Config{Name: cfg.TUN, MTU: cfg.MTU, Addrs: addrs, Routes: routes, Table: tun.MainTable})
	if err != nil {
		if errors.Is(err, tun.ErrPermission) {
			err = fmt.Errorf("%w (%w)", err, unix.EPERM)
		}
		return nil, failure(stepTUN, err)
	}
	r.Name = dev.Name()
	return dev, r
}

// bindResolv bind-mounts a file holding content over /etc/resolv.conf (or what it links
// to) in this mount namespace, and returns what it covered. The file is unlinked at once:
// the mount keeps it. With no /etc/resolv.conf there is nothing to cover and no error.
func bindResolv(content string) (string, error) {
	target, err := filepath.EvalSymlinks("/etc/resolv.conf")
	if errors.Is(err, fs.ErrNotExist) {
		return "none: /etc/resolv.conf does not exist", nil
	}
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "quicgate-resolv-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err != nil {
		return "", err
	}
	if err := unix.Mount(f.Name(), target, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind-mounting over %s: %w", target, err)
	}
	return target, nil
}

// dropCapabilities clears the calling thread's ambient and inheritable capabilities, which
// the child was given to set up its namespace: after exec the command, unless it runs as
// root, has none.
func dropCapabilities() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	return unix.Capset(&hdr, &data[0])
}
