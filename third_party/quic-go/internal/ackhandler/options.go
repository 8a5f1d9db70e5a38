package ackhandler

import "github.com/quicgate/quicgate/third_party/quic-go/internal/congestion"

// quicgate patch: options of NewSentPacketHandler (variadic, so that upstream's call sites
// and tests are unchanged).

// An Option configures a sent packet handler.
type Option func(*options)

type options struct {
	congestion congestion.Algorithm
}

// WithCongestion selects the congestion controller (default: NewReno).
func WithCongestion(alg congestion.Algorithm) Option {
	return func(o *options) { o.congestion = alg }
}
