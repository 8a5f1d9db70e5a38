package ingress

import (
	"context"
	"net/netip"
	"time"

	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/quicmux"
)

// Echoer sends ICMP echoes from the far side: *quicmux.Client is one (Echo asks the server
// to send it, to an address its policy allows on some port).
type Echoer interface {
	Echo(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error)
}

var _ Echoer = (*quicmux.Client)(nil)

// A TUN ingress answers the pings routed into it through its tunnel's Echo (TUNTunnel):
// each echo request the netstack takes (netstack.EchoHandler) becomes one echo the server
// sends to the same address with the same payload, and the app gets its reply only if the
// server got one. The DNS address (TUNConfig.DNS) answers its own pings.

// HandleEcho asks the server to echo req's destination and reports whether it answered.
// Failures (denied, timed out, no ICMP socket on the server) are logged at debug: an
// unanswered ping is what ping expects, and it sends one a second.
func (ing *TUN) HandleEcho(ctx context.Context, req netstack.EchoRequest) bool {
	if ing.dns != nil && req.Dst == ing.dns.addr {
		return true
	}
	if len(req.Payload) > quicmux.MaxEchoPayload {
		return false
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ing.flows.Context(), cancel) // the ingress closes
	defer stop()
	rtt, err := ing.tun.Echo(ctx, req.Dst, req.Payload)
	if err != nil {
		ing.log.WithError(err).WithField("peer", req.Src.String()).WithField("target", req.Dst.String()).Debug("echo not answered")
		return false
	}
	ing.log.WithField("target", req.Dst.String()).WithField("rtt", rtt).Debug("echo answered")
	return true
}
