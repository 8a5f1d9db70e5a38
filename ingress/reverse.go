package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// ErrBadRemoteForward: a -R specification could not be parsed.
var ErrBadRemoteForward = errors.New("ingress: bad -R forward")

// RemoteForward is one -R: an address on the server's side for the server to listen on, and
// the target, reached from the client's side, that its connections go to.
type RemoteForward struct {
	Bind   netip.AddrPort
	Target flow.Target
}

func (f RemoteForward) String() string { return f.Bind.String() + ":" + f.Target.String() }

// ParseRemoteForward parses "[bind_address:]port:host:hostport" as ssh -R does: the bind
// address (default 127.0.0.1; "localhost" is 127.0.0.1, "*" all interfaces) is the
// server's, host:hostport is reached from the client. The port must be given.
func ParseRemoteForward(spec string) (RemoteForward, error) {
	f, err := parseForward(spec, ErrBadRemoteForward)
	if err != nil {
		return RemoteForward{}, err
	}
	if f.Bind.Port() == 0 {
		return RemoteForward{}, fmt.Errorf("%w %q: listen port 0: the server needs a port to listen on (want [bind_address:]port:host:hostport)", ErrBadRemoteForward, spec)
	}
	return RemoteForward(f), nil
}

// ReverseTunnel carries flows and has the server listen for them: *quicmux.Client is one.
type ReverseTunnel interface {
	Tunnel
	// Listen asks the server to listen on addr; the listener's connections are the flows
	// the server accepted there (see quicmux.Client.Listen).
	Listen(ctx context.Context, network, addr string) (net.Listener, error)
}

var _ ReverseTunnel = (*quicmux.Client)(nil)

// Reverse is one -R: the server listens on the forward's address, and each connection it
// accepts is carried to the forward's target, dialed from the client's side. A target that
// cannot be reached resets the connection on the server's side.
type Reverse struct {
	ln    net.Listener
	fwd   RemoteForward
	name  string // "-R bind:port:host:hostport"
	tun   ReverseTunnel
	opt   Options
	log   *logrus.Entry
	flows *flow.Group
}

var _ Ingress = (*Reverse)(nil)

// ListenReverse asks the server to listen for f; a refusal (the server's --allow-listen,
// a port in use) is an error naming the reason.
func ListenReverse(ctx context.Context, f RemoteForward, t ReverseTunnel, opt Options) (*Reverse, error) {
	ln, err := t.Listen(ctx, "tcp", f.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("ingress: -R %s: %w", f, err)
	}
	log := opt.logger().WithFields(logrus.Fields{"remote_listen": f.Bind.String(), "target": f.Target.String()})
	return &Reverse{ln: ln, fwd: f, name: "-R " + f.String(), tun: t, opt: opt, log: log, flows: flow.NewGroup(context.Background())}, nil
}

// Serve carries the server's accepted connections until ctx ends; then it closes the
// listener on the server, lets the open flows finish for up to the drain timeout, resets
// the rest, and returns once all are gone.
func (r *Reverse) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = r.ln.Close() })
	defer stop()
	defer drain(r.flows, r.opt.DrainTimeout)
	dialer := flow.TCPDialer(r.opt.TCPKeepAlive)
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("ingress: -R %s: %w", r.fwd, err)
		}
		remote := flow.AsConn(conn)
		if !r.flows.Start() {
			remote.Abort()
			continue
		}
		target := r.fwd.Target.String()
		f := quicmux.Reverse{
			Target:  r.fwd.Target,
			Remote:  remote,
			Ingress: r.name,
			Peer:    conn.RemoteAddr().String(),
			Dial: func() (flow.Conn, error) {
				dctx, cancel := context.WithTimeout(r.flows.Context(), reverseDialTimeout)
				defer cancel()
				c, err := dialer.DialContext(dctx, "tcp", target)
				if err != nil {
					return nil, err
				}
				return flow.AsConn(c), nil
			},
		}
		go carry(r.tun, r.flows, f, r.log)
	}
}

// reverseDialTimeout bounds a -R flow's dial of its local target.
const reverseDialTimeout = 10 * time.Second

// Close ends the listener on the server and resets the open flows at once.
func (r *Reverse) Close() error {
	err := r.ln.Close()
	r.flows.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
