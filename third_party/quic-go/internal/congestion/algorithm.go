package congestion

import (
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"
	"github.com/quicgate/quicgate/third_party/quic-go/qlogwriter"
)

// quicgate patch: the congestion controller is chosen per connection.

// Algorithm names a congestion controller.
type Algorithm uint8

const (
	AlgReno Algorithm = iota // NewReno, quic-go's default
	AlgCubic
	AlgBBR
	AlgNone // no window and no pacing (none_sender.go)
)

// New makes the sender of an algorithm.
func New(
	alg Algorithm,
	clock Clock,
	rttStats *utils.RTTStats,
	connStats *utils.ConnectionStats,
	initialMaxDatagramSize protocol.ByteCount,
	qlogger qlogwriter.Recorder,
) SendAlgorithmWithDebugInfos {
	switch alg {
	case AlgBBR:
		return NewBBRSender(clock, rttStats, connStats, initialMaxDatagramSize, qlogger)
	case AlgNone:
		return newNoneSender(connStats)
	case AlgCubic:
		return NewCubicSender(clock, rttStats, connStats, initialMaxDatagramSize, false, qlogger)
	default:
		return NewCubicSender(clock, rttStats, connStats, initialMaxDatagramSize, true, qlogger)
	}
}

// AppLimitedNotifier is implemented by senders that need to know when the application,
// not the congestion window or the pacer, limits sending (BBR's delivery-rate samples).
type AppLimitedNotifier interface {
	OnAppLimited(bytesInFlight protocol.ByteCount)
}
