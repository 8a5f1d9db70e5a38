package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/quicgate/quicgate/bench"
	"github.com/quicgate/quicgate/bench/wanlink"
)

type rowKind int

const (
	kindDirect rowKind = iota
	kindSSH
	kindQuicgateL
	kindQuicgateTUN
)

// Row is one way of carrying a TCP flow across the link.
type Row struct {
	ID   string `json:"id"`   // for -rows: "ssh-bbr"
	Name string `json:"name"` // in the report: "ssh -L (bbr)"
	// TCP is the kernel's congestion control in both namespaces while the row runs (for
	// quicgate rows over QUIC it only governs the loopback hops at either end; over the TCP
	// transport it is also the outer TCP connection's across the link).
	TCP string `json:"tcp_cc"`
	// QUIC is quicgate's --congestion.
	QUIC string `json:"quic_cc,omitempty"`
	// Transport is the quicgate client's --transport when not QUIC: "tcp" carries the QUIC
	// packets over TLS over one kernel TCP connection (package streamlink).
	Transport string `json:"transport,omitempty"`
	kind      rowKind
}

// Baseline is the row every ratio is to.
const Baseline = "ssh -L (bbr)"

// AllRows in report order.
func AllRows() []Row {
	return []Row{
		{ID: "direct-cubic", Name: "direct TCP (cubic)", TCP: "cubic", kind: kindDirect},
		{ID: "direct-bbr", Name: "direct TCP (bbr)", TCP: "bbr", kind: kindDirect},
		{ID: "ssh-cubic", Name: "ssh -L (cubic)", TCP: "cubic", kind: kindSSH},
		{ID: "ssh-bbr", Name: "ssh -L (bbr)", TCP: "bbr", kind: kindSSH},
		{ID: "quicgate-bbr", Name: "quicgate -L (bbr)", TCP: "bbr", QUIC: "bbr", kind: kindQuicgateL},
		{ID: "quicgate-cubic", Name: "quicgate -L (cubic)", TCP: "bbr", QUIC: "cubic", kind: kindQuicgateL},
		// QUIC (with its bbr) over TLS over one kernel TCP connection, whose congestion
		// control is the kernel's bbr, as ssh -L (bbr)'s: the UDP-blocked fallback against ssh.
		{ID: "quicgate-tcp", Name: "quicgate -L over TCP (bbr)", TCP: "bbr", QUIC: "bbr", Transport: "tcp", kind: kindQuicgateL},
		{ID: "tun-bbr", Name: "quicgate TUN (bbr)", TCP: "bbr", QUIC: "bbr", kind: kindQuicgateTUN},
	}
}

// FindRow looks a row up by ID or name.
func FindRow(s string) (Row, bool) {
	for _, r := range AllRows() {
		if strings.EqualFold(s, r.ID) || strings.EqualFold(s, r.Name) {
			return r, true
		}
	}
	return Row{}, false
}

// Env is what the rows share.
type Env struct {
	Quicgate string // the quicgate binary
	Self     string // this program (qgwan), for its link, serve and gen modes
	Dir      string // scratch directory
	// CongestionFlag passes --congestion to quicgate; without it the quicgate rows run with
	// quicgate's default congestion control (for a quicgate that lacks the flag).
	CongestionFlag bool
	// QuicgateDesc says which quicgate it is, for the report.
	QuicgateDesc string
	// QuicgateErr, when set, is why there is no quicgate binary: its rows report it.
	QuicgateErr error
}

// path is a row set up: processes started, addresses for the generator (in the client
// namespace) to connect to.
type path interface {
	start(ctx context.Context) (sink, echo string, err error)
	pids() []int
	stop()
}

func (h *harness) newPath(r Row) path {
	switch r.kind {
	case kindSSH:
		return &sshPath{h: h}
	case kindQuicgateL:
		return &quicgatePath{h: h, row: r}
	case kindQuicgateTUN:
		return &quicgatePath{h: h, row: r, tun: true}
	}
	return directPath{h: h}
}

func inNS(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// waitTCPIn waits until addr accepts a connection made from namespace ns.
func waitTCPIn(ctx context.Context, ns, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var c net.Conn
		err := wanlink.InNetns(ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		})
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s in %s not listening after %v: %v", addr, ns, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- direct TCP ---

type directPath struct{ h *harness }

func (p directPath) start(context.Context) (string, string, error) {
	return net.JoinHostPort(ServerIP, p.h.sinkPort), net.JoinHostPort(ServerIP, p.h.echoPort), nil
}
func (directPath) pids() []int { return nil }
func (directPath) stop()       {}

// --- ssh -L: sshd in the server namespace, ssh in the client namespace ---

type sshPath struct {
	h         *harness
	sshd, ssh *bench.Proc
}

const (
	sshPort      = 2222
	sshSinkLocal = "127.0.0.1:20001"
	sshEchoLocal = "127.0.0.1:20002"
)

func (p *sshPath) start(ctx context.Context) (string, string, error) {
	s, err := bench.PrepareSSH(filepath.Join(p.h.env.Dir, "ssh"), ServerIP, sshPort)
	if err != nil {
		return "", "", err
	}
	h := p.h
	p.sshd, err = bench.StartProc("sshd in "+h.topo.Server, inNS(h.topo.Server, s.ServerArgs()...))
	if err != nil {
		return "", "", err
	}
	if err := waitTCPIn(ctx, h.topo.Server, net.JoinHostPort(ServerIP, fmt.Sprint(sshPort)), 10*time.Second); err != nil {
		return "", "", fmt.Errorf("sshd: %w: %s", err, p.sshd.Tail())
	}
	args := s.ClientArgs(ServerIP, sshSinkLocal+":127.0.0.1:"+h.sinkPort, sshEchoLocal+":127.0.0.1:"+h.echoPort)
	p.ssh, err = bench.StartProc("ssh in "+h.topo.Client, inNS(h.topo.Client, args...))
	if err != nil {
		return "", "", err
	}
	for _, a := range []string{sshSinkLocal, sshEchoLocal} {
		if err := waitTCPIn(ctx, h.topo.Client, a, 20*time.Second); err != nil {
			return "", "", fmt.Errorf("ssh -L: %w: %s", err, p.ssh.Tail())
		}
	}
	return sshSinkLocal, sshEchoLocal, nil
}

func (p *sshPath) pids() []int {
	var pids []int
	if p.sshd != nil {
		pids = append(pids, bench.Descendants(p.sshd.PID())...)
	}
	if p.ssh != nil {
		pids = append(pids, p.ssh.PID())
	}
	return pids
}

func (p *sshPath) stop() {
	p.ssh.Stop()
	p.sshd.Stop()
	p.ssh, p.sshd = nil, nil
}

// --- quicgate: the server in the server namespace, the client (-L or TUN) in the client one ---

type quicgatePath struct {
	h        *harness
	row      Row
	tun      bool
	udpTo    string // -U to this address (start returns its local end as the sink)
	srv, cli *bench.Proc
}

const (
	quicgatePort = "4433"
	tunDevice    = "qgwt0"
)

// ErrCongestionFlag marks a quicgate that rejects --congestion.
var ErrCongestionFlag = errors.New("quicgate rejects --congestion (exit 2): not in this build yet? -congestion-flag=false runs the rows without it")

func (p *quicgatePath) start(ctx context.Context) (string, string, error) {
	h := p.h
	if h.env.QuicgateErr != nil {
		return "", "", h.env.QuicgateErr
	}
	dir := filepath.Join(h.env.Dir, "qg-state") // (Dir/quicgate may be the binary)
	pin, auth, err := h.identities(dir)
	if err != nil {
		return "", "", err
	}
	var cc []string
	if h.env.CongestionFlag && p.row.QUIC != "" {
		cc = []string{"--congestion", p.row.QUIC}
	}
	srvArgs := append([]string{h.env.Quicgate, "server", "--listen", net.JoinHostPort(ServerIP, quicgatePort),
		"--state-dir", filepath.Join(dir, "server"), "--authorized-clients", auth,
		"--allow", "127.0.0.1/32", "--allow", TargetNet, "--log-format", "json"}, cc...)
	if p.srv, err = bench.StartProc("quicgate server in "+h.topo.Server, inNS(h.topo.Server, srvArgs...)); err != nil {
		return "", "", err
	}
	ready, err := p.srv.WaitJSON("server ready", 10*time.Second)
	if err != nil {
		return "", "", flagErr(err, cc)
	}
	cliArgs := []string{h.env.Quicgate, "client", "--server", net.JoinHostPort(ServerIP, quicgatePort),
		"--state-dir", filepath.Join(dir, "client"), "--pin", pin, "--log-format", "json"}
	if p.row.Transport != "" {
		// The server serves its TCP transport on --listen's port unless it had to take
		// another (tcp_addr says which); no proxy, whatever the environment says.
		cliArgs = append(cliArgs, "--transport", p.row.Transport, "--proxy", "none")
		a, _ := ready["tcp_addr"].(string)
		if a == "" {
			return "", "", fmt.Errorf("the quicgate server serves no TCP transport (no tcp_addr in its ready line): %s", p.srv.Tail())
		}
		cliArgs = append(cliArgs, "--server-tcp", a)
	}
	if p.tun {
		cliArgs = append(cliArgs, "--tun", tunDevice, "--tun-addr", "10.78.0.1/24", "--route", TargetNet)
	} else if p.udpTo != "" {
		cliArgs = append(cliArgs, "-U", "0:"+p.udpTo)
	} else {
		cliArgs = append(cliArgs, "-L", "0:127.0.0.1:"+h.sinkPort, "-L", "0:127.0.0.1:"+h.echoPort)
	}
	cliArgs = append(cliArgs, cc...)
	if p.cli, err = bench.StartProc("quicgate client in "+h.topo.Client, inNS(h.topo.Client, cliArgs...)); err != nil {
		return "", "", err
	}
	if p.tun {
		if _, err := p.cli.WaitJSON("tun ready", 10*time.Second); err != nil {
			return "", "", flagErr(err, cc)
		}
		return net.JoinHostPort(TargetIP, h.sinkPort), net.JoinHostPort(TargetIP, h.echoPort), nil
	}
	if p.udpTo != "" {
		m, err := p.cli.WaitJSON("forwarding udp", 10*time.Second)
		if err != nil {
			return "", "", flagErr(err, cc)
		}
		a, _ := m["listen"].(string)
		return a, "", nil
	}
	var addrs []string
	for range 2 {
		m, err := p.cli.WaitJSON("forwarding", 10*time.Second)
		if err != nil {
			return "", "", flagErr(err, cc)
		}
		a, _ := m["listen"].(string)
		addrs = append(addrs, a)
	}
	return addrs[0], addrs[1], nil
}

// flagErr names the likely cause when a quicgate given --congestion fails to start because
// it does not know the flag.
func flagErr(err error, cc []string) error {
	if len(cc) > 0 && strings.Contains(err.Error(), "congestion") {
		return fmt.Errorf("%w: %v", ErrCongestionFlag, err)
	}
	return err
}

func (p *quicgatePath) pids() []int {
	var pids []int
	for _, pr := range []*bench.Proc{p.srv, p.cli} {
		if pr != nil {
			pids = append(pids, pr.PID())
		}
	}
	return pids
}

func (p *quicgatePath) stop() {
	p.cli.Stop()
	p.srv.Stop()
	p.cli, p.srv = nil, nil
}
