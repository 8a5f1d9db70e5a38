package quicmux

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// A request is one stream's request as admission sees it, and what the stream holds while it
// is served: one allocation a stream.
type request struct {
	kind   Kind
	target flow.Target
	cl     *connInfo
	str    *quic.Stream
	id     uint64 // the flow's number in the log

	s    *Server
	slot bool       // the stream holds one of its client's flow slots (MaxFlowsPerClient)
	in   headerRead // the header's (and an echo's payload's) reads; not used by a flow
	adm  admitted   // the request once admitted
}

// releaseSlot gives the client's flow slot back, once.
func (rq *request) releaseSlot() {
	if rq.slot {
		rq.slot = false
		rq.s.releaseFlowSlot(rq.cl.fp)
	}
}

// release is the stream's end: its slot, and its place in the connection's count.
func (rq *request) release() {
	rq.releaseSlot()
	rq.cl.streams.Done()
}

// kindUnknown is the kind of a request whose header was not read: one that was malformed,
// or refused before it was read (too many flows).
const kindUnknown Kind = 0xff

// kindLabel names a kind in metrics and logs.
func kindLabel(k Kind) string {
	if k == kindUnknown {
		return "unknown"
	}
	return k.String()
}

// targetString is how logs and the failure list name a kind's target: a resolve's name, an
// echo's address, a flow's or a listen's address (or name) and port.
func targetString(k Kind, t flow.Target) string {
	switch k {
	case kindUnknown:
		return ""
	case KindResolve:
		return t.Host
	case KindEcho:
		return t.Addr.String()
	}
	return t.String()
}

// entry is the request's log entry. It is made only for a line that is logged: an entry
// per flow is garbage the collector must chase, and at 10,000 flows that shows in the RSS.
func (rq *request) entry(f logrus.Fields) *logrus.Entry {
	f["flow"] = rq.id
	if rq.kind != kindUnknown {
		f["kind"] = kindLabel(rq.kind)
		f["target"] = targetString(rq.kind, rq.target)
		if rq.kind == KindTCP || rq.kind == KindUDP {
			f["proto"] = rq.kind.String()
		}
	}
	return rq.cl.log.WithFields(f)
}

// failure is the request's entry in the recent failures: a TCP flow under its target, any
// other kind under its kind and target ("udp 10.0.0.53:53", "resolve example.com", "listen
// 127.0.0.1:8080").
func (rq *request) failure(reason string) Failure {
	target := targetString(rq.kind, rq.target)
	if rq.kind != KindTCP && rq.kind != kindUnknown {
		target = rq.kind.String() + " " + target
	}
	return Failure{Ingress: ingressServer, Peer: rq.cl.name, Target: target, Reason: reason}
}

// headerRead reads what a client sends before the server answers (a header, an echo's
// payload) within a deadline, and resets the stream if the connection or the server goes
// while it waits. Almost always the header came with the stream's first packet and a read
// returns at once: only a read that would wait sets the deadline and registers the watch,
// which is then kept until unwatch.
type headerRead struct {
	str      *quic.Stream
	ctx      context.Context
	deadline time.Time // of the read under way
	waiting  bool      // the deadline is set on the stream
	stop     func() bool
}

// Read reads from the stream, setting the deadline and the watch first if it would wait.
func (r *headerRead) Read(p []byte) (int, error) {
	if !r.waiting && !r.str.Readable() {
		r.waiting = true
		_ = r.str.SetReadDeadline(r.deadline)
		if r.stop == nil {
			str := r.str
			r.stop = context.AfterFunc(r.ctx, func() { abortStream(str, codeShutdown) })
		}
	}
	return r.str.Read(p)
}

// settle ends a read phase: the stream's deadline goes, and the next phase's is d.
func (r *headerRead) settle(d time.Time) {
	if r.waiting {
		r.waiting = false
		_ = r.str.SetReadDeadline(time.Time{})
	}
	r.deadline = d
}

// unwatch stops the watch, if a read registered one.
func (r *headerRead) unwatch() {
	if r.stop != nil {
		r.stop()
	}
}
