package congestion

import (
	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"
)

// quicgate patch: noneSender has no congestion window and does not pace. It is for a
// connection whose packet conn is congestion controlled itself and blocks while it is busy
// (a TCP stream): the conn's backpressure, not a window, limits what is in flight, so the
// stream always has data waiting, as an application writing to a TCP socket keeps it. A
// window of its own on top would leave the stream idle while the window waits for
// acknowledgements that the stream's own loss recovery delays.
type noneSender struct{}

var _ SendAlgorithmWithDebugInfos = noneSender{}

func newNoneSender(connStats *utils.ConnectionStats) noneSender {
	connStats.CongestionWindow.Store(0) // no window
	return noneSender{}
}

func (noneSender) TimeUntilSend(protocol.ByteCount) monotime.Time { return 0 }
func (noneSender) HasPacingBudget(monotime.Time) bool             { return true }
func (noneSender) OnPacketSent(monotime.Time, protocol.ByteCount, protocol.PacketNumber, protocol.ByteCount, bool) {
}
func (noneSender) CanSend(protocol.ByteCount) bool { return true }
func (noneSender) MaybeExitSlowStart()             {}
func (noneSender) OnPacketAcked(protocol.PacketNumber, protocol.ByteCount, protocol.ByteCount, monotime.Time) {
}
func (noneSender) OnCongestionEvent(protocol.PacketNumber, protocol.ByteCount, protocol.ByteCount) {}
func (noneSender) OnSpuriousLoss(protocol.PacketNumber)                                            {}
func (noneSender) OnRetransmissionTimeout(bool)                                                    {}
func (noneSender) SetMaxDatagramSize(protocol.ByteCount)                                           {}
func (noneSender) InSlowStart() bool                                                               { return false }
func (noneSender) InRecovery() bool                                                                { return false }
func (noneSender) GetCongestionWindow() protocol.ByteCount                                         { return protocol.MaxByteCount }
