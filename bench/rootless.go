package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vishvananda/netns"
)

// --- quicgate run: the TUN path's namespaces, the command's own namespace in A ---

// rootlessPath is `quicgate run -- sleep infinity` in namespace A (the TUN row's topology, the
// server and destinations in B): the load generator dials from sockets made in the
// command's network namespace, so its flows take the command's way out (kernel TCP, the
// namespace's TUN, the netstack in quicgate run's parent, QUIC). It runs as root, as the
// rest of the bench does; as another user the path is the same. Like the -D rows it
// measures one flow and new flows per second: once a flow is open it is a TUN flow, whose
// other figures the TUN row has.
type rootlessPath struct{ tunPath }

func newRootlessPath() *rootlessPath { return &rootlessPath{tunPath{run: true}} }

func (*rootlessPath) Name() string { return "quicgate run" }
func (*rootlessPath) DynamicOnly() {}

// startRun starts quicgate run in A and opens the command's network namespace.
func (p *tunPath) startRun(env *Env, dir, pin string) error {
	var err error
	p.cli, err = StartProc("quicgate run in A", exec.Command("ip", env.pprofArgs("netns", "exec", p.a, env.Quicgate, "run", "--server", "10.201.0.2:4433",
		"--state-dir", filepath.Join(dir, "client"), "--pin", pin, "--log-level", "info", "--log-format", "json", "--", "sleep", "infinity")...))
	if err != nil {
		return err
	}
	if err := p.cli.waitPprof(env, p.a); err != nil {
		return err
	}
	m, err := p.cli.WaitJSON("running the command in its own namespace", 10*time.Second)
	if err != nil {
		return err
	}
	pid, ok := m["pid"].(float64)
	if !ok {
		return fmt.Errorf("quicgate run: no pid in %v", m)
	}
	p.nsA, err = netns.GetFromPid(int(pid))
	return err
}
