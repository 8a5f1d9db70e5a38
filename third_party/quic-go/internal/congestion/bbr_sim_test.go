package congestion

// quicgate patch: a discrete-event simulation of senders sharing one bottleneck, to test
// congestion controllers against a simulated clock and link instead of wall time.
//
// The link has a rate, a tail-drop queue, a one-way propagation delay each way and
// independent random loss in each direction. Each flow's sender behaves as quic-go's sent
// packet handler does towards its congestion controller: it sends while CanSend and
// HasPacingBudget allow, detects losses by packet threshold (3) and time threshold
// (9/8 RTT) when ACKs arrive, reports them before the newly acknowledged packets, and
// keeps RTTStats. The receiver acknowledges every second packet, at once when a packet
// arrives out of order, else after 25 ms; an ACK covers every packet received so far, so
// a lost ACK is made up for by the next.

import (
	"container/heap"
	"math/rand/v2"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"
)

const simPacketSize protocol.ByteCount = 1452

type simClock struct{ now monotime.Time }

func (c *simClock) Now() monotime.Time { return c.now }

type simEvent struct {
	at  monotime.Time
	seq uint64
	fn  func()
}

type simEvents []*simEvent

func (e simEvents) Len() int { return len(e) }
func (e simEvents) Less(i, j int) bool {
	if e[i].at != e[j].at {
		return e[i].at < e[j].at
	}
	return e[i].seq < e[j].seq
}
func (e simEvents) Swap(i, j int) { e[i], e[j] = e[j], e[i] }
func (e *simEvents) Push(x any)   { *e = append(*e, x.(*simEvent)) }
func (e *simEvents) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// simLinkParams describe the bottleneck.
type simLinkParams struct {
	rate     Bandwidth     // bits per second
	rtt      time.Duration // two-way propagation delay
	buffer   protocol.ByteCount
	loss     float64 // random loss of data packets
	ackLoss  float64 // random loss of ACKs
	ackDelay time.Duration
}

type sim struct {
	clock  simClock
	events simEvents
	seq    uint64
	rng    *rand.Rand
	link   simLinkParams

	busyUntil monotime.Time // when the bottleneck has sent what is queued
	flows     []*simFlow

	// queue statistics while sampling
	queueSamples int
	queueSum     protocol.ByteCount
	queueMax     protocol.ByteCount
}

func newSim(link simLinkParams, seed uint64) *sim {
	if link.ackDelay == 0 {
		link.ackDelay = 25 * time.Millisecond
	}
	return &sim{
		clock: simClock{now: monotime.Time(time.Second)},
		rng:   rand.New(rand.NewPCG(seed, 1)),
		link:  link,
	}
}

func (s *sim) at(t monotime.Time, fn func()) {
	s.seq++
	heap.Push(&s.events, &simEvent{at: t, seq: s.seq, fn: fn})
}

func (s *sim) after(d time.Duration, fn func()) { s.at(s.clock.now.Add(d), fn) }

// run processes events until the simulated clock reaches end.
func (s *sim) run(d time.Duration) {
	end := s.clock.now.Add(d)
	for len(s.events) > 0 && s.events[0].at <= end {
		e := heap.Pop(&s.events).(*simEvent)
		s.clock.now = e.at
		e.fn()
	}
	s.clock.now = end
}

func (s *sim) backlog() protocol.ByteCount {
	if s.busyUntil <= s.clock.now {
		return 0
	}
	return bdpBytes(s.link.rate, s.busyUntil.Sub(s.clock.now), 1)
}

// setRate changes the bottleneck's rate from now on.
func (s *sim) setRate(r Bandwidth) {
	q := s.backlog()
	s.link.rate = r
	if q > 0 {
		s.busyUntil = s.clock.now.Add(txTime(q, r))
	}
}

func txTime(b protocol.ByteCount, r Bandwidth) time.Duration {
	return time.Duration(float64(b) * 8 / float64(r) * float64(time.Second))
}

// transmit puts a data packet on the bottleneck and delivers it after the queue and the
// propagation delay, unless it is lost or the queue is full.
func (s *sim) transmit(f *simFlow, pn protocol.PacketNumber, size protocol.ByteCount) {
	if s.rng.Float64() < s.link.loss {
		return
	}
	q := s.backlog()
	s.queueSamples++
	s.queueSum += q
	s.queueMax = max(s.queueMax, q)
	if q+size > s.link.buffer {
		f.queueDrops++
		return
	}
	start := max(s.clock.now, s.busyUntil)
	s.busyUntil = start.Add(txTime(size, s.link.rate))
	s.at(s.busyUntil.Add(s.link.rtt/2), func() { f.receive(pn, size) })
}

type simPacket struct {
	size     protocol.ByteCount
	sendTime monotime.Time
}

// simFlow is one connection: a sender with its congestion controller and a receiver.
type simFlow struct {
	s         *sim
	cc        SendAlgorithmWithDebugInfos
	rttStats  *utils.RTTStats
	connStats *utils.ConnectionStats

	// appRate limits the application's data (0: always has data to send)
	appRate   Bandwidth
	appBudget float64 // bytes the application has supplied and the sender not yet sent
	appLast   monotime.Time
	stopped   bool

	nextPN        protocol.PacketNumber
	outstanding   map[protocol.PacketNumber]simPacket
	order         []protocol.PacketNumber // sent packet numbers; order[head:] may be outstanding
	head          int
	inFlight      protocol.ByteCount
	largestAcked  protocol.PacketNumber
	wakeup        monotime.Time // a scheduled send attempt, if nonzero
	lossTimer     monotime.Time
	lastSendTime  monotime.Time
	lastAckTime   monotime.Time
	sentPackets   int
	lostPackets   int
	queueDrops    int
	maxInFlight   protocol.ByteCount
	priorInFlight protocol.ByteCount // in flight when the last ACK arrived
	onAck         func()             // called after each processed ACK (test probes)
	ackedAtLeast1 bool

	// receiver
	received      []protocol.PacketNumber // arrival log; ACKs carry a position in it
	receivedBytes protocol.ByteCount
	lastRecvPN    protocol.PacketNumber
	unacked       int
	ackTimer      bool
	ackCursor     int // how much of the arrival log the sender has seen
}

func (s *sim) addFlow(cc func(clock Clock, rtt *utils.RTTStats, stats *utils.ConnectionStats) SendAlgorithmWithDebugInfos) *simFlow {
	rtt := utils.NewRTTStats()
	stats := &utils.ConnectionStats{}
	f := &simFlow{
		s:            s,
		cc:           cc(&s.clock, rtt, stats),
		rttStats:     rtt,
		connStats:    stats,
		outstanding:  make(map[protocol.PacketNumber]simPacket),
		largestAcked: protocol.InvalidPacketNumber,
		lastRecvPN:   -1,
	}
	f.cc.SetMaxDatagramSize(simPacketSize)
	s.flows = append(s.flows, f)
	s.after(0, f.trySend)
	return f
}

func simBBR(seed uint64) func(Clock, *utils.RTTStats, *utils.ConnectionStats) SendAlgorithmWithDebugInfos {
	return func(c Clock, r *utils.RTTStats, st *utils.ConnectionStats) SendAlgorithmWithDebugInfos {
		return newBBRSender(c, r, st, simPacketSize, initialCongestionWindow*simPacketSize, seed, nil)
	}
}

func simCubic(reno bool) func(Clock, *utils.RTTStats, *utils.ConnectionStats) SendAlgorithmWithDebugInfos {
	return func(c Clock, r *utils.RTTStats, st *utils.ConnectionStats) SendAlgorithmWithDebugInfos {
		return NewCubicSender(c, r, st, simPacketSize, reno, nil)
	}
}

func (f *simFlow) hasData(now monotime.Time) bool {
	if f.stopped {
		return false
	}
	if f.appRate == 0 {
		return true
	}
	if !f.appLast.IsZero() {
		f.appBudget += float64(f.appRate) / 8 * now.Sub(f.appLast).Seconds()
		f.appBudget = min(f.appBudget, 4*float64(simPacketSize))
	}
	f.appLast = now
	return f.appBudget >= float64(simPacketSize)
}

func (f *simFlow) trySend() {
	now := f.s.clock.now
	if !f.wakeup.IsZero() && f.wakeup > now {
		return // an earlier call scheduled a later attempt
	}
	f.wakeup = 0
	for f.cc.CanSend(f.inFlight) {
		if !f.cc.HasPacingBudget(now) {
			next := f.cc.TimeUntilSend(f.inFlight)
			if next <= now {
				next = now.Add(time.Microsecond)
			}
			f.wakeup = next
			f.s.at(next, f.trySend)
			return
		}
		if !f.hasData(now) {
			if n, ok := f.cc.(AppLimitedNotifier); ok {
				n.OnAppLimited(f.inFlight)
			}
			if f.appRate != 0 && !f.stopped {
				wait := time.Duration((float64(simPacketSize) - f.appBudget) * 8 / float64(f.appRate) * float64(time.Second))
				f.wakeup = now.Add(wait + time.Nanosecond)
				f.s.at(f.wakeup, f.trySend)
			}
			return
		}
		if f.appRate != 0 {
			f.appBudget -= float64(simPacketSize)
		}
		f.sendPacket(now)
	}
}

func (f *simFlow) sendPacket(now monotime.Time) {
	pn := f.nextPN
	f.nextPN++
	f.inFlight += simPacketSize
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.outstanding[pn] = simPacket{size: simPacketSize, sendTime: now}
	f.order = append(f.order, pn)
	f.lastSendTime = now
	f.sentPackets++
	f.cc.OnPacketSent(now, f.inFlight, pn, simPacketSize, true)
	f.s.transmit(f, pn, simPacketSize)
	f.armLossTimer()
}

// receive is a data packet's arrival at the receiver.
func (f *simFlow) receive(pn protocol.PacketNumber, size protocol.ByteCount) {
	f.received = append(f.received, pn)
	f.receivedBytes += size
	f.unacked++
	outOfOrder := pn != f.lastRecvPN+1
	f.lastRecvPN = max(f.lastRecvPN, pn)
	if f.unacked >= 2 || outOfOrder {
		f.sendAck()
		return
	}
	if !f.ackTimer {
		f.ackTimer = true
		f.s.after(f.s.link.ackDelay, func() {
			f.ackTimer = false
			if f.unacked > 0 {
				f.sendAck()
			}
		})
	}
}

func (f *simFlow) sendAck() {
	f.unacked = 0
	if f.s.rng.Float64() < f.s.link.ackLoss {
		return
	}
	upTo := len(f.received)
	f.s.after(f.s.link.rtt/2, func() { f.onAckArrival(upTo) })
}

func (f *simFlow) onAckArrival(upTo int) {
	if upTo <= f.ackCursor {
		return
	}
	now := f.s.clock.now
	priorInFlight := f.inFlight
	f.priorInFlight = priorInFlight
	type ackedPacket struct {
		pn protocol.PacketNumber
		simPacket
	}
	var acked []ackedPacket
	largest := f.largestAcked
	for _, pn := range f.received[f.ackCursor:upTo] {
		if p, ok := f.outstanding[pn]; ok {
			acked = append(acked, ackedPacket{pn, p})
			delete(f.outstanding, pn)
		}
		largest = max(largest, pn)
	}
	f.ackCursor = upTo
	for i := 1; i < len(acked); i++ {
		for j := i; j > 0 && acked[j].pn < acked[j-1].pn; j-- {
			acked[j], acked[j-1] = acked[j-1], acked[j]
		}
	}
	if n := len(acked); n > 0 && acked[n-1].pn == largest && largest > f.largestAcked {
		f.rttStats.UpdateRTT(now.Sub(acked[n-1].sendTime), 0)
		f.cc.MaybeExitSlowStart()
	}
	f.largestAcked = max(f.largestAcked, largest)
	// As quic-go: acknowledged packets leave the history first, losses are reported next,
	// then the acknowledgements.
	f.detectLosses(now, priorInFlight)
	for _, p := range acked {
		f.cc.OnPacketAcked(p.pn, p.size, priorInFlight, now)
		f.inFlight -= p.size
	}
	f.lastAckTime = now
	f.ackedAtLeast1 = true
	f.armLossTimer()
	if f.onAck != nil {
		f.onAck()
	}
	f.trySend()
}

func (f *simFlow) lossDelay() time.Duration {
	return max(f.rttStats.LatestRTT(), f.rttStats.SmoothedRTT()) * 9 / 8
}

func (f *simFlow) detectLosses(now monotime.Time, priorInFlight protocol.ByteCount) {
	if f.largestAcked == protocol.InvalidPacketNumber {
		return
	}
	lostBefore := now.Add(-f.lossDelay())
	// Both thresholds only get harder to meet as packet numbers grow: stop at the first
	// packet that meets neither.
	for i := f.head; i < len(f.order) && f.order[i] < f.largestAcked; i++ {
		pn := f.order[i]
		p, ok := f.outstanding[pn]
		if !ok {
			continue
		}
		if f.largestAcked-pn < 3 && p.sendTime > lostBefore {
			break
		}
		delete(f.outstanding, pn)
		f.inFlight -= p.size
		f.lostPackets++
		f.cc.OnCongestionEvent(pn, p.size, priorInFlight)
	}
	f.advanceHead()
}

func (f *simFlow) advanceHead() {
	for f.head < len(f.order) {
		if _, ok := f.outstanding[f.order[f.head]]; ok {
			break
		}
		f.head++
	}
	if f.head > 4096 && f.head > len(f.order)/2 {
		f.order = append(f.order[:0], f.order[f.head:]...)
		f.head = 0
	}
}

// armLossTimer schedules time-threshold loss detection for the oldest packet below the
// largest acknowledged one, and a PTO when nothing is acknowledged for a while.
func (f *simFlow) armLossTimer() {
	f.advanceHead()
	if len(f.outstanding) == 0 {
		return
	}
	var oldest monotime.Time
	if first := f.order[f.head]; f.largestAcked != protocol.InvalidPacketNumber && first < f.largestAcked {
		oldest = f.outstanding[first].sendTime
	}
	var t monotime.Time
	if oldest != 0 {
		t = oldest.Add(f.lossDelay())
	} else {
		t = f.lastSendTime.Add(f.rttStats.PTO(true))
	}
	if t == f.lossTimer {
		return
	}
	f.lossTimer = t
	f.s.at(t, func() {
		if f.lossTimer != t {
			return
		}
		f.lossTimer = 0
		now := f.s.clock.now
		if oldest != 0 {
			f.detectLosses(now, f.inFlight)
		} else if len(f.outstanding) > 0 {
			// PTO: send a probe (it carries data still outstanding) regardless of the
			// window.
			f.sendPacket(now)
		}
		f.armLossTimer()
		f.trySend()
	})
}

// goodput measures what a flow's receiver got over d of simulated time.
func (f *simFlow) goodputOver(d time.Duration) Bandwidth {
	before := f.receivedBytes
	f.s.run(d)
	return BandwidthFromDelta(f.receivedBytes-before, d)
}

func mbit(b Bandwidth) float64 { return float64(b) / 1e6 }
