package congestion

// quicgate patch: tests of BBR's windowed max filter and delivery-rate sampler.

import (
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"

	"github.com/stretchr/testify/require"
)

func TestMaxFilter(t *testing.T) {
	f := maxFilter{window: 10}
	f.Reset(0, 0)
	require.Equal(t, uint64(5), f.Update(1, 5))
	require.Equal(t, uint64(9), f.Update(2, 9))
	require.Equal(t, uint64(9), f.Update(3, 4), "a smaller value does not replace the maximum")
	for r := uint64(4); r <= 12; r++ {
		require.Equal(t, uint64(9), f.Update(r, 4), "round %d: 9 is still in the window", r)
	}
	// Round 13 is more than 10 rounds after the 9: it ages out, the best since remains.
	require.Equal(t, uint64(4), f.Update(13, 3))
	require.Equal(t, uint64(7), f.Update(14, 7))
}

func TestDeliverySamplerRate(t *testing.T) {
	s := newDeliverySampler()
	start := monotime.Time(time.Second)
	const size = 1000
	// Ten packets, one every millisecond, each acknowledged 40 ms after it was sent.
	for i := 0; i < 10; i++ {
		s.OnPacketSent(start.Add(time.Duration(i)*time.Millisecond), protocol.PacketNumber(i), size, protocol.ByteCount(i)*size)
	}
	var last rateSample
	for i := 0; i < 10; i++ {
		rs, ok := s.OnPacketAcked(start.Add(time.Duration(40+i)*time.Millisecond), protocol.PacketNumber(i), 0)
		require.True(t, ok)
		require.Equal(t, 40*time.Millisecond, rs.rtt)
		last = rs
	}
	// The last packet saw 10 packets delivered over the 40 ms since the first was sent ...
	require.True(t, last.valid)
	require.Equal(t, protocol.ByteCount(10*size), last.delivered)
	require.Equal(t, 49*time.Millisecond, last.interval)
	// ... and an interval shorter than the minimum RTT is no sample (ACK compression).
	s.OnPacketSent(start.Add(60*time.Millisecond), 10, size, 0)
	rs, ok := s.OnPacketAcked(start.Add(61*time.Millisecond), 10, 40*time.Millisecond)
	require.True(t, ok)
	require.False(t, rs.valid)
	_, ok = s.OnPacketAcked(start.Add(62*time.Millisecond), 10, 0)
	require.False(t, ok, "a packet is sampled once")
}

func TestDeliverySamplerAppLimitedAndLoss(t *testing.T) {
	s := newDeliverySampler()
	now := monotime.Time(time.Second)
	s.OnPacketSent(now, 1, 1000, 0)
	s.OnAppLimited(1000)
	s.OnPacketSent(now.Add(time.Millisecond), 2, 1000, 1000)
	s.OnPacketSent(now.Add(2*time.Millisecond), 4, 1000, 2000) // 3 was skipped or an ACK
	rs, _ := s.OnPacketAcked(now.Add(40*time.Millisecond), 1, 0)
	require.False(t, rs.isAppLimited, "sent before the mark")
	s.OnPacketLost(2)
	_, ok := s.OnPacketAcked(now.Add(41*time.Millisecond), 2, 0)
	require.False(t, ok, "a lost packet is forgotten")
	rs, ok = s.OnPacketAcked(now.Add(42*time.Millisecond), 4, 0)
	require.True(t, ok)
	require.True(t, rs.isAppLimited, "sent after the mark, before that flight was delivered")
	require.Zero(t, s.count, "nothing left in flight")
	// Packets quic-go dropped without telling (a discarded packet number space) age out.
	s.OnPacketSent(now.Add(50*time.Millisecond), 5, 1000, 0)
	s.DropOlderThan(now.Add(time.Second))
	require.Zero(t, s.count)
}
