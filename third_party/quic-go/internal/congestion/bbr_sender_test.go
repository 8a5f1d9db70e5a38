package congestion

// quicgate patch: tests of the BBR sender against the simulated link of bbr_sim_test.go.
// Everything runs on the simulated clock: the results are the same on every machine.

import (
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"

	"github.com/stretchr/testify/require"
)

// The profile the WAN benchmark uses: 100 Mbit/s, 40 ms, a queue of one BDP.
func wanLink(loss float64) simLinkParams {
	return simLinkParams{rate: 100e6, rtt: 40 * time.Millisecond, buffer: 500_000, loss: loss, ackLoss: loss}
}

const wanBDP protocol.ByteCount = 500_000 // 100 Mbit/s × 40 ms

// modeLog records the mode after every ACK, and when each mode was entered.
type modeLog struct {
	modes    []bbrMode
	times    []time.Duration
	rounds   []uint64
	inFlight []protocol.ByteCount // when the mode was entered
}

func watchModes(s *sim, f *simFlow) *modeLog {
	b := f.cc.(*bbrSender)
	l := &modeLog{}
	f.onAck = func() {
		if n := len(l.modes); n == 0 || l.modes[n-1] != b.mode {
			l.modes = append(l.modes, b.mode)
			l.times = append(l.times, time.Duration(s.clock.now))
			l.rounds = append(l.rounds, b.roundCount)
			l.inFlight = append(l.inFlight, f.inFlight)
		}
	}
	return l
}

func TestBBRStartupDrainProbeBW(t *testing.T) {
	s := newSim(wanLink(0), 1)
	f := s.addFlow(simBBR(1))
	b := f.cc.(*bbrSender)
	modes := watchModes(s, f)
	s.run(2 * time.Second)

	require.Equal(t, []bbrMode{bbrStartup, bbrDrain, bbrProbeBW}, modes.modes)
	require.True(t, b.fullBwReached)
	// Startup doubles the rate every round: from 32 packets to 100 Mbit/s is about
	// log2(8600 pkt/s × 40 ms / 32) ≈ 3.4 rounds, then three rounds without growth.
	require.LessOrEqual(t, modes.rounds[2], uint64(12), "rounds to leave startup and drain")
	require.InDelta(t, 100, mbit(b.BandwidthEstimate()), 3, "BtlBw")
	require.InDelta(t, 40, b.minRTT.Seconds()*1000, 1, "RTprop in ms")
	// Drain ends once no more than a BDP (plus the send quantum) is in flight.
	require.LessOrEqual(t, modes.inFlight[2], b.inflight(1))

	// ProbeBW cycles through all eight gains in order, about one RTprop each.
	var phases []int
	var stamps []time.Duration
	f.onAck = func() {
		if n := len(phases); n == 0 || phases[n-1] != b.cycleIndex {
			phases = append(phases, b.cycleIndex)
			stamps = append(stamps, time.Duration(s.clock.now))
		}
	}
	s.queueSum, s.queueSamples = 0, 0
	g := f.goodputOver(2 * time.Second)
	require.GreaterOrEqual(t, len(phases), 2*bbrCycleLen)
	for i := 1; i < len(phases); i++ {
		require.Equal(t, (phases[i-1]+1)%bbrCycleLen, phases[i], "phase order")
		// A phase at gain 1 or more lasts at least RTprop (the 0.75 phase may end as soon
		// as the queue is gone).
		if i < len(phases)-1 && bbrPacingGainCycle[phases[i]] >= 1 {
			require.GreaterOrEqual(t, stamps[i+1]-stamps[i], 40*time.Millisecond, "a phase lasts at least RTprop")
		}
	}
	require.Greater(t, mbit(g), 95.0, "goodput in ProbeBW")
	// BBR keeps the queue short: on average under a tenth of the buffer.
	require.Less(t, s.queueSum/protocol.ByteCount(s.queueSamples), wanBDP/10)
}

func TestBBRProbeRTT(t *testing.T) {
	s := newSim(wanLink(0), 1)
	f := s.addFlow(simBBR(1))
	b := f.cc.(*bbrSender)
	s.run(2 * time.Second)
	type episode struct {
		start, end  time.Duration
		maxInFlight protocol.ByteCount
		window      protocol.ByteCount
	}
	var eps []episode
	f.onAck = func() {
		now := time.Duration(s.clock.now)
		in := b.mode == bbrProbeRTT
		if in && (len(eps) == 0 || eps[len(eps)-1].end != 0) {
			eps = append(eps, episode{start: now})
		}
		if len(eps) > 0 && eps[len(eps)-1].end == 0 {
			e := &eps[len(eps)-1]
			if in {
				e.window = max(e.window, b.GetCongestionWindow())
				if !b.probeRTTDoneStamp.IsZero() {
					e.maxInFlight = max(e.maxInFlight, f.inFlight)
				}
			} else {
				e.end = now
			}
		}
	}
	g := f.goodputOver(25 * time.Second)
	// The link has no jitter, so no sample beats RTprop and it expires every 10 s.
	require.Len(t, eps, 2)
	require.InDelta(t, 10, (eps[1].start - eps[0].start).Seconds(), 0.5, "ProbeRTT every 10 s")
	for _, e := range eps {
		require.NotZero(t, e.end, "left ProbeRTT")
		require.GreaterOrEqual(t, e.end-e.start, bbrProbeRTTTime, "held at least 200 ms")
		require.Less(t, e.end-e.start, 400*time.Millisecond, "held no longer than drain + 200 ms + a round")
		// Half a BDP (draft-ietf-ccwg-bbr), from the RTT ProbeRTT re-measures (it starts
		// from the current sample, with some queue in it): below a BDP, so the queue drains,
		// and the pipe stays half full.
		require.GreaterOrEqual(t, e.window, wanBDP/2, "window in ProbeRTT")
		require.Less(t, e.window, wanBDP*3/4, "window in ProbeRTT")
		require.LessOrEqual(t, e.maxInFlight, e.window)
	}
	require.Equal(t, bbrProbeBW, b.mode)
	require.InDelta(t, 40, b.minRTT.Seconds()*1000, 1, "the queue drained: RTprop is the path's")
	// Two ProbeRTTs at half the rate cost about 1 % of 25 s.
	require.Greater(t, mbit(g), 95.0)
}

// TestBBRRandomLoss is the reason for BBR in quicgate: random loss does not collapse the
// rate, where it holds Reno and Cubic to the Mathis limit (the same simulated link shows
// both).
func TestBBRRandomLoss(t *testing.T) {
	for _, loss := range []float64{0.001, 0.01, 0.03} {
		s := newSim(wanLink(loss), 7)
		f := s.addFlow(simBBR(7))
		s.run(3 * time.Second)
		g := f.goodputOver(20 * time.Second)
		// The upper bound is the link less the lost share.
		require.Greater(t, mbit(g), 90*(1-loss), "BBR goodput at %.1f %% loss", loss*100)
		require.Greater(t, f.lostPackets, 0)
	}
	for _, reno := range []bool{true, false} {
		s := newSim(wanLink(0.01), 7)
		f := s.addFlow(simCubic(reno))
		s.run(3 * time.Second)
		require.Less(t, mbit(f.goodputOver(20*time.Second)), 10.0, "loss-based control at 1 %% loss (reno %t)", reno)
	}
}

// TestBBRRecovery drops every packet for 5 ms, then 1 % of them for a second: recovery
// conserves packets for a round (until a packet sent after it began is acknowledged), grows
// while the losses go on, and ends after a round without loss; the model is not touched.
func TestBBRRecovery(t *testing.T) {
	s := newSim(wanLink(0), 3)
	f := s.addFlow(simBBR(3))
	b := f.cc.(*bbrSender)
	s.run(3 * time.Second)
	require.Equal(t, bbrNotInRecovery, b.recovery)
	bw := b.BandwidthEstimate()

	type step struct {
		at            time.Duration
		state         bbrRecoveryState
		window        protocol.ByteCount
		priorInFlight protocol.ByteCount
	}
	var steps []step
	f.onAck = func() {
		steps = append(steps, step{time.Duration(s.clock.now), b.recovery, b.recoveryWindow, f.priorInFlight})
	}
	s.link.loss = 1
	s.run(5 * time.Millisecond)
	s.link.loss = 0.01
	s.run(time.Second)
	s.link.loss = 0
	s.run(time.Second)

	var states []bbrRecoveryState
	var since []time.Duration
	for _, st := range steps {
		if len(states) == 0 || states[len(states)-1] != st.state {
			states = append(states, st.state)
			since = append(since, st.at)
		}
	}
	// The first recovery; 1 % loss may leave a round without loss now and then, which ends
	// a recovery, and the next loss begins another.
	require.GreaterOrEqual(t, len(states), 4)
	require.Equal(t, []bbrRecoveryState{bbrNotInRecovery, bbrConservation, bbrGrowth, bbrNotInRecovery}, states[:4])
	require.Equal(t, bbrNotInRecovery, b.recovery, "recovery ends once the losses stop")
	// Conservation lasts a round: the first packet sent after it began is acknowledged a
	// round trip (40 ms) later at the earliest.
	require.GreaterOrEqual(t, since[2]-since[1], 40*time.Millisecond, "conservation lasts a round")
	require.Less(t, since[2]-since[1], 100*time.Millisecond, "and about one")
	var entryInFlight, consWindowMax, growthWindowMax protocol.ByteCount
	for _, st := range steps {
		if st.at >= since[3] {
			break // the first recovery only
		}
		switch st.state {
		case bbrConservation:
			if entryInFlight == 0 {
				entryInFlight = st.priorInFlight
			}
			// One packet out for each one delivered: what is in flight does not grow.
			require.LessOrEqual(t, st.priorInFlight, entryInFlight+2*simPacketSize)
			consWindowMax = max(consWindowMax, st.window)
		case bbrGrowth:
			growthWindowMax = max(growthWindowMax, st.window)
		}
	}
	require.Greater(t, growthWindowMax, consWindowMax, "the recovery window grows after conservation")
	require.InEpsilon(t, float64(bw), float64(b.BandwidthEstimate()), 0.03, "losses do not change BtlBw")
	require.Greater(t, mbit(f.goodputOver(time.Second)), 95.0)
}

// TestBBRSharesWithBBR: two BBR flows on one bottleneck converge to equal shares.
func TestBBRSharesWithBBR(t *testing.T) {
	for _, buf := range []protocol.ByteCount{wanBDP / 2, wanBDP, 4 * wanBDP} {
		link := wanLink(0)
		link.buffer = buf
		s := newSim(link, 5)
		a := s.addFlow(simBBR(1))
		s.run(2 * time.Second)
		b := s.addFlow(simBBR(2)) // a latecomer
		s.run(10 * time.Second)
		ra, rb := a.receivedBytes, b.receivedBytes
		s.run(30 * time.Second)
		ga, gb := float64(a.receivedBytes-ra), float64(b.receivedBytes-rb)
		share := gb / (ga + gb)
		require.InDelta(t, 0.5, share, 0.15, "the latecomer's share, buffer %d", buf)
		require.Greater(t, mbit(BandwidthFromDelta(protocol.ByteCount(ga+gb), 30*time.Second)), 90.0)
	}
}

// TestBBRWithCubic: against a loss-based flow BBR version 1 behaves as Linux's bbr does:
// in a shallow buffer it keeps most of the link (Cubic backs off on the drops BBR's
// 2 × BDP window causes), in a deep one Cubic fills the queue and takes most. Neither is
// starved, and the link stays full.
func TestBBRWithCubic(t *testing.T) {
	for _, tc := range []struct {
		buf              protocol.ByteCount
		minCubic, maxBBR float64
	}{
		{wanBDP, 0.05, 0.95},
		{4 * wanBDP, 0.40, 0.60},
	} {
		link := wanLink(0)
		link.buffer = tc.buf
		s := newSim(link, 9)
		a := s.addFlow(simBBR(1))
		c := s.addFlow(simCubic(false))
		s.run(10 * time.Second)
		ra, rc := a.receivedBytes, c.receivedBytes
		s.run(60 * time.Second)
		ga, gc := float64(a.receivedBytes-ra), float64(c.receivedBytes-rc)
		require.Greater(t, gc/(ga+gc), tc.minCubic, "Cubic's share, buffer %d", tc.buf)
		require.Less(t, ga/(ga+gc), tc.maxBBR, "BBR's share, buffer %d", tc.buf)
		require.Greater(t, mbit(BandwidthFromDelta(protocol.ByteCount(ga+gc), 60*time.Second)), 90.0)
	}
}

// TestBBRBottleneckShrinks: when the bottleneck drops to a fifth, BBR overloads it only
// until the old BtlBw leaves its 10-round window, then keeps the queue short again.
func TestBBRBottleneckShrinks(t *testing.T) {
	s := newSim(wanLink(0), 11)
	f := s.addFlow(simBBR(11))
	b := f.cc.(*bbrSender)
	s.run(3 * time.Second)
	s.setRate(20e6)
	start := b.roundCount
	for b.BandwidthEstimate() > 22e6 {
		s.run(10 * time.Millisecond)
		require.Less(t, time.Duration(s.clock.now), 10*time.Second)
	}
	rounds := b.roundCount - start
	require.LessOrEqual(t, rounds, uint64(bbrBtlBwFilterRounds+2), "rounds until BtlBw follows the new rate")
	s.run(2 * time.Second) // a ProbeBW cycle or two
	drops := f.queueDrops
	s.queueSum, s.queueSamples = 0, 0
	g := f.goodputOver(5 * time.Second)
	require.InDelta(t, 20, mbit(g), 1.5)
	require.Zero(t, f.queueDrops-drops, "no drops once the model follows")
	require.Less(t, s.queueSum/protocol.ByteCount(s.queueSamples), wanBDP/4)
}

// TestBBRAppLimited: while the application sends less than the path carries, samples do
// not lower BtlBw, so a bulk transfer afterwards starts at full rate.
func TestBBRAppLimited(t *testing.T) {
	s := newSim(wanLink(0), 13)
	f := s.addFlow(simBBR(13))
	b := f.cc.(*bbrSender)
	s.run(3 * time.Second)
	require.InDelta(t, 100, mbit(b.BandwidthEstimate()), 3)

	f.appRate = 10e6
	g := f.goodputOver(5 * time.Second)
	require.InDelta(t, 10, mbit(g), 1)
	require.InDelta(t, 100, mbit(b.BandwidthEstimate()), 3, "app-limited samples kept out of BtlBw")

	f.appRate = 0
	s.after(0, f.trySend)
	require.Greater(t, mbit(f.goodputOver(500*time.Millisecond)), 90.0, "bulk after app-limited")

	// Without the app-limited mark the estimate would follow the application's rate down:
	// the mark is what the test above depends on.
	s2 := newSim(wanLink(0), 13)
	f2 := s2.addFlow(func(c Clock, r *utils.RTTStats, st *utils.ConnectionStats) SendAlgorithmWithDebugInfos {
		return noAppLimited{newBBRSender(c, r, st, simPacketSize, initialCongestionWindow*simPacketSize, 13, nil)}
	})
	s2.run(3 * time.Second)
	f2.appRate = 10e6
	s2.run(5 * time.Second)
	require.Less(t, mbit(f2.cc.(noAppLimited).BandwidthEstimate()), 20.0)
}

// noAppLimited hides OnAppLimited.
type noAppLimited struct{ *bbrSender }

func (noAppLimited) OnAppLimited() {}

func TestBBRIdleRestart(t *testing.T) {
	s := newSim(wanLink(0), 17)
	f := s.addFlow(simBBR(17))
	b := f.cc.(*bbrSender)
	s.run(3 * time.Second)
	require.Equal(t, bbrProbeBW, b.mode)
	f.stopped = true
	s.run(time.Second) // everything delivered; the flow is idle
	require.Zero(t, f.inFlight)
	f.stopped = false
	s.after(0, f.trySend)
	s.run(time.Microsecond)
	// The first flight after idle is paced at BtlBw, not at a probing gain.
	require.True(t, b.idleRestart)
	require.InDelta(t, float64(b.BandwidthEstimate())*bbrPacingMargin, float64(b.pacingRate), 1e3)
	require.Greater(t, mbit(f.goodputOver(time.Second)), 90.0)
}

// TestBBRStartupEndsOnHighLoss: when the application supplies data faster than the link
// carries but slower than Startup paces (its samples are application-limited, so the
// bandwidth's plateau never shows), Startup ends on the loss it causes.
func TestBBRStartupEndsOnHighLoss(t *testing.T) {
	s := newSim(wanLink(0), 19)
	f := s.addFlow(simBBR(19))
	f.appRate = 130e6
	b := f.cc.(*bbrSender)
	modes := watchModes(s, f)
	s.run(5 * time.Second)
	require.Equal(t, []bbrMode{bbrStartup, bbrDrain, bbrProbeBW}, modes.modes[:3])
	require.True(t, b.startupByLoss)
	require.Less(t, modes.times[1]-time.Duration(time.Second), 2*time.Second, "Startup ended within 2 s")
	drops, sent := f.queueDrops, f.sentPackets
	g := f.goodputOver(5 * time.Second)
	require.Greater(t, mbit(g), 90.0)
	require.Less(t, f.queueDrops-drops, (f.sentPackets-sent)/50, "under 2 %% of the packets dropped once in ProbeBW")
}

// TestBBRRandomLossDoesNotEndStartup: random loss of a few percent is no reason to leave
// Startup early (that would start ProbeBW from too low an estimate). With a queue of one BDP
// Startup's own overshoot may end it, but only once BtlBw is the link's rate; with a deep
// queue, where Startup drops nothing, the random loss alone never ends it.
func TestBBRRandomLossDoesNotEndStartup(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		for _, loss := range []float64{0.01, 0.03} {
			for _, buf := range []protocol.ByteCount{wanBDP, 8 * wanBDP} {
				link := wanLink(loss)
				link.buffer = buf
				s := newSim(link, seed)
				f := s.addFlow(simBBR(seed))
				b := f.cc.(*bbrSender)
				var bwAtExit Bandwidth
				f.onAck = func() {
					if bwAtExit == 0 && b.mode != bbrStartup {
						bwAtExit = b.BandwidthEstimate()
					}
				}
				s.run(4 * time.Second)
				require.True(t, b.fullBwReached, "seed %d, loss %.2f, buffer %d", seed, loss, buf)
				require.Greater(t, mbit(bwAtExit), 90.0, "seed %d, loss %.2f, buffer %d: BtlBw when Startup ended", seed, loss, buf)
				if buf > wanBDP {
					require.False(t, b.startupByLoss, "seed %d, loss %.2f: Startup ended on random loss", seed, loss)
				}
			}
		}
	}
}
