package congestion

import (
	"math/rand/v2"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"
	"github.com/quicgate/quicgate/third_party/quic-go/qlog"
	"github.com/quicgate/quicgate/third_party/quic-go/qlogwriter"
)

// quicgate patch: BBR congestion control, version 1, written from
// draft-cardwell-iccrg-bbr-congestion-control-00 and Linux's net/ipv4/tcp_bbr.c (the
// BBR most Linux hosts run as "bbr"), including its ACK-aggregation allowance and its
// packet conservation during loss recovery.
//
// BBR models the path instead of reacting to each loss: BtlBw, the windowed maximum of
// the measured delivery rate over the last 10 round trips, and RTprop, the minimum RTT
// over the last 10 seconds. It paces at gain × BtlBw and caps data in flight at
// cwnd_gain × BtlBw × RTprop. Random loss does not shrink either estimate, so a lossy
// path keeps its rate, where loss-based controllers (Reno, Cubic) are held to the Mathis
// limit, MSS/RTT · 1.2/√p. The rest of the state machine keeps the queue it builds small
// and lets it yield to competing flows:
//
//   - Startup doubles the rate each round (gain 2/ln2) until the bandwidth stops
//     growing by 25 % for three rounds;
//   - Drain paces below the estimate until the queue Startup built is gone;
//   - ProbeBW cycles the pacing gain 1.25, 0.75, 1, 1, 1, 1, 1, 1, one RTprop each: it
//     probes for more bandwidth, drains what the probe queued, and cruises;
//   - ProbeRTT, when RTprop has not been refreshed for 10 s, holds half a BDP in flight
//     (version 1: 4 packets; half a BDP is BBRv3's) for 200 ms and a round so that the
//     queue drains and the true RTT shows.
//
// Why version 1 and not draft-ietf-ccwg-bbr (BBRv3): v3 bounds data in flight when a
// round sees more than 2 % loss. On the paths quicgate is for, random loss of a few
// percent is not congestion, and v3 would be held near that bound; v1's bound is the
// 2 × BDP window, and its queue is drained every cycle. See docs/performance.md.
type bbrSender struct {
	rttStats  *utils.RTTStats
	connStats *utils.ConnectionStats
	pacer     *pacer
	sampler   *deliverySampler
	rand      *rand.Rand
	qlogger   qlogwriter.Recorder
	lastState qlog.CongestionState

	maxDatagramSize protocol.ByteCount
	initialCwnd     protocol.ByteCount
	cwnd            protocol.ByteCount
	pacingRate      Bandwidth
	hasSeenRTT      bool

	mode        bbrMode
	pacingGain  float64
	cwndGain    float64
	btlBw       maxFilter // Bandwidth (bits per second), windowed over round trips
	minRTT      time.Duration
	minRTTStamp monotime.Time

	// round counting
	nextRoundDelivered protocol.ByteCount
	roundCount         uint64
	roundStart         bool

	// Startup's end: three rounds without 25 % more bandwidth, or a round of high loss
	fullBw        Bandwidth
	fullBwCount   int
	fullBwReached bool
	startupByLoss bool // Startup ended on loss, not on the bandwidth's plateau

	// loss in the current round (BBRv3's startup exit on high loss)
	roundLost       protocol.ByteCount
	roundDelivered  protocol.ByteCount
	roundLossEvents int
	lastLostPN      protocol.PacketNumber

	// ProbeBW
	cycleIndex int
	cycleStamp monotime.Time

	// ProbeRTT
	priorCwnd         protocol.ByteCount // cwnd when ProbeRTT began, restored after it
	probeRTTDoneStamp monotime.Time
	probeRTTRoundDone bool
	idleRestart       bool

	// Loss recovery, in packet-number terms (Chromium's BbrSender): recovery begins with a
	// loss and ends once a packet sent after the last loss is acknowledged by an ACK that
	// reports no new loss. Its first round conserves packets (one sent for each one
	// delivered); after that the recovery window grows like slow start. The window in
	// force is the smaller of cwnd and the recovery window.
	largestSent      protocol.PacketNumber
	recovery         bbrRecoveryState
	endRecoveryAt    protocol.PacketNumber // largest packet sent at the last loss
	conservationEnd  protocol.PacketNumber // largest packet sent when recovery began
	recoveryWindow   protocol.ByteCount
	lostSinceLastAck protocol.ByteCount
	bytesInFlight    protocol.ByteCount

	// ACK aggregation (Linux bbr_update_ack_aggregation): the most data delivered beyond
	// what BtlBw predicts, over the last 5-10 rounds, is added to cwnd so that bursty ACKs
	// (delayed, coalesced, GRO) do not leave the pipe empty.
	ackEpochStamp     monotime.Time
	ackEpochAcked     protocol.ByteCount
	extraAcked        [2]protocol.ByteCount
	extraAckedIdx     int
	extraAckedWinRTTs int
}

type bbrMode uint8

type bbrRecoveryState uint8

const (
	bbrNotInRecovery bbrRecoveryState = iota
	bbrConservation
	bbrGrowth
)

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

func (m bbrMode) String() string {
	switch m {
	case bbrStartup:
		return "startup"
	case bbrDrain:
		return "drain"
	case bbrProbeBW:
		return "probe_bw"
	case bbrProbeRTT:
		return "probe_rtt"
	}
	return "unknown"
}

const (
	bbrHighGain          = 2.885 // 2/ln(2): doubles the delivery rate every round
	bbrDrainGain         = 1 / bbrHighGain
	bbrCwndGain          = 2.0
	bbrBtlBwFilterRounds = 10
	bbrMinRTTWindow      = 10 * time.Second
	bbrProbeRTTTime      = 200 * time.Millisecond
	bbrMinCwndPackets    = 4
	bbrProbeRTTCwndGain  = 0.5
	bbrFullBwThresh      = 1.25
	bbrFullBwRounds      = 3
	// Startup also ends after a round in which more than bbrStartupLossThresh of the data
	// was lost, in at least bbrStartupLossEvents separate losses (draft-ietf-ccwg-bbr,
	// BBRCheckStartupHighLoss, with BBRStartupFullLossCnt = 6). The draft's threshold is
	// 2 %; here it is 10 %, above the random loss quicgate is meant to carry at full rate
	// (a few percent) and below what Startup's 2.89 × overshoot into a queue of one BDP
	// loses (about 30 %).
	bbrStartupLossThresh = 0.10
	bbrStartupLossEvents = 6
	bbrPacingMargin      = 0.99 // pace 1 % below the estimate, to drain queues slowly
	bbrCycleLen          = 8
	// ACK aggregation: windows of 5 rounds, at most 100 ms of data, epochs of at most 2^20
	// packets (Linux's bbr_ack_epoch_acked_reset_thresh)
	bbrExtraAckedWinRounds  = 5
	bbrExtraAckedMaxTime    = 100 * time.Millisecond
	bbrAckEpochResetPackets = 1 << 20
)

var bbrPacingGainCycle = [bbrCycleLen]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

var (
	_ SendAlgorithm               = &bbrSender{}
	_ SendAlgorithmWithDebugInfos = &bbrSender{}
)

// NewBBRSender makes a BBR sender.
func NewBBRSender(
	clock Clock,
	rttStats *utils.RTTStats,
	connStats *utils.ConnectionStats,
	initialMaxDatagramSize protocol.ByteCount,
	qlogger qlogwriter.Recorder,
) *bbrSender {
	return newBBRSender(clock, rttStats, connStats, initialMaxDatagramSize, initialCongestionWindow*initialMaxDatagramSize, rand.Uint64(), qlogger)
}

func newBBRSender(
	clock Clock,
	rttStats *utils.RTTStats,
	connStats *utils.ConnectionStats,
	initialMaxDatagramSize, initialCwnd protocol.ByteCount,
	seed uint64,
	qlogger qlogwriter.Recorder,
) *bbrSender {
	b := &bbrSender{
		rttStats:        rttStats,
		connStats:       connStats,
		pacer:           newPacer(),
		sampler:         newDeliverySampler(),
		rand:            rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		qlogger:         qlogger,
		maxDatagramSize: initialMaxDatagramSize,
		initialCwnd:     initialCwnd,
		cwnd:            initialCwnd,
		btlBw:           maxFilter{window: bbrBtlBwFilterRounds},
		largestSent:     protocol.InvalidPacketNumber,
		endRecoveryAt:   protocol.InvalidPacketNumber,
		conservationEnd: protocol.InvalidPacketNumber,
		lastLostPN:      protocol.InvalidPacketNumber,
		minRTTStamp:     clock.Now(),
	}
	b.pacer.SetMaxDatagramSize(initialMaxDatagramSize)
	b.enterStartup()
	b.initPacingRate()
	b.publish()
	if b.qlogger != nil {
		b.lastState = qlog.CongestionStateSlowStart
		b.qlogger.RecordEvent(qlog.CongestionStateUpdated{State: qlog.CongestionStateSlowStart})
	}
	return b
}

// --- SendAlgorithm ---

func (b *bbrSender) TimeUntilSend(protocol.ByteCount) monotime.Time {
	return b.pacer.TimeUntilSend(b.pacingRate)
}

func (b *bbrSender) HasPacingBudget(now monotime.Time) bool {
	return b.pacer.Budget(now, b.pacingRate) >= b.maxDatagramSize
}

func (b *bbrSender) CanSend(bytesInFlight protocol.ByteCount) bool {
	return bytesInFlight < b.GetCongestionWindow()
}

func (b *bbrSender) OnPacketSent(sentTime monotime.Time, bytesInFlight protocol.ByteCount, pn protocol.PacketNumber, bytes protocol.ByteCount, isRetransmittable bool) {
	b.pacer.SentPacket(sentTime, bytes, b.pacingRate)
	if !isRetransmittable {
		return
	}
	b.largestSent = pn
	prior := bytesInFlight - bytes
	if prior == 0 && b.sampler.appLimited != 0 {
		b.onIdleRestart(sentTime)
	}
	b.bytesInFlight = bytesInFlight
	b.sampler.OnPacketSent(sentTime, pn, bytes, prior)
}

// OnAppLimited is called when the sender could send (window and pacing allow) but has
// nothing to send: rate samples until this flight is delivered do not lower BtlBw.
func (b *bbrSender) OnAppLimited(bytesInFlight protocol.ByteCount) {
	b.sampler.OnAppLimited(bytesInFlight)
}

func (b *bbrSender) MaybeExitSlowStart() {}

func (b *bbrSender) OnPacketAcked(pn protocol.PacketNumber, ackedBytes, _ protocol.ByteCount, now monotime.Time) {
	priorInFlight := b.bytesInFlight
	b.bytesInFlight = max(b.bytesInFlight, ackedBytes) - ackedBytes
	if rs, ok := b.sampler.OnPacketAcked(now, pn, b.minRTT); ok {
		b.updateModel(rs, priorInFlight, ackedBytes, now)
	} else {
		// Not tracked any more (its state was dropped as too old): it was delivered all
		// the same.
		b.sampler.OnUntrackedAck(now, ackedBytes)
		b.roundStart = false
	}
	b.onRecoveryAck(pn, ackedBytes)
	b.setPacingRate(b.pacingGain)
	b.setCwnd(ackedBytes)
	b.lostSinceLastAck = 0
	if pto := b.rttStats.PTO(true); pto > 0 {
		b.sampler.DropOlderThan(now.Add(-3 * pto))
	}
	b.publish()
}

func (b *bbrSender) OnCongestionEvent(pn protocol.PacketNumber, lostBytes, _ protocol.ByteCount) {
	if lostBytes == 0 {
		return // an ECN mark: BBRv1 does not react to ECN
	}
	b.connStats.PacketsLost.Add(1)
	b.connStats.BytesLost.Add(uint64(lostBytes))
	b.sampler.OnPacketLost(pn)
	b.bytesInFlight = max(b.bytesInFlight, lostBytes) - lostBytes
	b.lostSinceLastAck += lostBytes
	b.roundLost += lostBytes
	if pn != b.lastLostPN+1 {
		b.roundLossEvents++
	}
	b.lastLostPN = pn
	b.endRecoveryAt = b.largestSent
	if b.recovery == bbrNotInRecovery {
		b.recovery = bbrConservation
		// What is in flight now (this loss taken off), so that a loss the loss timer
		// found holds the sender back before the next ACK comes.
		b.recoveryWindow = max(b.bytesInFlight, b.minCwnd())
		// The conservation phase lasts a whole round: until a packet sent from now on is
		// acknowledged. (Round counting starts one now too, as Chromium's does.)
		b.conservationEnd = b.largestSent
		b.nextRoundDelivered = b.sampler.delivered
		b.maybeQlogStateChange(qlog.CongestionStateRecovery)
		return
	}
	b.recoveryWindow = max(b.recoveryWindow, lostBytes+b.minCwnd()) - lostBytes
}

// onRecoveryAck moves the recovery state on an acknowledged packet and sizes the
// recovery window: one packet sent for each delivered in the conservation round, one
// more for each delivered after it, never less than what this ACK freed.
func (b *bbrSender) onRecoveryAck(pn protocol.PacketNumber, acked protocol.ByteCount) {
	if b.recovery == bbrNotInRecovery {
		return
	}
	if b.recovery == bbrConservation && pn > b.conservationEnd {
		b.recovery = bbrGrowth
	}
	if b.lostSinceLastAck == 0 && pn > b.endRecoveryAt {
		b.recovery = bbrNotInRecovery
		b.recoveryWindow = 0
		if b.mode == bbrStartup {
			b.maybeQlogStateChange(qlog.CongestionStateSlowStart)
		} else {
			b.maybeQlogStateChange(qlog.CongestionStateCongestionAvoidance)
		}
		return
	}
	if b.recovery == bbrGrowth {
		b.recoveryWindow = min(b.recoveryWindow+acked, protocol.MaxCongestionWindowPackets*b.maxDatagramSize)
	}
	b.recoveryWindow = max(b.recoveryWindow, b.bytesInFlight+acked, b.minCwnd())
}

func (b *bbrSender) OnSpuriousLoss(protocol.PacketNumber) {}

// OnRetransmissionTimeout: quic-go v0.65 does not call it (it has no persistent-congestion
// signal, for any controller); should it, BBR falls back to the minimum window and measures
// again, as Linux BBR does after an RTO.
func (b *bbrSender) OnRetransmissionTimeout(packetsRetransmitted bool) {
	if !packetsRetransmitted {
		return
	}
	b.cwnd = b.minCwnd()
	b.fullBw = 0
	b.fullBwCount = 0
	b.publish()
}

func (b *bbrSender) SetMaxDatagramSize(s protocol.ByteCount) {
	atMin := b.cwnd <= b.minCwnd()
	b.maxDatagramSize = s
	if atMin || b.cwnd < b.minCwnd() {
		b.cwnd = b.minCwnd()
	}
	b.pacer.SetMaxDatagramSize(s)
}

func (b *bbrSender) InSlowStart() bool { return b.mode == bbrStartup }
func (b *bbrSender) InRecovery() bool  { return b.recovery != bbrNotInRecovery }

// GetCongestionWindow is the window in force: cwnd, held to half a BDP in ProbeRTT and to
// the recovery window in recovery.
func (b *bbrSender) GetCongestionWindow() protocol.ByteCount {
	if b.mode == bbrProbeRTT {
		return min(b.cwnd, b.probeRTTCwnd())
	}
	if b.recovery != bbrNotInRecovery {
		return min(b.cwnd, b.recoveryWindow)
	}
	return b.cwnd
}

// BandwidthEstimate is BtlBw.
func (b *bbrSender) BandwidthEstimate() Bandwidth { return Bandwidth(b.btlBw.Get()) }

// --- the model ---

func (b *bbrSender) updateModel(rs rateSample, priorInFlight, acked protocol.ByteCount, now monotime.Time) {
	b.updateBtlBw(rs)
	b.updateRoundLoss(acked)
	b.updateAckAggregation(rs, acked, now)
	b.updateCyclePhase(priorInFlight, now)
	b.checkFullBwReached(rs)
	b.checkDrain(now)
	b.updateMinRTT(rs, now)
	b.updateGains()
}

func (b *bbrSender) updateBtlBw(rs rateSample) {
	b.roundStart = false
	if !rs.valid {
		return
	}
	if rs.priorDelivered >= b.nextRoundDelivered {
		b.nextRoundDelivered = b.sampler.delivered
		b.roundCount++
		b.roundStart = true
	}
	if !rs.isAppLimited || uint64(rs.rate) >= b.btlBw.Get() {
		b.btlBw.Update(b.roundCount, uint64(rs.rate))
	}
}

func (b *bbrSender) updateAckAggregation(rs rateSample, acked protocol.ByteCount, now monotime.Time) {
	if !rs.valid || acked == 0 {
		return
	}
	if b.roundStart {
		b.extraAckedWinRTTs++
		if b.extraAckedWinRTTs >= bbrExtraAckedWinRounds {
			b.extraAckedWinRTTs = 0
			b.extraAckedIdx ^= 1
			b.extraAcked[b.extraAckedIdx] = 0
		}
	}
	expected := bdpBytes(b.BandwidthEstimate(), now.Sub(b.ackEpochStamp), 1)
	if b.ackEpochAcked <= expected || b.ackEpochAcked+acked >= bbrAckEpochResetPackets*b.maxDatagramSize {
		// ACKs arrive no faster than BtlBw (or the epoch is long): start a new epoch.
		b.ackEpochAcked = 0
		b.ackEpochStamp = now
		expected = 0
	}
	b.ackEpochAcked += acked
	extra := min(b.ackEpochAcked-expected, b.cwnd)
	if extra > b.extraAcked[b.extraAckedIdx] {
		b.extraAcked[b.extraAckedIdx] = extra
	}
}

func (b *bbrSender) aggregationCwnd() protocol.ByteCount {
	if !b.fullBwReached {
		return 0
	}
	return min(max(b.extraAcked[0], b.extraAcked[1]), bdpBytes(b.BandwidthEstimate(), bbrExtraAckedMaxTime, 1))
}

func (b *bbrSender) updateCyclePhase(priorInFlight protocol.ByteCount, now monotime.Time) {
	if b.mode != bbrProbeBW || !b.isNextCyclePhase(priorInFlight, now) {
		return
	}
	b.advanceCyclePhase(now)
}

func (b *bbrSender) isNextCyclePhase(priorInFlight protocol.ByteCount, now monotime.Time) bool {
	fullLength := now.Sub(b.cycleStamp) > b.minRTT
	switch {
	case b.pacingGain == 1:
		return fullLength
	case b.pacingGain > 1:
		// Probe until the pipe holds gain × BDP, or a loss says there is no more room.
		return fullLength && (b.lostSinceLastAck > 0 || priorInFlight >= b.inflight(b.pacingGain))
	default:
		// Drain until the queue the probe built is gone (or a full phase passed).
		return fullLength || priorInFlight <= b.inflight(1)
	}
}

func (b *bbrSender) advanceCyclePhase(now monotime.Time) {
	b.cycleIndex = (b.cycleIndex + 1) % bbrCycleLen
	b.cycleStamp = now
}

// updateRoundLoss ends Startup after a round of high loss: a Startup that cannot see the
// bandwidth's plateau (its samples are application-limited because the sender's supply
// cannot keep up with Startup's pacing, as when the data comes from a paced TCP hop)
// would otherwise overfill the bottleneck for as long as the transfer lasts.
func (b *bbrSender) updateRoundLoss(acked protocol.ByteCount) {
	if b.roundStart {
		if b.mode == bbrStartup && !b.fullBwReached && b.roundLossEvents >= bbrStartupLossEvents &&
			float64(b.roundLost) > bbrStartupLossThresh*float64(b.roundLost+b.roundDelivered) {
			b.fullBwReached = true
			b.startupByLoss = true
		}
		b.roundLost, b.roundDelivered, b.roundLossEvents = 0, 0, 0
	}
	b.roundDelivered += acked
}

func (b *bbrSender) checkFullBwReached(rs rateSample) {
	if b.fullBwReached || !b.roundStart || rs.isAppLimited {
		return
	}
	bw := b.BandwidthEstimate()
	if float64(bw) >= float64(b.fullBw)*bbrFullBwThresh {
		b.fullBw = bw
		b.fullBwCount = 0
		return
	}
	b.fullBwCount++
	b.fullBwReached = b.fullBwCount >= bbrFullBwRounds
}

func (b *bbrSender) checkDrain(now monotime.Time) {
	if b.mode == bbrStartup && b.fullBwReached {
		b.mode = bbrDrain
		b.maybeQlogStateChange(qlog.CongestionStateCongestionAvoidance)
	}
	if b.mode == bbrDrain && b.bytesInFlight <= b.inflight(1) {
		b.enterProbeBW(now)
	}
}

func (b *bbrSender) updateMinRTT(rs rateSample, now monotime.Time) {
	expired := now.Sub(b.minRTTStamp) > bbrMinRTTWindow
	if rs.rtt > 0 && (b.minRTT == 0 || rs.rtt < b.minRTT || expired) {
		b.minRTT = rs.rtt
		b.minRTTStamp = now
	}
	if expired && !b.idleRestart && b.mode != bbrProbeRTT {
		b.mode = bbrProbeRTT
		b.priorCwnd = b.cwnd
		b.probeRTTDoneStamp = 0
		b.maybeQlogStateChange(qlog.CongestionStateCongestionAvoidance)
	}
	if b.mode == bbrProbeRTT {
		// Samples taken while inflight is held down say nothing about the bandwidth.
		b.sampler.OnAppLimited(b.bytesInFlight)
		if b.probeRTTDoneStamp.IsZero() && b.bytesInFlight <= b.probeRTTCwnd() {
			b.probeRTTDoneStamp = now.Add(bbrProbeRTTTime)
			b.probeRTTRoundDone = false
			b.nextRoundDelivered = b.sampler.delivered
		} else if !b.probeRTTDoneStamp.IsZero() {
			if b.roundStart {
				b.probeRTTRoundDone = true
			}
			if b.probeRTTRoundDone {
				b.checkProbeRTTDone(now)
			}
		}
	}
	if rs.delivered > 0 {
		b.idleRestart = false
	}
}

func (b *bbrSender) checkProbeRTTDone(now monotime.Time) {
	if b.probeRTTDoneStamp.IsZero() || now.Before(b.probeRTTDoneStamp) {
		return
	}
	b.minRTTStamp = now // no need to probe again for another 10 s
	b.cwnd = max(b.cwnd, b.priorCwnd)
	if b.fullBwReached {
		b.enterProbeBW(now)
	} else {
		b.enterStartup()
	}
}

func (b *bbrSender) updateGains() {
	switch b.mode {
	case bbrStartup:
		b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
	case bbrDrain:
		b.pacingGain, b.cwndGain = bbrDrainGain, bbrHighGain
	case bbrProbeBW:
		b.pacingGain, b.cwndGain = bbrPacingGainCycle[b.cycleIndex], bbrCwndGain
	case bbrProbeRTT:
		b.pacingGain, b.cwndGain = 1, 1
	}
}

func (b *bbrSender) enterStartup() {
	b.mode = bbrStartup
	b.updateGains()
	b.maybeQlogStateChange(qlog.CongestionStateSlowStart)
}

func (b *bbrSender) enterProbeBW(now monotime.Time) {
	b.mode = bbrProbeBW
	// Start at a random phase other than the draining one (Linux: cycle_idx =
	// CYCLE_LEN - 1 - rand(7), then one advance).
	b.cycleIndex = bbrCycleLen - 1 - b.rand.IntN(bbrCycleLen-1)
	b.advanceCyclePhase(now)
	b.updateGains()
	b.maybeQlogStateChange(qlog.CongestionStateCongestionAvoidance)
}

func (b *bbrSender) onIdleRestart(now monotime.Time) {
	b.idleRestart = true
	b.ackEpochStamp = now
	b.ackEpochAcked = 0
	switch b.mode {
	case bbrProbeBW:
		b.setPacingRate(1)
	case bbrProbeRTT:
		b.checkProbeRTTDone(now)
	}
}

// --- pacing and window ---

func (b *bbrSender) initPacingRate() {
	rtt := b.rttStats.SmoothedRTT()
	if rtt <= 0 {
		rtt = utils.DefaultInitialRTT
	}
	b.pacingRate = Bandwidth(bbrHighGain * float64(BandwidthFromDelta(b.cwnd, rtt)))
}

func (b *bbrSender) setPacingRate(gain float64) {
	if !b.hasSeenRTT && b.minRTT > 0 {
		b.hasSeenRTT = true
		b.initPacingRate()
	}
	bw := b.BandwidthEstimate()
	if bw == 0 {
		return
	}
	rate := Bandwidth(float64(bw) * gain * bbrPacingMargin)
	if b.fullBwReached || rate > b.pacingRate {
		b.pacingRate = rate
	}
}

func (b *bbrSender) setCwnd(acked protocol.ByteCount) {
	cwnd := b.cwnd
	if acked > 0 {
		target := b.inflight(b.cwndGain) + b.aggregationCwnd()
		if b.fullBwReached {
			cwnd = min(cwnd+acked, target)
		} else if cwnd < target || b.sampler.delivered < b.initialCwnd {
			cwnd += acked
		}
	}
	b.cwnd = min(max(cwnd, b.minCwnd()), protocol.MaxCongestionWindowPackets*b.maxDatagramSize)
}

// inflight is the data in flight the model wants at a gain: gain × BDP plus room for the
// send quantum (Linux's bbr_inflight with bbr_quantization_budget).
func (b *bbrSender) inflight(gain float64) protocol.ByteCount {
	if b.minRTT == 0 {
		return b.initialCwnd
	}
	w := bdpBytes(b.BandwidthEstimate(), b.minRTT, gain)
	w += 3 * b.sendQuantum()
	if b.mode == bbrProbeBW && b.cycleIndex == 0 {
		w += 2 * b.maxDatagramSize
	}
	return w
}

// sendQuantum is the data sent in one burst: the pacer's burst at the current rate (1 ms),
// at least two packets and at most 64 KiB, as a GSO batch.
func (b *bbrSender) sendQuantum() protocol.ByteCount {
	q := bdpBytes(b.pacingRate, time.Millisecond, 1)
	return min(max(q, 2*b.maxDatagramSize), 64<<10)
}

func (b *bbrSender) minCwnd() protocol.ByteCount { return bbrMinCwndPackets * b.maxDatagramSize }

// probeRTTCwnd is the window in ProbeRTT: half a BDP, as in draft-ietf-ccwg-bbr
// (BBRProbeRTTCwndGain = 0.5), not version 1's 4 packets. Half a BDP in flight leaves the
// bottleneck's queue empty just as well, so the RTT still shows without a queue, and the
// flow keeps half its rate for those 200 ms instead of almost none: on a path whose RTT
// never drops below its minimum (no jitter to refresh it) ProbeRTT comes every 10 s, and
// at 4 packets it cost about 3 % of the throughput.
func (b *bbrSender) probeRTTCwnd() protocol.ByteCount {
	return max(b.minCwnd(), bdpBytes(b.BandwidthEstimate(), b.minRTT, bbrProbeRTTCwndGain))
}

func bdpBytes(bw Bandwidth, d time.Duration, gain float64) protocol.ByteCount {
	if d <= 0 {
		return 0
	}
	return protocol.ByteCount(gain * float64(bw) / float64(BytesPerSecond) * d.Seconds())
}

// publish makes the model visible to Conn.ConnectionStats.
func (b *bbrSender) publish() {
	b.connStats.CongestionWindow.Store(uint64(b.GetCongestionWindow()))
	b.connStats.BandwidthEstimate.Store(uint64(b.BandwidthEstimate()))
	b.connStats.PacingRate.Store(uint64(b.pacingRate))
}

func (b *bbrSender) maybeQlogStateChange(s qlog.CongestionState) {
	if b.qlogger == nil || s == b.lastState {
		return
	}
	b.qlogger.RecordEvent(qlog.CongestionStateUpdated{State: s})
	b.lastState = s
}
