package quicmux

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/sirupsen/logrus"
)

// Handshakes in progress. quic-go makes a connection for every Initial packet with a new
// Destination Connection ID and keeps it until its handshake completes or times out
// (Limits.HandshakeTimeout, 10 s idle), with no bound of its own: a flood of Initials from
// many source addresses would hold one connection each. The server counts them, from the
// Transport's ConnContext (the connection is made) until it is accepted (the handshake
// completed) or its context ends (it failed or timed out), and uses the two levers quic-go
// offers before any state exists:
//
//   - from RetryHandshakes in progress, a new client without a token gets a stateless Retry
//     (VerifySourceAddress) and must prove its address with a second Initial: an Initial from
//     a spoofed source then costs the server nothing but the Retry;
//   - at MaxHandshakes, a new connection is refused (ConnContext's error: CONNECTION_REFUSED,
//     also stateless), whatever its address. This bounds a flood from addresses that do
//     answer the Retry.
//
// docs/performance.md ("Floods") has the memory a handshake holds and the measurements behind
// the defaults.

const (
	// DefaultMaxHandshakes is ServerConfig.MaxHandshakes's default. A handshake whose client
	// answered the Retry (so the server is no longer bound to three times what it received)
	// holds about 130 KiB of RSS on the server: some 50 KiB of heap (the connection, BBR's
	// delivery sampler, TLS and AEAD state), as much again in garbage-collector headroom, and
	// four goroutines. At the cap the server measured 38 MiB over its idle RSS
	// (docs/performance.md, "Floods"). A handshake takes one or two round trips, so 256 in progress is over 1,000
	// new connections a second on a 200 ms path: a server restart's reconnecting clients fit,
	// and a client refused retries with backoff.
	DefaultMaxHandshakes = 256
	// DefaultRetryHandshakes is ServerConfig.RetryHandshakes's default: handshakes from
	// unproven addresses (about 42 KiB each, held to the anti-amplification limit) take at
	// most 3 MiB before every new client must answer a Retry; one round trip more for
	// clients, and only while that many are in progress.
	DefaultRetryHandshakes = 64
	// handshakeLogEvery is how often a flood's summary is logged while it lasts.
	handshakeLogEvery = 10 * time.Second
)

// errTooManyHandshakes refuses a connection at MaxHandshakes.
var errTooManyHandshakes = errors.New("quicmux: too many handshakes in progress")

// handshakes counts a server's handshakes in progress and logs the floods that reach its
// limits: once when a flood starts, a summary every handshakeLogEvery while it lasts, and
// once when a period passes without a Retry or a refusal.
type handshakes struct {
	max        int64
	retryAbove int64 // negative: never for load
	always     bool  // ServerConfig.Retry
	metrics    *Metrics
	log        *logrus.Entry
	logEvery   time.Duration

	n        atomic.Int64 // in progress
	retries  atomic.Uint64
	refusals atomic.Uint64

	mu     sync.Mutex
	closed bool
	timer  *time.Timer // armed while a flood lasts
	burst  handshakeBurst
}

// handshakeBurst is what a flood did since the last line logged about it.
type handshakeBurst struct {
	start             time.Time
	retries, refusals uint64 // this period
	total             uint64 // every Retry and refusal of the burst
	warnedRetry       bool
	warnedRefuse      bool
}

func newHandshakes(cfg ServerConfig, log *logrus.Entry) *handshakes {
	return &handshakes{max: int64(cfg.MaxHandshakes), retryAbove: int64(cfg.RetryHandshakes), always: cfg.Retry,
		metrics: cfg.Metrics, log: log, logEvery: handshakeLogEvery}
}

// handshakeKey is the context key under which a connection's *handshake is kept.
type handshakeKey struct{}

// handshake is one handshake counted in progress; release ends it exactly once.
type handshake struct {
	hs       *handshakes
	released atomic.Bool
	stop     func() bool // stops the release on the connection's end
}

func (h *handshake) release() {
	if h.released.CompareAndSwap(false, true) {
		h.hs.n.Add(-1)
	}
}

// verifySource is the Transport's VerifySourceAddress: called for an Initial without a
// valid token, before any state is made; true sends a Retry.
func (h *handshakes) verifySource(net.Addr) bool {
	if h.always {
		return true
	}
	if h.retryAbove < 0 || h.n.Load() < h.retryAbove {
		return false
	}
	h.retries.Add(1)
	h.note(false)
	return true
}

// connContext is the Transport's ConnContext: it counts the new connection until accepted
// or refuses it at the limit.
func (h *handshakes) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	if h.n.Add(1) > h.max {
		h.n.Add(-1)
		h.refusals.Add(1)
		h.metrics.handshakeFailed("too_many_handshakes")
		h.note(true)
		return nil, errTooManyHandshakes
	}
	hs := &handshake{hs: h}
	ctx = context.WithValue(ctx, handshakeKey{}, hs)
	// quic-go cancels this context when the connection ends (a failed or timed-out handshake
	// included; for the server's connections it cancels the very context made here).
	hs.stop = context.AfterFunc(ctx, hs.release)
	return ctx, nil
}

// accepted ends the count of a connection whose handshake completed.
func (h *handshakes) accepted(qc *quic.Conn) {
	if hs, ok := qc.Context().Value(handshakeKey{}).(*handshake); ok {
		hs.stop()
		hs.release()
	}
}

// inProgress is how many handshakes are in progress.
func (h *handshakes) inProgress() int { return int(h.n.Load()) }

// note records a Retry sent or a connection refused for load, and logs a flood's start.
func (h *handshakes) note(refused bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	b := &h.burst
	if h.timer == nil {
		*b = handshakeBurst{start: time.Now()}
		h.timer = time.AfterFunc(h.logEvery, h.tick)
	}
	b.total++
	if refused {
		b.refusals++
		if !b.warnedRefuse {
			b.warnedRefuse = true
			h.log.WithFields(logrus.Fields{"handshakes": h.n.Load(), "max_handshakes": h.max}).Warn("handshakes in progress at their limit: refusing new connections")
		}
		return
	}
	b.retries++
	if !b.warnedRetry {
		b.warnedRetry = true
		h.log.WithFields(logrus.Fields{"handshakes": h.n.Load(), "retry_handshakes": h.retryAbove}).Warn("many handshakes in progress: new clients must prove their address (Retry)")
	}
}

// tick ends a logging period: a summary if the flood goes on, else its end.
func (h *handshakes) tick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	b := &h.burst
	if b.retries == 0 && b.refusals == 0 {
		h.log.WithFields(logrus.Fields{"handshakes": h.n.Load(), "retries_and_refusals": b.total,
			"duration": time.Since(b.start).Round(time.Second).String()}).Info("handshake flood over")
		h.timer = nil
		return
	}
	h.log.WithFields(logrus.Fields{"handshakes": h.n.Load(), "retries": b.retries, "refused": b.refusals,
		"period": h.logEvery.String()}).Warn("handshake flood goes on")
	b.retries, b.refusals = 0, 0
	h.timer.Reset(h.logEvery)
}

// stopLogging ends the flood's log lines for good (the server has stopped listening).
func (h *handshakes) stopLogging() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
}

// HandshakeCollector returns the server's handshake metrics, for a registry of the caller's:
// quicgate_handshakes_in_progress (gauge) and quicgate_handshake_limit_total (counter, label
// action: retry, for a Retry sent because of RetryHandshakes; refused, for a connection
// refused at MaxHandshakes, which quicgate_handshake_failures_total also counts as
// too_many_handshakes).
func (s *Server) HandshakeCollector() prometheus.Collector {
	labels := prometheus.Labels{"side": "server"}
	return handshakeCollector{
		h:        s.hs,
		progress: prometheus.NewDesc("quicgate_handshakes_in_progress", "QUIC handshakes in progress on the server (from the first Initial until completed, failed or timed out).", nil, labels),
		limit:    prometheus.NewDesc("quicgate_handshake_limit_total", "New connections the handshake limits acted on, by action: retry (a Retry sent because many handshakes were in progress), refused (at the maximum).", []string{"action"}, labels),
	}
}

type handshakeCollector struct {
	h               *handshakes
	progress, limit *prometheus.Desc
}

func (c handshakeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.progress
	ch <- c.limit
}

func (c handshakeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.progress, prometheus.GaugeValue, float64(c.h.inProgress()))
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.CounterValue, float64(c.h.retries.Load()), "retry")
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.CounterValue, float64(c.h.refusals.Load()), "refused")
}
