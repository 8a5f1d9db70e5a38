package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/logging"
	"github.com/quicgate/quicgate/quicmux"
)

// Tunnel carries the flows an ingress finds: *quicmux.Client is one. It is all a -L port
// needs; the ingresses that use more declare it in the interface they take (ReverseTunnel,
// ProxyTunnel, TUNTunnel, UDPTunnel), so what a tunnel must offer is known when the
// ingress is built, never found out by a type assertion on a flow's way.
type Tunnel interface {
	// Carry takes a flow (its local end: a quicmux.Flow, Pending or Reverse) to its target
	// and relays it; it returns once the flow is under way (or failed to start) and calls
	// done once when the flow has ended. It always releases the local end, and ctx ending
	// resets the flow.
	Carry(ctx context.Context, l quicmux.Local, done func(flow.Stats, error))
}

// TUNTunnel is what a TUN ingress uses: TCP flows (Carry), UDP flows (each UDP 5-tuple),
// names resolved at the far side (the DNS address, TUNConfig.DNS) and echoes sent from it
// (pings). *quicmux.Client is one.
type TUNTunnel interface {
	Tunnel
	UDPTunnel
	NameResolver
	Echoer
}

// ProxyTunnel is what a -D proxy bound by ListenProxy uses: flows, and UDP flows for SOCKS5
// UDP ASSOCIATE. *quicmux.Client is one.
type ProxyTunnel interface {
	Tunnel
	UDPTunnel
}

var (
	_ TUNTunnel   = (*quicmux.Client)(nil)
	_ ProxyTunnel = (*quicmux.Client)(nil)
)

// Ingress is a source of flows: -L ports, the TUN device.
type Ingress interface {
	// Serve hands flows to the tunnel until ctx ends, then drains: new flows are refused,
	// open ones run on for up to the drain timeout, the rest are reset, and Serve returns
	// once every flow has ended. It returns an error only if the ingress failed.
	Serve(ctx context.Context) error
	// Close resets the open flows and releases what the ingress holds (its socket, its
	// device and routes) at once. It is idempotent, so a start that fails half-way can
	// defer it.
	Close() error
}

// Options apply to every ingress.
type Options struct {
	// DrainTimeout is how long Serve lets open flows run on after ctx ends before it resets
	// them; zero resets them at once.
	DrainTimeout time.Duration
	// TCPKeepAlive is the keepalive time of the local TCP ends (flow.KeepAliveConfig):
	// 0 means flow.DefaultTCPKeepAlive, negative turns keepalive off.
	TCPKeepAlive time.Duration
	// Logger receives one line per failed flow and a debug line per ended one; nil discards.
	Logger *logrus.Entry
}

func (o Options) logger() *logrus.Entry { return logging.OrDiscard(o.Logger) }

// carry hands one flow, counted in flows by the caller, to the tunnel under the group's
// context; when it ends, it logs how and marks it done in flows: the one place where every
// ingress's flows end. It returns once the flow is under way, so an idle flow keeps no
// goroutine of the ingress. log has the ingress's fields; l names its ingress and peer.
func carry(t Tunnel, flows *flow.Group, l quicmux.Local, log *logrus.Entry) {
	ctx := flows.Context()
	t.Carry(ctx, l, func(stats flow.Stats, err error) {
		defer flows.Done()
		level := logrus.DebugLevel
		failed := err != nil && !flow.IsReset(err) && ctx.Err() == nil
		if failed {
			level = logrus.InfoLevel
		}
		if !log.Logger.IsLevelEnabled(level) {
			return
		}
		f := l.Info()
		entry := log.WithFields(logrus.Fields{"peer": f.Peer, "target": f.Target.String(), "bytes_up": stats.AtoB, "bytes_down": stats.BtoA, "result": flow.Result(err)})
		if failed {
			entry.WithError(err).Info("flow failed")
			return
		}
		entry.Debug("flow ended")
	})
}

// drain lets flows run for up to timeout, then resets those still open, and returns when
// all have ended.
func drain(flows *flow.Group, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = flows.Drain(ctx)
}

// acceptFlows is the accept loop of an ingress that listens (-L, -D): until ctx ends or ln
// fails, it starts each accepted connection as a flow in flows and hands it to start, in a
// goroutine of its own that must see it to flows.Done (through carry); then it closes ln,
// drains flows and returns. A failed accept (out of descriptors, a connection aborted before
// it was accepted) waits a little and goes on, as net/http does, rather than drop the
// ingress. name names the ingress in its error.
func acceptFlows(ctx context.Context, ln net.Listener, flows *flow.Group, opt Options, log *logrus.Entry, name string, start func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	defer drain(flows, opt.DrainTimeout)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("ingress: %s: %w", name, err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.WithError(err).WithField("retry_in", backoff.String()).Warn("accept failed")
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		backoff = 0
		if !flows.Start() {
			flow.AsConn(conn).Abort()
			continue
		}
		go start(conn)
	}
}
