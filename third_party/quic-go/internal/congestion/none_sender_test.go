package congestion

import (
	"testing"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"

	"github.com/stretchr/testify/require"
)

// quicgate patch: AlgNone never holds a packet back, whatever is in flight or lost, and
// reports no window.
func TestNoneSender(t *testing.T) {
	stats := &utils.ConnectionStats{}
	stats.CongestionWindow.Store(12345)
	s := New(AlgNone, DefaultClock{}, &utils.RTTStats{}, stats, 1200, nil)
	require.Zero(t, stats.CongestionWindow.Load())
	now := monotime.Now()
	for i := range 1000 {
		require.True(t, s.CanSend(protocol.ByteCount(i)*1<<20))
		require.True(t, s.HasPacingBudget(now))
		require.Zero(t, s.TimeUntilSend(protocol.ByteCount(i)))
		s.OnPacketSent(now, protocol.ByteCount(i)*1200, protocol.PacketNumber(i), 1200, true)
		s.OnCongestionEvent(protocol.PacketNumber(i), 1200, protocol.ByteCount(i)*1200)
	}
	s.OnRetransmissionTimeout(true)
	require.True(t, s.CanSend(protocol.MaxByteCount-1))
	require.False(t, s.InSlowStart())
	require.False(t, s.InRecovery())
}
