package quicmux

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
)

// Admission is the one way a client's request becomes a flow on the server, or is refused,
// whatever it asks for (a TCP or UDP flow, a resolve, an echo, a listen):
//
//   - the drain: a draining server refuses it (shutting down);
//   - a dial slot (ServerConfig.MaxPendingDials) for as long as it resolves its target and
//     connects, waited for within the kind's time (the dial timeout; EchoTimeout for an
//     echo): timed out;
//   - its target judged by the rules for its kind and the guard, a name resolved the one way
//     the server resolves names (judge, destination.go): denied, unreachable, timed out;
//   - its kind's own connect with the addresses found: a TCP dial, a UDP socket, an ICMP
//     echo, a bind (a resolve has none: the addresses are its answer);
//   - the verdict counted, logged and listed the same way for every kind.
//
// Counted the same way: every request the server answers (a ping excepted: it asks for
// nothing) is counted in quicgate_dial_results_total by status and in
// quicgate_requests_total by kind and status. A refused one (refuse) counts in
// quicgate_flows_total as rejected, is logged "flow rejected" at info (rate-limited) and
// listed in the recent failures, except when the server is shutting down: a drain is no
// failure. An admitted one is a flow in quicgate_flows_active until its end (admitted.end),
// then counts in quicgate_flows_total by how it ended; a resolve or an echo ends once
// answered, a listen when its listener closes. "flow started" and "flow ended" are debug
// lines.

// connectFunc is what a kind does, under its dial slot and within its time, with the
// addresses admission found for it, in the order to try them: it returns the address it
// used, or the status that says why none would do and the error behind it, if any.
type connectFunc func(ctx context.Context, addrs []netip.Addr) (netip.Addr, Status, error)

// admitted is a request the server took on: a flow until end, counted in the drain's group.
// It lives in its request (one allocation a stream).
type admitted struct {
	s     *Server
	rq    *request
	ctx   context.Context // the connection's, under which the flow runs
	addrs []netip.Addr    // what the target was judged to reach (a resolve's answer)
	one   [1]netip.Addr   // addrs' room for an address target
	at    dialedAddr      // the address connect used, for Recheck

	active  prometheus.Gauge
	begun   int64 // unix nanoseconds
	live    liveFlow
	watched bool
}

// admit takes a request through admission (see above) and returns it admitted, or nil once
// it has refused it: the status sent, counted, logged and listed. connect may be nil (a
// resolve). ctx is the connection's; the request's own time bounds the slot's wait, the
// lookup and connect.
func (s *Server) admit(ctx context.Context, rq *request, connect connectFunc) *admitted {
	if !s.flows.Start() {
		s.refuse(rq, StatusShuttingDown, nil)
		return nil
	}
	a := &rq.adm
	*a = admitted{s: s, rq: rq, ctx: ctx, begun: time.Now().UnixNano()}
	if st, err := a.connect(ctx, connect); st != StatusOK {
		s.flows.Done()
		if ctx.Err() != nil {
			// The connection or the server is going: the stream is reset as every open
			// flow's is, whatever the dial made of the cancellation.
			abortStream(rq.str, codeShutdown)
		}
		s.refuse(rq, st, err)
		return nil
	}
	s.cfg.Metrics.requested(kindLabel(rq.kind), StatusOK)
	a.active = s.cfg.Metrics.flowStarted(ingressServer)
	if rq.cl.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		rq.entry(logrus.Fields{}).Debug("flow started")
	}
	return a
}

// connect holds a dial slot while the target is judged and connect runs.
func (a *admitted) connect(ctx context.Context, connect connectFunc) (Status, error) {
	s := a.s
	ctx, cancel := context.WithTimeout(ctx, s.timeoutOf(a.rq.kind))
	defer cancel()
	select {
	case s.dialSlots <- struct{}{}:
		defer func() { <-s.dialSlots }()
	case <-ctx.Done():
		return StatusTimedOut, nil
	}
	addrs, fromHosts, st, err := s.judge(ctx, a.rq, a.one[:0])
	if st != StatusOK {
		return st, err
	}
	a.addrs, a.at.fromHosts = addrs, fromHosts
	if connect == nil {
		return StatusOK, nil
	}
	addr, st, err := connect(ctx, addrs)
	a.at.addr = addr
	return st, err
}

// timeoutOf is how long a request of kind k may take to be admitted: an echo's, its reply
// included; every other kind's, the dial timeout.
func (s *Server) timeoutOf(k Kind) time.Duration {
	if k == KindEcho {
		return EchoTimeout
	}
	return s.cfg.DialTimeout
}

// refuse turns a request away, the same way for every kind: the status to the client (FIN
// after it, STOP_SENDING for the rest), counted (requested), and, unless the server is
// shutting down, listed as a failure under the status and logged: "flow rejected" at info,
// rate-limited; a client at its limit of flows once a connection.
func (s *Server) refuse(rq *request, st Status, err error) {
	s.cfg.Metrics.requested(kindLabel(rq.kind), st)
	code := codeFlowReset
	switch st {
	case StatusShuttingDown:
		code = codeShutdown
	case StatusTooManyFlows:
		s.cfg.Metrics.failed(rq.failure(st.String()))
		rq.cl.limitLog.Do(func() {
			rq.cl.log.WithField("max_flows_per_client", s.cfg.MaxFlowsPerClient).Warn("client at its limit of open flows: refusing new ones (logged once a connection)")
		})
	default:
		if st == StatusBadRequest {
			code = codeBadRequest
		}
		s.cfg.Metrics.failed(rq.failure(st.String()))
		if ok, held := s.rejectLines.allow(); ok {
			e := rq.entry(withHeld(logrus.Fields{"result": st.String()}, held))
			if err != nil {
				e = e.WithError(err)
			}
			e.Info("flow rejected")
		}
	}
	s.reject(rq.str, st, code)
}

// watch puts an admitted flow (TCP or UDP) where Recheck finds it; end takes it away.
// abortWith gives Recheck the way to end it.
func (a *admitted) watch() {
	a.live = liveFlow{kind: a.rq.kind, target: a.rq.target, at: a.at}
	a.s.liveMu.Lock()
	a.s.liveFlows[&a.live] = struct{}{}
	a.watched = true
	a.s.liveMu.Unlock()
}

// abortWith is how Recheck ends the watched flow; if a reload since its admission denies it
// already, it ends it at once.
func (a *admitted) abortWith(abort func(error)) {
	a.s.liveMu.Lock()
	a.live.abort = abort
	a.s.liveMu.Unlock()
	if !a.s.stillAllowed(&a.live) {
		abort(ErrPolicyChanged)
	}
}

// end counts the end of an admitted request, the one way every kind ends: it leaves
// Recheck's sight and the drain's group, quicgate_flows_active goes down and
// quicgate_flows_total up by result (flow.Result's names, and a UDP flow's), a flow that
// broke (result "error" while its connection lives) is listed as a failure, and the debug
// line "flow ended" says how it went.
func (a *admitted) end(result string, err error, st flow.Stats) {
	s := a.s
	if a.watched {
		s.liveMu.Lock()
		delete(s.liveFlows, &a.live)
		s.liveMu.Unlock()
	}
	s.cfg.Metrics.flowEnded(a.active, result)
	if result == "error" && err != nil && a.ctx.Err() == nil {
		s.cfg.Metrics.failed(a.rq.failure(err.Error()))
	}
	if a.rq.cl.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		f := logrus.Fields{
			"bytes_up":   st.AtoB,
			"bytes_down": st.BtoA,
			"duration":   time.Since(time.Unix(0, a.begun)).Round(time.Millisecond).String(),
			"result":     result,
		}
		if a.rq.kind == KindResolve {
			f["addrs"] = a.addrs
		}
		e := a.rq.entry(f)
		if err != nil && result != "ok" {
			e = e.WithError(err)
		}
		e.Debug("flow ended")
	}
	s.flows.Done()
}
