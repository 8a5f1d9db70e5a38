package ingress

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/quicmux"
)

// Tunnel carries the flows an ingress finds: *quicmux.Client is one.
type Tunnel interface {
	// Carry takes a flow to its target and relays it until both ends are done; it always
	// releases the local end, and ctx ending resets the flow.
	Carry(ctx context.Context, f quicmux.Flow) (quicmux.RelayStats, error)
}

var _ Tunnel = (*quicmux.Client)(nil)

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
	// TCPKeepAlive is the keepalive time of the local TCP ends (quicmux.KeepAliveConfig):
	// 0 means quicmux.DefaultTCPKeepAlive, negative turns keepalive off.
	TCPKeepAlive time.Duration
	// Logger receives one line per failed flow and a debug line per ended one; nil discards.
	Logger *logrus.Entry
}

func (o Options) logger() *logrus.Entry {
	if o.Logger != nil {
		return o.Logger
	}
	lg := logrus.New()
	lg.SetOutput(discard{})
	return logrus.NewEntry(lg)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// carry hands one flow to the tunnel under the group's context and logs how it ended: the
// one place where every ingress's flows end.
func carry(t Tunnel, flows *quicmux.FlowGroup, f quicmux.Flow, log *logrus.Entry) {
	ctx := flows.Context()
	stats, err := t.Carry(ctx, f)
	entry := log.WithFields(logrus.Fields{"bytes_up": stats.AtoB, "bytes_down": stats.BtoA, "result": quicmux.ResultOf(err)})
	if err != nil && !quicmux.IsReset(err) && ctx.Err() == nil {
		entry.WithError(err).Info("flow failed")
		return
	}
	entry.Debug("flow ended")
}

// drain lets flows run for up to timeout, then resets those still open, and returns when
// all have ended.
func drain(flows *quicmux.FlowGroup, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = flows.Drain(ctx)
}
