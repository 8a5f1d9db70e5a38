package quicmux

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// liveListener is a reverse forward's listener on the server, for Recheck.
type liveListener struct {
	cl   *connInfo
	addr netip.AddrPort
	// stop closes the listener and ends its listen stream; why is how its flow ends:
	// context.Canceled for a drain, ErrPolicyChanged for a reload.
	stop func(why error)
}

// closeListeners closes every reverse forward's listener and refuses new listens (the
// drain's start); the flows they accepted go on.
func (s *Server) closeListeners() {
	s.liveMu.Lock()
	s.noListens = true
	lns := make([]*liveListener, 0, len(s.liveLns))
	for l := range s.liveLns {
		lns = append(lns, l)
	}
	s.liveMu.Unlock()
	for _, l := range lns {
		l.stop(context.Canceled)
	}
}

// listenAllowed is ListenPolicy's verdict on a client's listen.
func (s *Server) listenAllowed(fp Fingerprint, addr netip.AddrPort) bool {
	return s.cfg.ListenPolicy != nil && s.cfg.ListenPolicy(fp, addr)
}

// errListenDenied says why a listen was denied.
var errListenDenied = errors.New("not allowed for this client (--allow-listen, permitlisten=)")

// serveListen serves a listen request (a reverse forward): admission (admission.go) asks
// ListenPolicy whether the client may have this address and binds it; the server answers ok
// and accepts until the listen's stream ends (the client closed its listener, or the
// connection ended), a reload denies it or the server drains; each connection it accepts
// becomes a stream the server opens to the client. The listen is a flow until its listener
// is closed; the flows it started go on, counted in cl.streams.
func (s *Server) serveListen(ctx context.Context, rq *request) {
	cl, str := rq.cl, rq.str
	addr := netip.AddrPortFrom(rq.target.Addr, rq.target.Port)
	log := cl.log.WithField("listen", addr.String())
	var ln net.Listener
	a := s.admit(ctx, rq, func(ctx context.Context, _ []netip.Addr) (netip.Addr, Status, error) {
		s.liveMu.Lock()
		draining := s.noListens
		s.liveMu.Unlock()
		if draining {
			return netip.Addr{}, StatusShuttingDown, nil
		}
		lc := flow.TCPListenConfig(s.cfg.TCPKeepAlive)
		l, err := lc.Listen(ctx, "tcp", addr.String())
		if err != nil {
			return netip.Addr{}, listenStatus(err), err
		}
		ln = l
		return addr.Addr(), StatusOK, nil
	})
	if a == nil {
		return
	}
	// The listener lives as long as its stream: the client ends the stream to close it, and
	// the connection's end ends it too (ctx, the stream's reset). It is registered for
	// Recheck before the client hears ok, so that a reload the client makes after its
	// listen returned always finds it.
	var once sync.Once
	var why error
	stop := func(w error) {
		once.Do(func() { why = w })
		_ = ln.Close()
		abortStream(str, codeShutdown)
	}
	live := &liveListener{cl: cl, addr: addr, stop: stop}
	s.liveMu.Lock()
	s.liveLns[live] = struct{}{}
	draining := s.noListens // a drain that began since admission did not see this one
	s.liveMu.Unlock()
	if _, err := str.Write(statusOK); err != nil {
		s.liveMu.Lock()
		delete(s.liveLns, live)
		s.liveMu.Unlock()
		_ = ln.Close()
		abortStream(str, codeFlowReset)
		a.end("reset", err, flow.Stats{})
		return
	}
	defer func() {
		s.liveMu.Lock()
		delete(s.liveLns, live)
		s.liveMu.Unlock()
		stop(nil) // why is set from here on
		a.end(flow.Result(why), why, flow.Stats{})
	}()
	switch {
	case draining:
		stop(context.Canceled)
		return
	case !s.listenAllowed(cl.fp, addr): // a reload since admission
		stop(ErrPolicyChanged)
		return
	}
	unwatch := context.AfterFunc(ctx, func() { stop(context.Canceled) })
	defer unwatch()
	lifeline := make(chan struct{})
	go func() { // owned: serveListen waits for it below
		defer close(lifeline)
		_, _ = str.Read(make([]byte, 1)) // the client sends nothing more: only its end comes
		_ = ln.Close()
	}()
	defer func() { stop(nil); <-lifeline }()
	log.Info("listening for the client (reverse forward)")
	name := "-R " + addr.String()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				if ctx.Err() != nil {
					stop(context.Canceled)
				}
				log.Info("reverse forward closed")
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.WithError(err).WithField("retry_in", backoff.String()).Warn("accept failed")
			select {
			case <-time.After(backoff):
			case <-lifeline:
			}
			continue
		}
		backoff = 0
		local := flow.AsConn(conn)
		if !s.flows.Start() {
			local.Abort()
			continue
		}
		cl.streams.Add(1)
		go s.reverseFlow(ctx, cl, str.StreamID(), local, conn.RemoteAddr(), name)
	}
}

// reverseFlow carries one connection a reverse forward's listener accepted: it opens a
// stream to the client with an accepted header and relays at once (the client resets the
// stream if it cannot reach its target, and the relay then resets the connection).
func (s *Server) reverseFlow(ctx context.Context, cl *connInfo, listen quic.StreamID, local flow.Conn, from net.Addr, ingress string) {
	started := false
	defer func() {
		if !started {
			local.Abort()
			s.flows.Done()
			cl.streams.Done()
		}
	}()
	peer, _ := netip.ParseAddrPort(from.String())
	hdr, err := AppendRequest(nil, Request{Kind: KindAccepted, Listener: uint64(listen), Target: flow.TargetFromAddrPort(peer)})
	if err != nil {
		return
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	str, err := cl.qc.OpenStreamSync(octx)
	cancel()
	if err != nil {
		cl.log.WithError(err).WithField("peer_app", from.String()).Info("reverse flow: no stream to the client")
		return
	}
	sc := newStreamConn(str, cl.qc.LocalAddr(), cl.qc.RemoteAddr())
	if _, err := sc.Write(hdr); err != nil {
		sc.Abort()
		return
	}
	started = true
	active := s.cfg.Metrics.flowStarted(ingress)
	opt := s.cfg.Metrics.relayOptions(s.cfg.FlowIdleTimeout)
	opt.Parker = s.parker
	flow.StartRelay(ctx, local, sc, opt, func(stats flow.Stats, err error) {
		s.cfg.Metrics.flowEnded(active, flow.Result(err))
		if flow.Result(err) == "error" && ctx.Err() == nil {
			s.cfg.Metrics.failed(Failure{Ingress: ingress, Peer: from.String(), Target: cl.name, Reason: err.Error()})
		}
		if cl.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			cl.log.WithFields(logrus.Fields{"ingress": ingress, "peer_app": from.String(), "bytes_up": stats.AtoB, "bytes_down": stats.BtoA, "result": flow.Result(err)}).Debug("reverse flow ended")
		}
		s.flows.Done()
		cl.streams.Done()
	})
}

// listenStatus maps a bind error to the status the client sees.
func listenStatus(err error) Status {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return StatusInUse
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return StatusDenied
	}
	return StatusUnreachable
}
