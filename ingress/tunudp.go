package ingress

import (
	"context"
	"errors"

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

// handleUDP carries one UDP 5-tuple the netstack terminated: it opens the tunnel's flow to
// the original destination (the app's first packets wait in conn meanwhile) and relays
// packets both ways (flow.RelayPackets) until either side ends; then it returns at once, and
// an open flow holds no goroutine. The flow ends when the server ends it (its idle timeout:
// 2 min, 15 s to port 53; the target's port unreachable), the stack closes, or the ingress
// resets its flows. A denied target or a port unreachable reaches the app as ICMP port
// unreachable (conn.Refuse); any other failure drops the flow's packets, with one log line.
// target is where the flow goes (TUN.target).
func handleUDP(t UDPTunnel, flows *flow.Group, conn *netstack.UDPConn, target flow.Target, name string, log *logrus.Entry) {
	if !flows.Start() {
		conn.Refuse()
		return
	}
	log = log.WithFields(logrus.Fields{"peer": conn.Src().String(), "target": target.String(), "proto": "udp"})
	ctx, cancel := context.WithCancel(flows.Context())
	defer cancel()
	stop := context.AfterFunc(conn.Context(), cancel) // the stack closes
	tun, err := t.OpenUDP(ctx, target, name, conn.Src().String())
	stop()
	if err != nil {
		if errors.Is(err, quicmux.ErrDenied) {
			conn.Refuse()
		} else {
			_ = conn.Close()
		}
		if ctx.Err() == nil {
			log.WithError(err).WithField("ingress", name).Info("udp flow failed")
		}
		flows.Done()
		return
	}
	flow.RelayPackets(flows.Context(), conn.Packets(), tun, flow.PacketRelayOptions{}, func(st flow.PacketStats, err error) {
		defer flows.Done()
		level := logrus.DebugLevel
		result := flow.Result(err)
		if result == "error" || result == "reset" {
			level = logrus.InfoLevel
		}
		if log.Logger.IsLevelEnabled(level) {
			log.WithError(err).WithFields(logrus.Fields{"ingress": name, "result": result, "packets_up": st.PacketsAtoB, "packets_down": st.PacketsBtoA}).Log(level, "udp flow ended")
		}
	})
}
