package congestion

import (
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"

	"github.com/stretchr/testify/require"
)

// quicgate patch: a Cubic sender whose packets are larger than the pacer's default (a
// connection over a stream, 16,383-byte packets from the first, no path MTU discovery) gets
// pacing budget for a packet at a low rate: upstream's pacer, left at 1,280-byte packets,
// capped its burst below one packet and the connection never sent again.
func TestCubicSenderPacesLargePackets(t *testing.T) {
	const size = protocol.ByteCount(16383)
	var clock mockClock
	clock.Advance(time.Hour)
	rttStats := utils.RTTStats{}
	rttStats.UpdateRTT(200*time.Millisecond, 0) // a slow path: about 5 MB/s in slow start
	s := NewCubicSender(&clock, &rttStats, &utils.ConnectionStats{}, size, false, nil)
	now := monotime.Time(clock.Now())
	require.True(t, s.HasPacingBudget(now))
	for i := range 20 {
		s.OnPacketSent(now, protocol.ByteCount(i)*size, protocol.PacketNumber(i), size, true)
	}
	got := false
	for range 1000 { // up to a second
		clock.Advance(time.Millisecond)
		if s.HasPacingBudget(monotime.Time(clock.Now())) {
			got = true
			break
		}
	}
	require.True(t, got, "no pacing budget for a %d-byte packet within a second", size)
}
