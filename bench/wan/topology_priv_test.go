package wan

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/quicgate/quicgate/internal/privtest"
)

func readAllowed(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(allowedCC)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// assertGone checks that nothing of topology suffix is left: no namespaces, and the allowed
// congestion controls as they were.
func assertGone(t *testing.T, suffix, allowedBefore string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"qgwanc" + suffix, "qgwans" + suffix} {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if got := readAllowed(t); got != allowedBefore {
		t.Errorf("tcp_allowed_congestion_control is %q, was %q", got, allowedBefore)
	}
}

func TestTopologyUpAndDown(t *testing.T) {
	privtest.Require(t, "ip")
	before := readAllowed(t)
	suffix := fmt.Sprintf("t%d", os.Getpid())
	topo, err := NewTopology(suffix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.Close(); assertGone(t, suffix, before) })
	if !strings.Contains(readAllowed(t), "cubic") {
		t.Errorf("cubic not allowed: %q", readAllowed(t))
	}
	hostCC, _ := os.ReadFile(namespaceCC)
	for _, cc := range []string{"cubic", "bbr"} {
		if err := topo.SetCongestion(cc); err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{topo.Client, topo.Server} {
			out, err := exec.Command("ip", "netns", "exec", ns, "cat", namespaceCC).Output()
			if err != nil || strings.TrimSpace(string(out)) != cc {
				t.Errorf("%s: congestion control %q (%v), want %s", ns, out, err, cc)
			}
		}
	}
	if after, _ := os.ReadFile(namespaceCC); string(after) != string(hostCC) {
		t.Errorf("the host's congestion control changed from %q to %q", hostCC, after)
	}
	out, err := exec.Command("ip", "-n", topo.Server, "addr", "show", "dev", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), TargetIP+"/32") {
		t.Errorf("no %s on the server's loopback: %s %v", TargetIP, out, err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, suffix, before)
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A failure at any step of the setup leaves nothing behind.
func TestTopologyUndoneOnFailure(t *testing.T) {
	privtest.Require(t, "ip")
	before := readAllowed(t)
	for step := range 6 {
		suffix := fmt.Sprintf("f%d%d", step, os.Getpid())
		topo, err := newTopology(suffix, step)
		if err == nil || topo != nil {
			_ = topo.Close()
			t.Fatalf("step %d: no failure", step)
		}
		assertGone(t, suffix, before)
	}
	// And one that fails for real: a namespace name that is already taken.
	suffix := fmt.Sprintf("d%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", "qgwans"+suffix).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", "qgwans"+suffix).Run()
	if _, err := NewTopology(suffix); err == nil {
		t.Fatal("a topology over an existing namespace")
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), "qgwanc"+suffix) {
		t.Error("the client namespace was left behind")
	}
	if got := readAllowed(t); got != before {
		t.Errorf("allowed congestion control %q, was %q", got, before)
	}
}
