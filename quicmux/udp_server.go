package quicmux

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// serveUDP serves a UDP flow's request: if the policy allows target for UDP, it opens a
// connected UDP socket to it (one per flow), answers ok, and carries packets both ways until
// the client ends the stream, the flow is idle for its timeout, the destination answers ICMP
// port unreachable, or the connection ends. It returns when the flow has ended.
func (s *Server) serveUDP(ctx context.Context, cl *connInfo, str *quic.Stream, t flow.Target, log *logrus.Entry) {
	if !s.flows.Start() {
		s.cfg.Metrics.dialResult(StatusShuttingDown)
		s.cfg.Metrics.flowRejected()
		s.reject(str, StatusShuttingDown, codeShutdown)
		return
	}
	defer s.flows.Done()
	sock, at, status := s.dialUDP(ctx, t)
	s.cfg.Metrics.dialResult(status)
	if status != StatusOK {
		log.WithFields(logrus.Fields{"target": t.String(), "proto": "udp", "result": status.String()}).Info("flow rejected")
		s.cfg.Metrics.flowRejected()
		s.cfg.Metrics.failed(Failure{Ingress: ingressServer, Peer: cl.name, Target: "udp " + t.String(), Reason: status.String()})
		s.reject(str, status, codeFlowReset)
		return
	}
	if _, err := str.Write(AppendStatus(nil, StatusOK)); err != nil {
		_ = sock.Close()
		abortStream(str, codeFlowReset)
		return
	}
	active := s.cfg.Metrics.flowStarted(ingressServer)
	f := &serverUDPFlow{sock: sock, sender: &packetSender{conn: cl.qc, str: str}, idle: udpIdleTimeout(s.cfg.UDPIdleTimeout, t.Port)}
	f.touch()
	end := make(chan quic.StreamErrorCode, 1)
	stop := func(code quic.StreamErrorCode) {
		select {
		case end <- code:
		default:
		}
	}
	unwatch := context.AfterFunc(ctx, func() { stop(codeShutdown) })
	defer unwatch()
	live := &liveFlow{proto: ProtoUDP, target: t, at: at, abort: func(error) { stop(codeFlowReset) }}
	s.liveMu.Lock()
	s.liveFlows[live] = struct{}{}
	s.liveMu.Unlock()
	defer func() {
		s.liveMu.Lock()
		delete(s.liveFlows, live)
		s.liveMu.Unlock()
	}()
	if !s.stillAllowed(live) { // a reload since the check
		stop(codeFlowReset)
	}
	cl.dgrams.add(str.StreamID(), f.fromClient)
	defer cl.dgrams.remove(str.StreamID())

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the destination's packets to the client
		defer wg.Done()
		if code, ok := f.toClient(); ok {
			stop(code)
		}
	}()
	go func() { // packets too large for a datagram, and the stream's end
		defer wg.Done()
		buf := make([]byte, flow.MaxUDPPacket)
		for {
			n, err := readStreamPacket(str, buf)
			if err != nil {
				stop(codeFlowReset) // the client closed or reset the flow
				return
			}
			f.touch()
			_, _ = f.sock.Write(buf[:n])
		}
	}()
	idle := time.NewTicker(f.idle / 4)
	defer idle.Stop()
	var code quic.StreamErrorCode
wait:
	for {
		select {
		case code = <-end:
			break wait
		case <-idle.C:
			if time.Since(f.lastActive()) >= f.idle {
				code = codeIdle
				break wait
			}
		}
	}
	_ = f.sock.Close()
	abortStream(str, code)
	wg.Wait()
	result := "ok"
	switch code {
	case codeIdle:
		result = "idle"
	case codeShutdown:
		result = "shutdown"
	case codePortUnreachable:
		result = "refused"
	}
	s.cfg.Metrics.flowEnded(active, result)
	if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		log.WithFields(logrus.Fields{"target": t.String(), "proto": "udp", "result": result}).Debug("flow ended")
	}
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

// serverUDPFlow is the server's end of a UDP flow: its socket, and when it last moved a
// packet.
type serverUDPFlow struct {
	sock   *net.UDPConn
	sender *packetSender
	idle   time.Duration
	active atomic.Int64 // unix nanoseconds of the last packet either way
}

func (f *serverUDPFlow) touch()                { f.active.Store(time.Now().UnixNano()) }
func (f *serverUDPFlow) lastActive() time.Time { return time.Unix(0, f.active.Load()) }

// fromClient sends a packet the client sent in a datagram to the destination.
func (f *serverUDPFlow) fromClient(p []byte) {
	f.touch()
	_, _ = f.sock.Write(p)
}

// toClient relays the destination's packets to the client until the socket fails; it
// reports port unreachable (ICMP) as a code to end the flow with, and a closed socket as
// nothing to report.
func (f *serverUDPFlow) toClient() (quic.StreamErrorCode, bool) {
	buf := make([]byte, flow.MaxUDPPacket)
	for {
		n, err := f.sock.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return codePortUnreachable, true
			}
			return codeFlowReset, !errors.Is(err, net.ErrClosed)
		}
		f.touch()
		if err := f.sender.send(buf[:n]); err != nil {
			return codeFlowReset, true
		}
	}
}
