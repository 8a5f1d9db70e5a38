package wan

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/quicgate/quicgate/bench/wanlink"
)

// Addresses in the topology. The emulated link is ClientIP/24 to ServerIP/24; TargetIP is
// on the server namespace's loopback, reachable from the client namespace only through a
// tunnel (quicgate TUN routes TargetNet into its device).
const (
	ClientIP  = "10.210.0.1"
	ServerIP  = "10.210.0.2"
	TargetIP  = "10.98.0.5"
	TargetNet = "10.98.0.0/16"
)

const (
	allowedCC   = "/proc/sys/net/ipv4/tcp_allowed_congestion_control" // host-wide
	namespaceCC = "/proc/sys/net/ipv4/tcp_congestion_control"         // per namespace
)

// Topology is the harness's two network namespaces and what it changed on the host to make
// them, with how to undo each change. The namespaces' own sysctls (congestion control) go
// away with them.
type Topology struct {
	Client, Server string
	// AllowedBefore is net.ipv4.tcp_allowed_congestion_control as found, AddedCubic whether
	// the harness added cubic to it (a namespace other than the host's may only select an
	// allowed algorithm).
	AllowedBefore string
	AddedCubic    bool
	cc            string // the congestion control both namespaces use now
	undo          []undoStep
}

type undoStep struct {
	what string
	do   func() error
}

// NewTopology makes the namespaces (named with suffix) and allows cubic. On failure it has
// already undone what it did.
func NewTopology(suffix string) (*Topology, error) { return newTopology(suffix, -1) }

// newTopology fails on purpose before step failAt (for the test that cleanup happens on
// failure too); -1 never.
func newTopology(suffix string, failAt int) (t *Topology, err error) {
	t = &Topology{Client: "qgwanc" + suffix, Server: "qgwans" + suffix}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
			t = nil
		}
	}()
	steps := []func() error{
		func() error { return t.addNetns(t.Client) },
		func() error { return t.addNetns(t.Server) },
		func() error { return ipCmd("-n", t.Client, "link", "set", "lo", "up") },
		func() error { return ipCmd("-n", t.Server, "link", "set", "lo", "up") },
		func() error { return ipCmd("-n", t.Server, "addr", "add", TargetIP+"/32", "dev", "lo") },
		t.allowCubic,
	}
	for i, step := range steps {
		if i == failAt {
			return t, fmt.Errorf("failing at step %d on purpose", i)
		}
		if err := step(); err != nil {
			return t, err
		}
	}
	return t, nil
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (t *Topology) addNetns(name string) error {
	if err := ipCmd("netns", "add", name); err != nil {
		return err
	}
	t.undo = append(t.undo, undoStep{"deleting namespace " + name, func() error { return ipCmd("netns", "del", name) }})
	return nil
}

func (t *Topology) allowCubic() error {
	b, err := os.ReadFile(allowedCC)
	if err != nil {
		return err
	}
	t.AllowedBefore = strings.TrimSpace(string(b))
	if slices.Contains(strings.Fields(t.AllowedBefore), "cubic") {
		return nil
	}
	want := t.AllowedBefore + " cubic"
	if err := os.WriteFile(allowedCC, []byte(want), 0o644); err != nil {
		return fmt.Errorf("allowing cubic (%s): %w", allowedCC, err)
	}
	t.AddedCubic = true
	t.undo = append(t.undo, undoStep{"restoring " + allowedCC, func() error {
		// Only if it is still what we wrote: someone else's later change stays.
		b, err := os.ReadFile(allowedCC)
		if err != nil {
			return err
		}
		if got := strings.Join(strings.Fields(string(b)), " "); got != strings.Join(strings.Fields(want), " ") {
			return fmt.Errorf("%s changed meanwhile to %q: left as is (it was %q)", allowedCC, got, t.AllowedBefore)
		}
		return os.WriteFile(allowedCC, []byte(t.AllowedBefore), 0o644)
	}})
	return nil
}

// SetCongestion makes cc the TCP congestion control of new sockets in both namespaces.
func (t *Topology) SetCongestion(cc string) error {
	if cc == t.cc {
		return nil
	}
	for _, ns := range []string{t.Client, t.Server} {
		// /proc/sys/net is the namespace of the thread that opens it.
		err := wanlink.InNetns(ns, func() error { return os.WriteFile(namespaceCC, []byte(cc), 0o644) })
		if err != nil {
			return fmt.Errorf("congestion control %s in %s: %w", cc, ns, err)
		}
	}
	t.cc = cc
	return nil
}

// Congestion is what SetCongestion last set ("" before).
func (t *Topology) Congestion() string { return t.cc }

// Close undoes every change, the last first, and reports those it could not undo. It is
// idempotent.
func (t *Topology) Close() error {
	var errs []error
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i].do(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.undo[i].what, err))
		}
	}
	t.undo = nil
	return errors.Join(errs...)
}
