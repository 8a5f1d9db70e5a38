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

// inNetnsEnv marks a test process that ReexecInNewNetns started inside its own namespace.
const inNetnsEnv = "QUICGATE_TEST_IN_NETNS"

// ReexecInNewNetns runs the calling top-level test again in a child test process that
// `unshare --net` puts in a new network namespace with only lo, brought up: every socket the
// test makes there, on any goroutine, lives in that namespace, and whatever the test changes
// in it (addresses, routes, rules) vanishes with the child. It returns true in the child,
// where the test goes on. In the parent it waits for the child, passes on its output, fails
// the test if the child failed, and returns false: the test must then return.
func ReexecInNewNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	Require(t, "unshare", "ip")
	name := t.Name()
	if strings.Contains(name, "/") {
		t.Fatalf("ReexecInNewNetns must be called from a top-level test, not %s", name)
	}
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^"+name+"$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a new network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("%s in a new network namespace: %v", name, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("%s did not run in the new network namespace", name)
	}
	return false
}

// IP runs the ip command with args (in the caller's network namespace) and fails the test
// if it fails.
func IP(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
