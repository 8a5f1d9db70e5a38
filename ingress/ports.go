package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// ErrBadForward: a -L specification could not be parsed.
var ErrBadForward = errors.New("ingress: bad -L forward")

// LocalForward is one -L: a local listening address and the target its connections go to.
type LocalForward struct {
	Bind   netip.AddrPort // port 0 picks a free port
	Target flow.Target
}

func (f LocalForward) String() string { return f.Bind.String() + ":" + f.Target.String() }

// ParseLocalForward parses "[bind_address:]port:host:hostport" as ssh -L does. IPv6
// addresses go in brackets; the bind address defaults to 127.0.0.1, "localhost" means
// 127.0.0.1 and "*" means all interfaces.
func ParseLocalForward(spec string) (LocalForward, error) {
	return parseForward(spec, ErrBadForward)
}

// parseForward parses the -L and -R form; its errors wrap bad.
func parseForward(spec string, badForward error) (LocalForward, error) {
	bad := func(why string) (LocalForward, error) {
		return LocalForward{}, fmt.Errorf("%w %q: %s (want [bind_address:]port:host:hostport)", badForward, spec, why)
	}
	fields, err := splitForward(spec)
	if err != nil {
		return bad(err.Error())
	}
	bind := "127.0.0.1"
	switch len(fields) {
	case 3:
	case 4:
		bind, fields = fields[0], fields[1:]
	default:
		return bad(fmt.Sprintf("%d fields", len(fields)))
	}
	bindAddr, err := parseBind(bind, fields[0])
	if err != nil {
		return bad(err.Error())
	}
	host := fields[1]
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	t, err := flow.ParseTarget(host + ":" + fields[2])
	if err != nil {
		return bad(err.Error())
	}
	return LocalForward{Bind: bindAddr, Target: t}, nil
}

// parseBind reads a forward's local address as ssh does: bind is an IP address, "localhost"
// (127.0.0.1), or "" or "*" (all interfaces); port is 0-65535.
func parseBind(bind, port string) (netip.AddrPort, error) {
	var addr netip.Addr
	switch bind {
	case "", "*":
		addr = netip.IPv4Unspecified()
	case "localhost":
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		a, err := netip.ParseAddr(bind)
		if err != nil || a.Zone() != "" {
			return netip.AddrPort{}, errors.New("bind address " + bind + " is not an IP address")
		}
		addr = a.Unmap()
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port == "" || port[0] == '+' {
		return netip.AddrPort{}, errors.New("listen port " + port + " is not 0-65535")
	}
	return netip.AddrPortFrom(addr, uint16(p)), nil
}

// splitForward splits on colons outside brackets and strips the brackets.
func splitForward(s string) ([]string, error) {
	var fields []string
	var cur strings.Builder
	inBracket := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '[' && !inBracket && cur.Len() == 0:
			inBracket = true
		case c == ']' && inBracket:
			inBracket = false
			if i+1 < len(s) && s[i+1] != ':' {
				return nil, errors.New("expected : after ]")
			}
		case c == ':' && !inBracket:
			fields = append(fields, cur.String())
			cur.Reset()
		case c == '[' || c == ']':
			return nil, errors.New("misplaced bracket")
		default:
			cur.WriteByte(c)
		}
	}
	if inBracket {
		return nil, errors.New("missing ]")
	}
	return append(fields, cur.String()), nil
}

// Port is the unprivileged ingress, one -L: it accepts TCP connections on a local port and
// hands each to the tunnel as a flow to the -L target. Accepted sockets keep alive
// (Options.TCPKeepAlive), so a flow whose app vanished is reset.
type Port struct {
	ln    net.Listener
	fwd   LocalForward
	name  string // "-L bind:port:host:hostport", with the bound port
	tun   Tunnel
	opt   Options
	log   *logrus.Entry
	flows *flow.Group
}

var _ Ingress = (*Port)(nil)

// ListenPort binds f's local address.
func ListenPort(f LocalForward, t Tunnel, opt Options) (*Port, error) {
	lc := flow.TCPListenConfig(opt.TCPKeepAlive)
	ln, err := lc.Listen(context.Background(), "tcp", f.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("ingress: -L %s: %w", f, err)
	}
	log := opt.logger().WithField("listen", ln.Addr().String())
	name := "-L " + LocalForward{Bind: netip.MustParseAddrPort(ln.Addr().String()), Target: f.Target}.String()
	return &Port{ln: ln, fwd: f, name: name, tun: t, opt: opt, log: log, flows: flow.NewGroup(context.Background())}, nil
}

// Addr is the bound address (with the chosen port when -L asked for port 0).
func (p *Port) Addr() net.Addr { return p.ln.Addr() }

// Target is where this listener's flows go.
func (p *Port) Target() flow.Target { return p.fwd.Target }

// Serve accepts until ctx ends or the listener fails. Then it closes the listener, lets the
// open flows finish for up to the drain timeout, resets the rest, and returns once all are
// gone.
func (p *Port) Serve(ctx context.Context) error {
	return acceptFlows(ctx, p.ln, p.flows, p.opt, p.log, p.name, func(conn net.Conn) {
		// The flow's goroutine lives only while the stream opens: carry returns once the
		// flow is under way.
		f := quicmux.Flow{Target: p.fwd.Target, Conn: flow.AsConn(conn), Ingress: p.name, Peer: conn.RemoteAddr().String()}
		carry(p.tun, p.flows, f, p.log)
	})
}

// Close stops accepting and resets the open flows at once.
func (p *Port) Close() error {
	err := p.ln.Close()
	p.flows.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
