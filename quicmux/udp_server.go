package quicmux

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// serveUDP serves a UDP flow's request: admitted (admission.go) with a connected UDP socket
// of its own to the target, it answers ok and relays packets both ways (flow.RelayPackets)
// until the client ends the stream, the flow is idle for its timeout, the destination
// answers ICMP port unreachable, a reload no longer allows it, or the connection ends. It
// reports true once the flow is under way, and the request is released when the flow has
// ended; false when it was refused or failed before its relay. An idle flow holds no
// goroutine and no buffer: its socket waits in the server's parker, its stream and
// datagrams are handed over when they come.
func (s *Server) serveUDP(ctx context.Context, rq *request) bool {
	var sock *net.UDPConn
	a := s.admit(ctx, rq, func(_ context.Context, addrs []netip.Addr) (netip.Addr, Status, error) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addrs[0], rq.target.Port)))
		if err != nil {
			return netip.Addr{}, statusOf(err), err
		}
		sock = c
		return addrs[0], StatusOK, nil
	})
	if a == nil {
		return false
	}
	str := rq.str
	dst, err := flow.NewUDPSocket(sock, s.parker)
	if err != nil {
		_ = sock.Close()
		abortStream(str, codeFlowReset)
		a.end("error", err, flow.Stats{})
		return false
	}
	tun := newUDPTunnel(rq.cl.qc, str, rq.cl.dgrams, serverUDPCode, func(error) error { return nil })
	tun.listen() // the client's first packets follow the status at once
	if _, err := str.Write(statusOK); err != nil {
		dst.Close(err)
		tun.Close(err)
		a.end("reset", err, flow.Stats{})
		return false
	}
	a.watch()
	stop := flow.RelayPackets(ctx, tun, dst, flow.PacketRelayOptions{IdleTimeout: udpIdleTimeout(s.cfg.UDPIdleTimeout, rq.target.Port)},
		func(st flow.PacketStats, why error) {
			a.end(udpResult(why), why, flow.Stats{AtoB: st.AtoB, BtoA: st.BtoA})
			rq.release()
		})
	// A reload between the admission's check and here: abortWith judges it again.
	a.abortWith(stop)
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
