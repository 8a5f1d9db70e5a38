package quicmux

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// serveUDP serves a UDP flow's request: if the policy allows target for UDP, it opens a
// connected UDP socket to it (one per flow), answers ok, and relays packets both ways
// (flow.RelayPackets) until the client ends the stream, the flow is idle for its timeout,
// the destination answers ICMP port unreachable, a reload no longer allows it, or the
// connection ends. It returns once the flow is under way, true, and release is then called
// when the flow has ended; or once it was refused, false. An idle flow holds no goroutine
// and no buffer: its socket waits in the server's parker, its stream and datagrams are
// handed over when they come.
func (s *Server) serveUDP(ctx context.Context, cl *connInfo, str *quic.Stream, t flow.Target, log *logrus.Entry, release func()) bool {
	if !s.flows.Start() {
		s.cfg.Metrics.dialResult(StatusShuttingDown)
		s.cfg.Metrics.flowRejected()
		s.reject(str, StatusShuttingDown, codeShutdown)
		return false
	}
	sock, at, status := s.dialUDP(ctx, t)
	s.cfg.Metrics.dialResult(status)
	if status != StatusOK {
		s.flows.Done()
		log.WithFields(logrus.Fields{"target": t.String(), "proto": "udp", "result": status.String()}).Info("flow rejected")
		s.cfg.Metrics.flowRejected()
		s.cfg.Metrics.failed(Failure{Ingress: ingressServer, Peer: cl.name, Target: "udp " + t.String(), Reason: status.String()})
		s.reject(str, status, codeFlowReset)
		return false
	}
	dst, err := flow.NewUDPSocket(sock, s.parker)
	if err != nil {
		_ = sock.Close()
		s.flows.Done()
		abortStream(str, codeFlowReset)
		return false
	}
	tun := newUDPTunnel(cl.qc, str, cl.dgrams, serverUDPCode, func(error) error { return nil })
	tun.listen() // the client's first packets follow the status at once
	if _, err := str.Write(AppendStatus(nil, StatusOK)); err != nil {
		dst.Close(err)
		tun.Close(err)
		s.flows.Done()
		return false
	}
	active := s.cfg.Metrics.flowStarted(ingressServer)
	live := &liveFlow{proto: ProtoUDP, target: t, at: at}
	s.liveMu.Lock()
	s.liveFlows[live] = struct{}{}
	s.liveMu.Unlock()
	stop := flow.RelayPackets(ctx, tun, dst, flow.PacketRelayOptions{IdleTimeout: udpIdleTimeout(s.cfg.UDPIdleTimeout, t.Port)},
		func(st flow.PacketStats, why error) {
			s.liveMu.Lock()
			delete(s.liveFlows, live)
			s.liveMu.Unlock()
			result := udpResult(why)
			s.cfg.Metrics.flowEnded(active, result)
			if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
				log.WithFields(logrus.Fields{"target": t.String(), "proto": "udp", "result": result,
					"packets_up": st.PacketsAtoB, "packets_down": st.PacketsBtoA}).Debug("flow ended")
			}
			s.flows.Done()
			release()
		})
	s.liveMu.Lock()
	live.abort = stop
	s.liveMu.Unlock()
	if !s.stillAllowed(live) { // a reload since the check
		stop(ErrPolicyChanged)
	}
	return true
}

// serverUDPCode is the stream error code that tells the client why the server ended a UDP
// flow (docs/protocol.md, "UDP flows").
func serverUDPCode(why error) quic.StreamErrorCode {
	switch {
	case errors.Is(why, syscall.ECONNREFUSED):
		return codePortUnreachable
	case errors.Is(why, flow.ErrIdle):
		return codeIdle
	case errors.Is(why, context.Canceled), errors.Is(why, flow.ErrDrained):
		return codeShutdown
	}
	return codeFlowReset
}

// dialUDP opens a connected UDP socket to the first address the policy allows for target.
func (s *Server) dialUDP(ctx context.Context, t flow.Target) (*net.UDPConn, dialedAddr, Status) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	addrs, fromHosts, status := s.destination(ctx, ProtoUDP, t)
	if status != StatusOK {
		return nil, dialedAddr{}, status
	}
	a := addrs[0]
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, t.Port)))
	if err != nil {
		return nil, dialedAddr{}, statusOf(err)
	}
	return c, dialedAddr{a, fromHosts}, StatusOK
}
