package quicmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrBadForward: a -L specification could not be parsed.
var ErrBadForward = errors.New("quicmux: bad -L forward")

// LocalForward is one -L: a local listening address and the target its connections go to.
type LocalForward struct {
	Bind   netip.AddrPort // port 0 picks a free port
	Target Target
}

func (f LocalForward) String() string { return f.Bind.String() + ":" + f.Target.String() }

// ParseLocalForward parses "[bind_address:]port:host:hostport" as ssh -L does. IPv6
// addresses go in brackets; the bind address defaults to 127.0.0.1, "localhost" means
// 127.0.0.1 and "*" means all interfaces.
func ParseLocalForward(spec string) (LocalForward, error) {
	bad := func(why string) (LocalForward, error) {
		return LocalForward{}, fmt.Errorf("%w %q: %s (want [bind_address:]port:host:hostport)", ErrBadForward, spec, why)
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
	var addr netip.Addr
	switch bind {
	case "", "*":
		addr = netip.IPv4Unspecified()
	case "localhost":
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		a, err := netip.ParseAddr(bind)
		if err != nil || a.Zone() != "" {
			return bad("bind address " + bind + " is not an IP address")
		}
		addr = a.Unmap()
	}
	port, err := parsePort(fields[0])
	if err != nil {
		return bad("listen port " + fields[0] + " is not 0-65535")
	}
	host := fields[1]
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	t, err := ParseTarget(host + ":" + fields[2])
	if err != nil {
		return bad(err.Error())
	}
	return LocalForward{Bind: netip.AddrPortFrom(addr, port), Target: t}, nil
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

// Forwarder carries a flow to its target: Client.Forward.
type Forwarder interface {
	Forward(ctx context.Context, local net.Conn, t Target) (RelayStats, error)
}

// PortListener is the unprivileged ingress: it accepts TCP connections on a local port and
// hands each to a Forwarder with the -L target.
type PortListener struct {
	ln  net.Listener
	fwd LocalForward
	to  Forwarder
	log *logrus.Entry

	// DrainTimeout is how long Serve lets open flows run on after ctx ends before it resets
	// them; zero resets them at once.
	DrainTimeout time.Duration
}

// ListenLocalForward binds f's local address.
func ListenLocalForward(f LocalForward, to Forwarder, log *logrus.Entry) (*PortListener, error) {
	lc := net.ListenConfig{KeepAlive: -1} // as on egress: idle flows are FlowIdleTimeout's business
	ln, err := lc.Listen(context.Background(), "tcp", f.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("quicmux: -L %s: %w", f, err)
	}
	return &PortListener{ln: ln, fwd: f, to: to, log: loggerOrDiscard(log)}, nil
}

// Addr is the bound address (with the chosen port when -L asked for port 0).
func (p *PortListener) Addr() net.Addr { return p.ln.Addr() }

// Serve accepts until ctx ends or the listener fails. Then it closes the listener, lets the
// open flows finish for up to DrainTimeout, resets the rest, and returns once all are gone.
func (p *PortListener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = p.ln.Close() })
	defer stop()
	flowCtx, resetFlows := context.WithCancel(context.WithoutCancel(ctx))
	defer resetFlows()
	var flows sync.WaitGroup
	defer func() {
		allDone := make(chan struct{})
		go func() { flows.Wait(); close(allDone) }()
		timer := time.NewTimer(p.DrainTimeout)
		defer timer.Stop()
		select {
		case <-allDone:
			return
		case <-timer.C:
		}
		resetFlows()
		<-allDone
	}()
	log := p.log.WithFields(logrus.Fields{"listen": p.ln.Addr().String(), "target": p.fwd.Target.String()})
	var backoff time.Duration
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("quicmux: -L %s: %w", p.fwd, err)
			}
			// Out of descriptors, or a connection aborted before it was accepted: wait a
			// little and go on, as net/http does, rather than drop every forward.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.WithError(err).WithField("retry_in", backoff.String()).Warn("accept failed")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		flows.Add(1)
		go func() {
			defer flows.Done()
			peer := conn.RemoteAddr().String()
			stats, err := p.to.Forward(flowCtx, conn, p.fwd.Target)
			entry := log.WithFields(logrus.Fields{"peer": peer, "bytes_up": stats.AtoB, "bytes_down": stats.BtoA, "result": resultOf(err)})
			if err != nil && !IsReset(err) && flowCtx.Err() == nil {
				entry.WithError(err).Info("flow failed")
				return
			}
			entry.Debug("flow ended")
		}()
	}
}

// Target is where this listener's flows go.
func (p *PortListener) Target() Target { return p.fwd.Target }

// Close stops accepting.
func (p *PortListener) Close() error { return p.ln.Close() }
