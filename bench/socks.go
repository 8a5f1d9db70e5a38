package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"time"
)

// The -D rows: quicgate's SOCKS5 proxy beside ssh -D's. Each flow is a SOCKS5 CONNECT (no
// authentication, an IPv4 target) on a new connection to the proxy, and the dial returns
// once the proxy has answered, as a SOCKS client's connect does.

// dynamicPath is a path that measures one flow and the new-flow rate only: once a -D flow
// is open it is relayed as an -L flow is (the same relay, the same tunnel), so its other
// figures would repeat those rows and only add time to the run.
type dynamicPath interface{ DynamicOnly() }

// socksDialer dials dest through the SOCKS5 proxy at proxy.
func socksDialer(proxy string, targets map[Dest]string) DialFunc {
	var d net.Dialer
	return func(ctx context.Context, dest Dest) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(targets[dest])
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("socks5: target %q is not IPv4:port", targets[dest])
		}
		c, err := d.DialContext(ctx, "tcp", proxy)
		if err != nil {
			return nil, err
		}
		if err := socksConnect(c, ap); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	}
}

// socksConnect runs a no-authentication SOCKS5 CONNECT to ap on c.
func socksConnect(c net.Conn, ap netip.AddrPort) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var b [10]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return fmt.Errorf("socks5 greeting: %w", err)
	}
	if b[0] != 5 || b[1] != 0 {
		return fmt.Errorf("socks5: method % x", b[:2])
	}
	req := append([]byte{5, 1, 0, 1}, ap.Addr().AsSlice()...)
	if _, err := c.Write(binary.BigEndian.AppendUint16(req, ap.Port())); err != nil {
		return err
	}
	// Both proxies answer with an IPv4 BND here (the proxy's own loopback address).
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("socks5 reply: %w", err)
	}
	if b[1] != 0 {
		return fmt.Errorf("socks5: reply 0x%02x", b[1])
	}
	if b[3] != 1 {
		return fmt.Errorf("socks5: reply address type %d", b[3])
	}
	return nil
}

// --- quicgate -D ---

type quicgateDPath struct{ srv, cli *Proc }

func (*quicgateDPath) Name() string { return "quicgate -D" }
func (*quicgateDPath) DynamicOnly() {}

func (p *quicgateDPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	var err error
	p.srv, p.cli, err = startQuicgate(env, filepath.Join(env.Dir, "qgd"), "-D", "0")
	if err != nil {
		return nil, err
	}
	m, err := p.cli.WaitJSON("proxying (SOCKS5, HTTP)", 10*time.Second)
	if err != nil {
		return nil, err
	}
	return socksDialer(m["listen"].(string), map[Dest]string{ToSink: env.Sink, ToEcho: env.Echo}), nil
}

func (p *quicgateDPath) PIDs() []int       { return pidsOf(p.srv, p.cli) }
func (p *quicgateDPath) Profiled() []*Proc { return []*Proc{p.cli, p.srv} }
func (p *quicgateDPath) Close()            { p.cli.Stop(); p.srv.Stop() }

// --- ssh -D ---

type sshDPath struct{ sshd, ssh *Proc }

func (*sshDPath) Name() string { return "ssh -D" }
func (*sshDPath) DynamicOnly() {}

func (p *sshDPath) Setup(ctx context.Context, env *Env) (DialFunc, error) {
	s, sshd, err := startSSHD(filepath.Join(env.Dir, "sshd"))
	if err != nil {
		return nil, err
	}
	p.sshd = sshd
	lport, err := freePort()
	if err != nil {
		return nil, err
	}
	proxy := fmt.Sprintf("127.0.0.1:%d", lport)
	args := s.ClientArgs("127.0.0.1")
	args = append(args[:len(args)-1:len(args)-1], "-D", proxy, args[len(args)-1])
	p.ssh, err = StartProc("ssh", exec.Command(args[0], args[1:]...))
	if err != nil {
		return nil, err
	}
	if err := waitTCP(proxy, 10*time.Second); err != nil {
		return nil, fmt.Errorf("ssh -D: %w: %s", err, p.ssh.Tail())
	}
	return socksDialer(proxy, map[Dest]string{ToSink: env.Sink, ToEcho: env.Echo}), nil
}

func (p *sshDPath) PIDs() []int {
	var pids []int
	if p.sshd != nil {
		pids = append(pids, Descendants(p.sshd.PID())...)
	}
	return append(pids, pidsOf(p.ssh)...)
}
func (p *sshDPath) Close() { p.ssh.Stop(); p.sshd.Stop() }
