// Package privtest is for tests that need root, TUN devices or network namespaces: it skips
// them where those are missing, or fails them when QUICGATE_REQUIRE_PRIV=1 (CI), so that a
// missing privilege never passes there as a silent skip. It also runs code inside a fresh,
// throwaway network namespace.
package privtest

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Require checks for root, /dev/net/tun and the named programs.
func Require(t testing.TB, programs ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		missing = append(missing, "/dev/net/tun ("+err.Error()+")")
	} else {
		_ = f.Close()
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p+" ('make deps' installs it)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("QUICGATE_REQUIRE_PRIV") == "1" {
		t.Fatal(msg + " (QUICGATE_REQUIRE_PRIV=1: privileged tests must run)")
	}
	t.Skip(msg)
}

// InNewNetns runs f on a goroutine locked to an OS thread that has been moved into a new,
// empty network namespace, and waits for it. The namespace has no name and disappears when
// the last thing in it (f's thread, and sockets or devices made there) is gone; the thread is
// not returned to the Go scheduler, so no other goroutine ever runs in the namespace.
func InNewNetns(t testing.TB, f func()) {
	t.Helper()
	done := make(chan struct{})
	var setupErr error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with this goroutine, taking the namespace with it.
		ns, err := netns.New()
		if err != nil {
			setupErr = err
			return
		}
		defer ns.Close()
		f()
	}()
	<-done
	if setupErr != nil {
		t.Fatalf("new network namespace: %v", setupErr)
	}
}
