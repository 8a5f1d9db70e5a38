package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/vishvananda/netns"

	"github.com/quicgate/quicgate/quicmux"
)

// Path is one way to carry flows from the load generator to the destinations.
type Path interface {
	Name() string
	// Setup starts what the path needs; a missing prerequisite is an ErrSkip.
	Setup(ctx context.Context, env *Env) (DialFunc, error)
	// PIDs are the processes whose memory and CPU the path costs (none for in-process paths).
	PIDs() []int
	Close()
}

// ErrSkip marks a path that cannot run here (a program missing, no root); the report shows
// it as skipped with the reason.
var ErrSkip = errors.New("skipped")

func skip(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrSkip, fmt.Sprintf(format, a...))
}

// Env is what every path shares: the quicgate binary, this program (for its serve mode), a
// scratch directory and the loopback destinations.
type Env struct {
	Quicgate string
	Self     string
	Dir      string
	Sink     string // loopback addresses of the destinations
	Echo     string

	// Profile, if set, is a directory for CPU profiles: quicgate's processes serve pprof
	// (--pprof) and each path's flow-rate measurement saves one profile per process there
	// (profile.go).
	Profile string
}

func dialTCP(addrs map[Dest]string) DialFunc {
	var d net.Dialer
	return func(ctx context.Context, dest Dest) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addrs[dest])
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// --- direct TCP ---

type directPath struct{}

func (directPath) Name() string { return "direct TCP" }
func (directPath) Setup(_ context.Context, env *Env) (DialFunc, error) {
	return dialTCP(map[Dest]string{ToSink: env.Sink, ToEcho: env.Echo}), nil
}
func (directPath) PIDs() []int { return nil }
func (directPath) Close()      {}

// --- Go TCP relay: the TCP work of -L, without the tunnel ---

// goRelayPath is bench.Relay in a process of its own (qgbench relay), so its CPU and memory
// are counted like a tunnel's.
type goRelayPath struct{ p *Proc }

func (*goRelayPath) Name() string { return "Go TCP relay" }

func (p *goRelayPath) Setup(_ context.Context, env *Env) (DialFunc, error) {
	var err error
	p.p, err = StartProc("qgbench relay", exec.Command(env.Self, "relay", "--to", env.Sink, "--to", env.Echo))
	if err != nil {
		return nil, err
	}
	m, err := p.p.WaitJSON("relaying", 10*time.Second)
	if err != nil {
		return nil, err
	}
	ls, _ := m["listen"].([]any)
	if len(ls) != 2 {
		return nil, fmt.Errorf("qgbench relay: listening on %v, want 2 addresses", m["listen"])
	}
	return dialTCP(map[Dest]string{ToSink: fmt.Sprint(ls[0]), ToEcho: fmt.Sprint(ls[1])}), nil
}

// MaxIdleFlows: none. The relay is a reference for throughput and flow rate; its idle flows
// (two sockets each in one process) would only add time to the run.
func (p *goRelayPath) MaxIdleFlows() int { return 0 }

func (p *goRelayPath) PIDs() []int { return pidsOf(p.p) }
func (p *goRelayPath) Close()      { p.p.Stop() }

// --- quicgate -L ---

// startQuicgate starts a quicgate server on loopback that may dial loopback, with fresh
// identities in dir, and a client of it with clientArgs (its ingresses).
func startQuicgate(env *Env, dir string, clientArgs ...string) (srv, cli *Proc, err error) {
	pin, auth, err := Identities(env.Quicgate, dir)
	if err != nil {
		return nil, nil, err
	}
	srv, err = StartProc("quicgate server", exec.Command(env.Quicgate, env.pprofArgs("server", "--listen", "127.0.0.1:0",
		"--state-dir", filepath.Join(dir, "server"), "--authorized-clients", auth, "--allow", "127.0.0.1/32", "--log-format", "json", "--log-level", "info")...))
	if err != nil {
		return nil, nil, err
	}
	if err := srv.waitPprof(env, ""); err != nil {
		srv.Stop()
		return nil, nil, err
	}
	ready, err := srv.WaitJSON("server ready", 10*time.Second)
	if err != nil {
		srv.Stop()
		return nil, nil, err
	}
	args := []string{"client", "--server", ready["addr"].(string), "--state-dir", filepath.Join(dir, "client"), "--pin", pin, "--log-format", "json"}
	if tcp, ok := ready["tcp_addr"].(string); ok {
		args = append(args, "--server-tcp", tcp)
	}
	args = append(args, clientArgs...)
	cli, err = StartProc("quicgate client", exec.Command(env.Quicgate, env.pprofArgs(args...)...))
	if err != nil {
		srv.Stop()
		return nil, nil, err
	}
	if err := cli.waitPprof(env, ""); err != nil {
		cli.Stop()
		srv.Stop()
		return nil, nil, err
	}
	return srv, cli, nil
}

// quicgateLPath is -L over QUIC, or over the TCP fallback transport (tcp).
type quicgateLPath struct {
	tcp      bool
	srv, cli *Proc
}

func (p *quicgateLPath) Name() string {
	if p.tcp {
		return "quicgate -L over TCP"
	}
	return "quicgate -L"
}

func (p *quicgateLPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	var err error
	args, dir := []string{"-L", "0:" + env.Sink, "-L", "0:" + env.Echo}, "qg"
	if p.tcp {
		args, dir = append(args, "--transport", "tcp"), "qg-tcp"
	}
	p.srv, p.cli, err = startQuicgate(env, filepath.Join(env.Dir, dir), args...)
	if err != nil {
		return nil, err
	}
	sink, err := p.cli.WaitJSON("forwarding", 10*time.Second)
	if err != nil {
		return nil, err
	}
	echo, err := p.cli.WaitJSON("forwarding", 10*time.Second)
	if err != nil {
		return nil, err
	}
	return dialTCP(map[Dest]string{ToSink: sink["listen"].(string), ToEcho: echo["listen"].(string)}), nil
}

func (p *quicgateLPath) PIDs() []int       { return pidsOf(p.srv, p.cli) }
func (p *quicgateLPath) Profiled() []*Proc { return []*Proc{p.cli, p.srv} }
func (p *quicgateLPath) Close()            { p.cli.Stop(); p.srv.Stop() }

func pidsOf(ps ...*Proc) []int {
	var pids []int
	for _, p := range ps {
		if p != nil && p.cmd.Process != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Identities makes a server and a client identity under dir and returns the server's pin
// and an authorized-clients file naming the client, with the quicgate binary given.
func Identities(quicgate, dir string) (pin, auth string, err error) {
	fp := func(d string) (string, error) {
		out, err := exec.Command(quicgate, "fingerprint", "--state-dir", d).Output()
		return strings.TrimSpace(string(out)), err
	}
	if pin, err = fp(filepath.Join(dir, "server")); err != nil {
		return "", "", err
	}
	client, err := fp(filepath.Join(dir, "client"))
	if err != nil {
		return "", "", err
	}
	auth = filepath.Join(dir, "authorized_clients")
	return pin, auth, os.WriteFile(auth, []byte(client+"\n"), 0o644)
}

// --- ssh -L ---

type sshPath struct{ sshd, ssh *Proc }

func (*sshPath) Name() string { return "ssh -L" }

func (p *sshPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	s, sshd, err := startSSHD(filepath.Join(env.Dir, "ssh"))
	if err != nil {
		return nil, err
	}
	p.sshd = sshd
	lsink, err := freePort()
	if err != nil {
		return nil, err
	}
	lecho, err := freePort()
	if err != nil {
		return nil, err
	}
	args := s.ClientArgs("127.0.0.1", fmt.Sprintf("127.0.0.1:%d:%s", lsink, env.Sink), fmt.Sprintf("127.0.0.1:%d:%s", lecho, env.Echo))
	p.ssh, err = StartProc("ssh", exec.Command(args[0], args[1:]...))
	if err != nil {
		return nil, err
	}
	for _, lp := range []int{lsink, lecho} {
		if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", lp), 10*time.Second); err != nil {
			return nil, fmt.Errorf("ssh -L: %w: %s", err, p.ssh.Tail())
		}
	}
	return dialTCP(map[Dest]string{ToSink: fmt.Sprintf("127.0.0.1:%d", lsink), ToEcho: fmt.Sprintf("127.0.0.1:%d", lecho)}), nil
}

func (p *sshPath) PIDs() []int {
	var pids []int
	if p.sshd != nil {
		pids = append(pids, Descendants(p.sshd.PID())...)
	}
	return append(pids, pidsOf(p.ssh)...)
}
func (p *sshPath) Close() { p.ssh.Stop(); p.sshd.Stop() }

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- socat ---

type socatPath struct{ sink, echo *Proc }

func (*socatPath) Name() string { return "socat" }

func (p *socatPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	if _, err := exec.LookPath("socat"); err != nil {
		return nil, skip("no socat ('make bench-deps' installs it)")
	}
	addrs := map[Dest]string{}
	for dest, target := range map[Dest]string{ToSink: env.Sink, ToEcho: env.Echo} {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pr, err := StartProc("socat", exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,backlog=4096", port), "TCP:"+target))
		if err != nil {
			return nil, err
		}
		if dest == ToSink {
			p.sink = pr
		} else {
			p.echo = pr
		}
		addrs[dest] = fmt.Sprintf("127.0.0.1:%d", port)
		if err := waitTCP(addrs[dest], 5*time.Second); err != nil {
			return nil, err
		}
	}
	return dialTCP(addrs), nil
}

// MaxIdleFlows: socat forks a process per connection (about 2.5 MiB each), so 10,000 idle
// flows would take some 25 GiB; it is measured with 500 and reported per flow.
func (p *socatPath) MaxIdleFlows() int { return 500 }

func (p *socatPath) PIDs() []int {
	var pids []int
	for _, pr := range []*Proc{p.sink, p.echo} {
		if pr != nil {
			pids = append(pids, Descendants(pr.PID())...)
		}
	}
	return pids
}
func (p *socatPath) Close() { p.sink.Stop(); p.echo.Stop() }

// --- raw quic-go stream: no TCP hop at all ---

// rawQUICPath is the QUIC ceiling: quic-go client and server in this process, each flow a
// stream whose first byte picks the sink or the echo.
type rawQUICPath struct {
	ln     *quic.Listener
	client *quic.Conn
	cancel context.CancelFunc
}

func (*rawQUICPath) Name() string { return "raw quic-go" }

func (p *rawQUICPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	id, err := quicmux.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	conf := &quic.Config{MaxIncomingStreams: 1 << 16, MaxStreamReceiveWindow: 16 << 20, MaxConnectionReceiveWindow: 64 << 20, KeepAlivePeriod: 10 * time.Second}
	p.ln, err = quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{id.Cert}, NextProtos: []string{"bench"}}, conf)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		for {
			c, err := p.ln.Accept(sctx)
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(sctx)
					if err != nil {
						return
					}
					go serveRawStream(s)
				}
			}()
		}
	}()
	p.client, err = quic.DialAddr(ctx, p.ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"bench"}}, conf)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, d Dest) (net.Conn, error) {
		s, err := p.client.OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := s.Write([]byte{byte(d)}); err != nil {
			return nil, err
		}
		return &rawStream{Stream: s, c: p.client}, nil
	}, nil
}

func serveRawStream(s *quic.Stream) {
	defer s.Close()
	var kind [1]byte
	if _, err := io.ReadFull(s, kind[:]); err != nil {
		return
	}
	c := &rawStream{Stream: s}
	if Dest(kind[0]) == ToSink {
		serveSink(c)
	} else {
		ServeEcho(c)
	}
}

// rawStream is just enough of a net.Conn over a quic-go stream for the workloads.
type rawStream struct {
	*quic.Stream
	c *quic.Conn
}

func (r *rawStream) CloseWrite() error { return r.Stream.Close() }
func (r *rawStream) Close() error {
	r.Stream.CancelRead(0)
	return r.Stream.Close()
}
func (r *rawStream) LocalAddr() net.Addr  { return &net.UDPAddr{} }
func (r *rawStream) RemoteAddr() net.Addr { return &net.UDPAddr{} }

func (p *rawQUICPath) PIDs() []int { return nil }
func (p *rawQUICPath) Close() {
	if p.client != nil {
		_ = p.client.CloseWithError(0, "")
	}
	if p.cancel != nil {
		p.cancel()
	}
	if p.ln != nil {
		_ = p.ln.Close()
	}
}

// --- quicgate TUN: two network namespaces ---

// tunPath runs the destinations and the server in namespace B, the client with its TUN in
// namespace A, and dials from A on threads moved into it.
type tunPath struct {
	a, b     string
	dests    *Proc
	srv, cli *Proc
	nsA      netns.NsHandle
	run      bool // rootlessPath: quicgate run in A instead of the client with its TUN
}

func (*tunPath) Name() string { return "quicgate TUN" }

func (p *tunPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	if os.Geteuid() != 0 {
		return nil, skip("TUN mode needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, skip("no ip (iproute2)")
	}
	id := strconv.Itoa(os.Getpid())
	p.a, p.b = "qgbA"+id, "qgbB"+id
	if err := twoNamespaces(p.a, p.b, "qgba"+id, "qgbb"+id,
		// Every flow of the rate test goes to the one echo address, and the side that
		// closes first (the generator in A, the server's dialed socket in B) keeps each
		// port in TIME_WAIT for a minute: at thousands of flows a second the ephemeral
		// range fills within seconds and connect(2) scans it (300 µs a connect in the
		// server's profile). On loopback, where the -L, -D and ssh rows run, the kernel's
		// default (tcp_tw_reuse=2) reuses such ports; 10.98.0.5 is no loopback address,
		// so these namespaces get the same reuse for all addresses.
		[]string{"ip", "netns", "exec", p.a, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"},
		[]string{"ip", "netns", "exec", p.b, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"},
	); err != nil {
		return nil, err
	}
	var err error
	p.dests, err = StartProc("destinations in B", exec.Command("ip", "netns", "exec", p.b, env.Self, "serve", "--ip", "10.98.0.5"))
	if err != nil {
		return nil, err
	}
	addrs, err := p.dests.WaitJSON("serving", 10*time.Second)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Dir, "tun")
	pin, auth, err := Identities(env.Quicgate, dir)
	if err != nil {
		return nil, err
	}
	p.srv, err = StartProc("quicgate server in B", exec.Command("ip", env.pprofArgs("netns", "exec", p.b, env.Quicgate, "server", "--listen", "10.201.0.2:4433",
		"--state-dir", filepath.Join(dir, "server"), "--authorized-clients", auth, "--allow", "10.98.0.0/16", "--log-format", "json")...))
	if err != nil {
		return nil, err
	}
	if err := p.srv.waitPprof(env, p.b); err != nil {
		return nil, err
	}
	if _, err := p.srv.WaitJSON("server ready", 10*time.Second); err != nil {
		return nil, err
	}
	if p.run {
		if err := p.startRun(env, dir, pin); err != nil {
			return nil, err
		}
	} else {
		p.cli, err = StartProc("quicgate client in A", exec.Command("ip", env.pprofArgs("netns", "exec", p.a, env.Quicgate, "client", "--server", "10.201.0.2:4433",
			"--state-dir", filepath.Join(dir, "client"), "--pin", pin, "--tun", "qgb0", "--tun-addr", "10.78.0.1/24", "--route", "10.98.0.0/16", "--log-format", "json")...))
		if err != nil {
			return nil, err
		}
		if err := p.cli.waitPprof(env, p.a); err != nil {
			return nil, err
		}
		if _, err := p.cli.WaitJSON("tun ready", 10*time.Second); err != nil {
			return nil, err
		}
		if p.nsA, err = netns.GetFromName(p.a); err != nil {
			return nil, err
		}
	}
	targets := map[Dest]string{ToSink: addrs["sink"].(string), ToEcho: addrs["echo"].(string)}
	return func(ctx context.Context, d Dest) (net.Conn, error) {
		return dialInNetns(ctx, p.nsA, targets[d])
	}, nil
}

// twoNamespaces makes network namespaces a and b (the TUN row's topology, which the UDP
// rows through a TUN share): a veth pair, va in a at 10.201.0.1/24 and vb in b at
// 10.201.0.2/24, loopback up in both, and 10.98.0.5 on b's loopback for the destinations.
// Then it runs the commands extra. delNetns removes the namespaces, also after a failure.
func twoNamespaces(a, b, va, vb string, extra ...[]string) error {
	cmds := [][]string{
		{"ip", "netns", "add", a}, {"ip", "netns", "add", b},
		{"ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b},
		// The veth is a same-host link like loopback, which -L rides: give it a like MTU, so
		// that the two rows differ only by the TUN and the netstack.
		{"ip", "-n", a, "link", "set", va, "mtu", "65535"}, {"ip", "-n", b, "link", "set", vb, "mtu", "65535"},
		{"ip", "-n", a, "link", "set", "lo", "up"}, {"ip", "-n", b, "link", "set", "lo", "up"},
		{"ip", "-n", a, "addr", "add", "10.201.0.1/24", "dev", va}, {"ip", "-n", a, "link", "set", va, "up"},
		{"ip", "-n", b, "addr", "add", "10.201.0.2/24", "dev", vb}, {"ip", "-n", b, "link", "set", vb, "up"},
		{"ip", "-n", b, "addr", "add", "10.98.0.5/32", "dev", "lo"},
	}
	for _, c := range append(cmds, extra...) {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// delNetns deletes the network namespaces named (those not "").
func delNetns(names ...string) {
	for _, ns := range names {
		if ns != "" {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	}
}

// dialInNetns creates the socket on a thread inside ns; once made, it works from anywhere.
func dialInNetns(ctx context.Context, ns netns.NsHandle, addr string) (c net.Conn, err error) {
	err = inNetns(ns, func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// inNetns runs f on this goroutine's thread moved into ns, then moves the thread back.
func inNetns(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer func() { _ = netns.Set(orig) }()
	return f()
}

func (p *tunPath) PIDs() []int       { return pidsOf(p.srv, p.cli) }
func (p *tunPath) Profiled() []*Proc { return []*Proc{p.cli, p.srv} }
func (p *tunPath) Close() {
	p.cli.Stop()
	p.srv.Stop()
	p.dests.Stop()
	if p.nsA != 0 {
		_ = p.nsA.Close()
	}
	delNetns(p.a, p.b)
}
