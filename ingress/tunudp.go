package ingress

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/quicmux"
)

// HandleUDP carries one UDP 5-tuple the netstack terminated.
func (ing *TUN) HandleUDP(conn *netstack.UDPConn) {
	if ing.dns != nil && conn.Dst().Addr() == ing.dns.addr {
		ing.serveDNSUDP(conn)
		return
	}
	handleUDP(ing.tun, ing.flows, conn, ing.target(conn.Dst()), ing.name, ing.log)
}

// A TUN ingress carries the UDP packets routed into it through its tunnel's UDP flows
// (TUNTunnel, UDPTunnel in udpport.go).

// udpWriteTimeout bounds a Write of a packet too large for a QUIC datagram, which waits
// for the flow's stream: a stalled tunnel must not hold the relay forever.
const udpWriteTimeout = 10 * time.Second

// handleUDP carries one UDP 5-tuple the netstack terminated: it opens the tunnel's flow to
// the original destination (the app's first packets wait in conn meanwhile) and relays
// packets both ways until either side ends. The flow ends when the server ends it (its
// idle timeout: 2 min, 15 s to port 53; the target's port unreachable), the app's side is
// closed (the stack closes), or the ingress resets its flows. A denied target or a port
// unreachable reaches the app as ICMP port unreachable (conn.Refuse); any other failure
// drops the flow's packets, with one log line. target is where the flow goes (TUN.target).
func handleUDP(t UDPTunnel, flows *flow.Group, conn *netstack.UDPConn, target flow.Target, name string, log *logrus.Entry) {
	if !flows.Start() {
		conn.Refuse()
		return
	}
	defer flows.Done()
	log = log.WithFields(logrus.Fields{"peer": conn.Src().String(), "target": target.String(), "proto": "udp"})

	ctx, cancel := context.WithCancel(flows.Context())
	defer cancel()
	stop := context.AfterFunc(conn.Context(), cancel) // the stack closes
	defer stop()

	udpFlow, err := t.OpenUDP(ctx, target, name, conn.Src().String())
	if err != nil {
		if errors.Is(err, quicmux.ErrDenied) {
			conn.Refuse()
		} else {
			_ = conn.Close()
		}
		if ctx.Err() == nil {
			log.WithError(err).WithField("ingress", name).Info("udp flow failed")
		}
		return
	}
	// Either side's end, or the group's reset, ends both.
	unwatch := context.AfterFunc(ctx, func() {
		_ = udpFlow.Close()
		_ = conn.Close()
	})
	defer unwatch()

	errc := make(chan error, 2)
	go func() { errc <- udpAppToTunnel(conn, udpFlow) }()
	go func() { errc <- udpTunnelToApp(udpFlow, conn) }()
	first := <-errc
	if errors.Is(first, syscall.ECONNREFUSED) {
		conn.Refuse() // before cancel closes conn
	}
	cancel()
	<-errc
	level := logrus.DebugLevel
	failed := first != nil && !errors.Is(first, flow.ErrIdle) && !errors.Is(first, syscall.ECONNREFUSED) &&
		!errors.Is(first, net.ErrClosed) && flows.Context().Err() == nil && conn.Context().Err() == nil
	if failed {
		level = logrus.InfoLevel
	}
	if log.Logger.IsLevelEnabled(level) {
		log.WithError(first).WithField("ingress", name).Log(level, "udp flow ended")
	}
}

// udpAppToTunnel moves the app's packets into the tunnel until either side fails.
func udpAppToTunnel(conn *netstack.UDPConn, udpFlow *quicmux.UDPFlow) error {
	buf := make([]byte, flow.MaxUDPPacket)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		_ = udpFlow.SetWriteDeadline(time.Now().Add(udpWriteTimeout))
		if _, err := udpFlow.Write(buf[:n]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // the packet is lost, as UDP's may be
			}
			return err
		}
	}
}

// udpTunnelToApp moves the target's packets to the app until either side fails.
func udpTunnelToApp(udpFlow *quicmux.UDPFlow, conn *netstack.UDPConn) error {
	buf := make([]byte, flow.MaxUDPPacket)
	for {
		n, err := udpFlow.Read(buf)
		if err != nil {
			return err
		}
		if _, err := conn.Write(buf[:n]); err != nil {
			return err
		}
	}
}
