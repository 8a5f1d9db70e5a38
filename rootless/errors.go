package rootless

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

var (
	// ErrUserNamespaces: this process may not create a user namespace with a network
	// namespace in it. The error that wraps it names the setting that forbids it and how
	// to change it.
	ErrUserNamespaces = errors.New("user namespaces are not available")
	// ErrTUNAccess: /dev/net/tun cannot be opened by this user (or is missing). The error
	// that wraps it says why and how to change it.
	ErrTUNAccess = errors.New("/dev/net/tun is not usable")
)

// sysctl reads a setting by its dotted name; ok is false where the kernel has no such
// setting. Tests pass a fake.
type sysctl func(name string) (value string, ok bool)

// procSysctl reads /proc/sys.
func procSysctl(name string) (string, bool) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// namespaceRefusal explains why starting the child in its namespaces failed with err (from
// clone, the id maps or the exec). It names a setting only where err is what the kernel
// returns for it: ENOSPC (EUSERS before Linux 4.9) for a zero or reached
// user.max_user_namespaces or user.max_net_namespaces, EPERM for Debian's switch or
// AppArmor's restriction; EPERM otherwise and EINVAL (a kernel without user namespaces)
// still match ErrUserNamespaces; any other error is the real one, as it is. root says
// whether the caller is root in the initial user namespace, to whom the unprivileged-only
// settings do not apply.
func namespaceRefusal(err error, root bool, get sysctl) error {
	switch {
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EUSERS):
		if v, ok := get("user.max_user_namespaces"); ok && v == "0" {
			return fmt.Errorf("%w: user.max_user_namespaces is 0 here; allow them (as root): sysctl -w user.max_user_namespaces=15000, and the same line in /etc/sysctl.d/ to keep it", ErrUserNamespaces)
		}
		if v, ok := get("user.max_net_namespaces"); ok && v == "0" {
			return fmt.Errorf("%w: user.max_net_namespaces is 0 here; allow network namespaces (as root): sysctl -w user.max_net_namespaces=15000, and the same line in /etc/sysctl.d/ to keep it", ErrUserNamespaces)
		}
		v, _ := get("user.max_user_namespaces")
		return fmt.Errorf("%w: the limit on user namespaces is reached (user.max_user_namespaces is %s, counted per user): raise it (as root): sysctl -w user.max_user_namespaces=15000", ErrUserNamespaces, v)
	case errors.Is(err, unix.EPERM):
		if !root {
			if v, ok := get("kernel.unprivileged_userns_clone"); ok && v == "0" {
				return fmt.Errorf("%w: kernel.unprivileged_userns_clone is 0 here, so only root may create them; allow them (as root): sysctl -w kernel.unprivileged_userns_clone=1, and the same line in /etc/sysctl.d/ to keep it", ErrUserNamespaces)
			}
			if r := appArmorRefusal(get); r != nil {
				return r
			}
		}
		return fmt.Errorf("%w: creating a user and network namespace: %w", ErrUserNamespaces, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%w: creating a user and network namespace: %w", ErrUserNamespaces, err)
	}
	return fmt.Errorf("rootless: starting the command's namespace: %w", err)
}

// appArmorRefusal is the error for Ubuntu's restriction on unprivileged user namespaces,
// if it is on: the namespace is made, but holds no capability, so the first privileged
// step in it fails with EPERM.
func appArmorRefusal(get sysctl) error {
	if v, ok := get("kernel.apparmor_restrict_unprivileged_userns"); ok && v == "1" {
		return fmt.Errorf("%w: AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns is 1); allow quicgate with an AppArmor profile that grants 'userns,', or (as root) sysctl -w kernel.apparmor_restrict_unprivileged_userns=0", ErrUserNamespaces)
	}
	return nil
}

// tunPath is the TUN clone device.
const tunPath = "/dev/net/tun"

// tunRefusal explains why the child could not open /dev/net/tun (errno from open).
func tunRefusal(errno unix.Errno, stat func(string) (fs.FileInfo, error)) error {
	switch errno {
	case unix.ENOENT, unix.ENODEV, unix.ENXIO:
		return fmt.Errorf("%w: there is no TUN device here (%s: %v); load the tun module (as root): modprobe tun", ErrTUNAccess, tunPath, errno)
	case unix.EACCES, unix.EPERM:
		mode := "its mode keeps this user out"
		if fi, err := stat(tunPath); err == nil {
			mode = fmt.Sprintf("it is mode %04o here", fi.Mode().Perm())
		}
		return fmt.Errorf("%w by this user: %s, where most systems make it 0666 (safe: creating a device still needs CAP_NET_ADMIN, which only the command's own namespace gives); allow it (as root): chmod 0666 %s, and a udev rule KERNEL==\"tun\", MODE=\"0666\" to keep it", ErrTUNAccess, mode, tunPath)
	}
	return fmt.Errorf("%w: opening %s: %v", ErrTUNAccess, tunPath, errno)
}

// ExecError is a command that could not be run: Status is the exit status a shell gives
// it (ExecStatus), Err says why.
type ExecError struct {
	Status int
	Err    error
}

func (e *ExecError) Error() string { return e.Err.Error() }
func (e *ExecError) Unwrap() error { return e.Err }

// ExecStatus is the exit status for a command that could not be run because of err, from
// exec.LookPath or execve, as env and shells give it: 127 for one not found (also a script
// whose #! interpreter is missing: ENOENT), 126 for one found but not runnable (EACCES,
// ENOEXEC, and the rest).
func ExecStatus(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, unix.ENOENT) {
		return 127
	}
	return 126
}
