package rootless

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Each refusal names the setting behind it and how to change it, on one line, and matches
// its sentinel.
func TestNamespaceRefusal(t *testing.T) {
	tests := []struct {
		name    string
		sysctls map[string]string
		root    bool
		err     error
		want    string
	}{
		{"max user namespaces 0", map[string]string{"user.max_user_namespaces": "0"}, false, unix.ENOSPC, "user.max_user_namespaces is 0 here; allow them (as root): sysctl -w user.max_user_namespaces="},
		{"max user namespaces 0, as root", map[string]string{"user.max_user_namespaces": "0"}, true, unix.ENOSPC, "user.max_user_namespaces is 0"},
		{"max net namespaces 0", map[string]string{"user.max_user_namespaces": "100", "user.max_net_namespaces": "0"}, false, unix.ENOSPC, "user.max_net_namespaces is 0"},
		{"Debian's switch", map[string]string{"user.max_user_namespaces": "100", "kernel.unprivileged_userns_clone": "0"}, false, unix.EPERM, "kernel.unprivileged_userns_clone is 0 here, so only root may create them; allow them (as root): sysctl -w kernel.unprivileged_userns_clone=1"},
		{"AppArmor", map[string]string{"kernel.apparmor_restrict_unprivileged_userns": "1"}, false, unix.EPERM, "AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns is 1)"},
		{"limit reached", map[string]string{"user.max_user_namespaces": "3"}, false, unix.ENOSPC, "the limit on user namespaces is reached (user.max_user_namespaces is 3"},
		{"something else", map[string]string{"user.max_user_namespaces": "100"}, false, unix.EINVAL, "creating a user and network namespace: fork/exec /proc/self/exe: invalid argument"},
		// Root is not held back by the switches for unprivileged users.
		{"Debian's switch, as root", map[string]string{"kernel.unprivileged_userns_clone": "0"}, true, unix.EINVAL, "creating a user and network namespace"},
		{"Debian's switch, as root, EPERM", map[string]string{"kernel.unprivileged_userns_clone": "0"}, true, unix.EPERM, "creating a user and network namespace: fork/exec /proc/self/exe: operation not permitted"},
		// A setting is named only for the errno the kernel gives for it.
		{"max user namespaces 0, EPERM", map[string]string{"user.max_user_namespaces": "0"}, false, unix.EPERM, "creating a user and network namespace: fork/exec /proc/self/exe: operation not permitted"},
		{"Debian's switch, ENOSPC", map[string]string{"user.max_user_namespaces": "7", "kernel.unprivileged_userns_clone": "0"}, false, unix.ENOSPC, "the limit on user namespaces is reached (user.max_user_namespaces is 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			get := func(name string) (string, bool) { v, ok := tt.sysctls[name]; return v, ok }
			err := namespaceRefusal(&fs.PathError{Op: "fork/exec", Path: "/proc/self/exe", Err: tt.err}, tt.root, get)
			if !errors.Is(err, ErrUserNamespaces) {
				t.Fatalf("%v does not match ErrUserNamespaces", err)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %q, want one line with %q", err, tt.want)
			}
		})
	}
}

// An error that is no refusal of namespaces is reported as it is, whatever the settings.
func TestNamespaceRefusalOther(t *testing.T) {
	get := func(string) (string, bool) { return "0", true }
	for _, errno := range []unix.Errno{unix.ENOENT, unix.EACCES, unix.ENOMEM} {
		err := namespaceRefusal(&fs.PathError{Op: "chdir", Path: "/gone", Err: errno}, false, get)
		if errors.Is(err, ErrUserNamespaces) || !errors.Is(err, errno) || !strings.Contains(err.Error(), "chdir /gone: "+errno.Error()) || strings.Contains(err.Error(), "sysctl") {
			t.Errorf("%v: got %q, want the real error and no setting", errno, err)
		}
	}
}

// Root maps the ids of its own namespace to themselves: all of them in the initial one,
// only those mapped in another (uid 0 of unshare -r); setgroups follows the namespace's.
func TestSysProcAttrRoot(t *testing.T) {
	files := func(uidMap, gidMap, setgroups string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			switch name {
			case "/proc/self/uid_map":
				return []byte(uidMap), nil
			case "/proc/self/gid_map":
				return []byte(gidMap), nil
			case "/proc/self/setgroups":
				return []byte(setgroups), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	a := sysProcAttr(0, 0, files("         0          0 4294967295\n", "         0          0 4294967295\n", "allow\n"))
	if fmt.Sprint(a.UidMappings, a.GidMappings) != "[{0 0 4294967295}] [{0 0 4294967295}]" || !a.GidMappingsEnableSetgroups {
		t.Errorf("initial namespace: %v %v setgroups %v", a.UidMappings, a.GidMappings, a.GidMappingsEnableSetgroups)
	}
	a = sysProcAttr(0, 0, files("         0      65534          1\n", "         0      65534          1\n      1000     100000      65536\n", "deny\n"))
	if fmt.Sprint(a.UidMappings, a.GidMappings) != "[{0 0 1}] [{0 0 1} {1000 1000 65536}]" || a.GidMappingsEnableSetgroups {
		t.Errorf("unshare -r: %v %v setgroups %v", a.UidMappings, a.GidMappings, a.GidMappingsEnableSetgroups)
	}
	a = sysProcAttr(1000, 1000, files("", "", ""))
	if fmt.Sprint(a.UidMappings, a.GidMappings) != "[{1000 1000 1}] [{1000 1000 1}]" {
		t.Errorf("a user: %v %v", a.UidMappings, a.GidMappings)
	}
}

type fakeInfo struct {
	fs.FileInfo
	mode fs.FileMode
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }

func TestTUNRefusal(t *testing.T) {
	stat := func(string) (fs.FileInfo, error) { return fakeInfo{mode: fs.ModeCharDevice | 0o600}, nil }
	err := tunRefusal(unix.EACCES, stat)
	if !errors.Is(err, ErrTUNAccess) || !strings.Contains(err.Error(), "mode 0600") || !strings.Contains(err.Error(), "chmod 0666 /dev/net/tun") {
		t.Fatalf("EACCES: %v", err)
	}
	if err := tunRefusal(unix.ENOENT, stat); !errors.Is(err, ErrTUNAccess) || !strings.Contains(err.Error(), "modprobe tun") {
		t.Fatalf("ENOENT: %v", err)
	}
}

// The socket protocol carries a message with a descriptor, and reads the peer's close as
// io.EOF.
func TestMessages(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	_ = b.SetDeadline(time.Now().Add(10 * time.Second))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := send(a, ready{Name: "qg0", IPv6: true}, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	var got ready
	fd, err := receive(b, &got)
	if err != nil || got.Name != "qg0" || !got.IPv6 || fd < 0 {
		t.Fatalf("got %+v, fd %d, %v", got, fd, err)
	}
	// The descriptor is the pipe's write end: what goes in comes out of r.
	if _, err := unix.Write(fd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = unix.Close(fd)
	buf := make([]byte, 1)
	if _, err := io.ReadFull(r, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read %q, %v", buf, err)
	}
	if err := send(a, failure(stepOpen, unix.EACCES), -1); err != nil {
		t.Fatal(err)
	}
	if fd, err := receive(b, &got); err != nil || fd != -1 || got.Errno != int(unix.EACCES) || got.Step != stepOpen {
		t.Fatalf("failure: %+v, fd %d, %v", got, fd, err)
	}
	_ = a.Close()
	if _, err := receive(b, &got); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want io.EOF", err)
	}
}

func TestCommandArgs(t *testing.T) {
	if args, ok := commandArgs([]string{"quicgate", "run", "--", "curl", "--", "x"}); !ok || strings.Join(args, " ") != "curl -- x" {
		t.Fatalf("got %q, %v", args, ok)
	}
	if _, ok := commandArgs([]string{"quicgate", "run", "--"}); ok {
		t.Fatal("an empty command passed")
	}
}

// A command that cannot be run gets env's exit status: 127 not found, 126 not runnable.
func TestExecStatus(t *testing.T) {
	for err, want := range map[error]int{
		&exec.Error{Name: "x", Err: exec.ErrNotFound}:             127,
		&fs.PathError{Op: "stat", Path: "/x", Err: unix.ENOENT}:   127,
		&stepError{Step: stepExec, Msg: "x", Errno: unix.ENOENT}:  127,
		&stepError{Step: stepExec, Msg: "x", Errno: unix.EACCES}:  126,
		&stepError{Step: stepExec, Msg: "x", Errno: unix.ENOEXEC}: 126,
		&exec.Error{Name: "x", Err: fs.ErrPermission}:             126,
	} {
		if got := ExecStatus(err); got != want {
			t.Errorf("%v: %d, want %d", err, got, want)
		}
	}
}
