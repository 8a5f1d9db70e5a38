package congestion

import (
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
)

// quicgate patch: BBR (see bbr_sender.go).
//
// deliverySampler estimates the delivery rate from the stream of sent, acknowledged and
// lost packets, as draft-cheng-iccrg-delivery-rate-estimation specifies (and Linux's
// tcp_rate.c implements): every packet remembers how much had been delivered when it was
// sent; when it is acknowledged, the data delivered since, divided by the longer of the
// send and the ACK intervals, is one sample of the rate. Samples taken while the sender
// had nothing to send are marked application-limited.
//
// The state of the packets in flight lives in a ring indexed by packet number. Packet
// numbers only grow (quic-go shares one sequence across packet number spaces), so the ring
// is appended at the tail and consumed at the head.
type deliverySampler struct {
	delivered     protocol.ByteCount // C.delivered: bytes acknowledged so far
	deliveredTime monotime.Time      // C.delivered_time: when delivered last grew
	firstSentTime monotime.Time      // C.first_sent_time: send time of the newest acknowledged packet
	appLimited    protocol.ByteCount // C.app_limited: nonzero while the application is the limit
	// newest is the delivered count of the freshest packet acknowledged so far, so that a
	// late ACK for an older packet does not move firstSentTime back.
	newest protocol.ByteCount

	ring    []sentState
	head    int                   // index of the oldest entry
	count   int                   // entries in use
	firstPN protocol.PacketNumber // packet number of ring[head]
}

// sentState is what a packet carries from its sending to its acknowledgement.
type sentState struct {
	tracked       bool
	size          protocol.ByteCount
	sendTime      monotime.Time
	delivered     protocol.ByteCount
	deliveredTime monotime.Time
	firstSentTime monotime.Time
	isAppLimited  bool
}

// rateSample is one delivery-rate sample, taken when a packet is acknowledged.
type rateSample struct {
	valid          bool
	rate           Bandwidth          // delivered / interval
	delivered      protocol.ByteCount // delivered between the packet's sending and now
	priorDelivered protocol.ByteCount // C.delivered when the packet was sent
	interval       time.Duration
	rtt            time.Duration // now minus the packet's send time
	isAppLimited   bool
}

func newDeliverySampler() *deliverySampler {
	return &deliverySampler{ring: make([]sentState, 64), firstPN: protocol.InvalidPacketNumber}
}

// OnPacketSent records an in-flight packet. priorInFlight is what was in flight before it.
func (s *deliverySampler) OnPacketSent(now monotime.Time, pn protocol.PacketNumber, size, priorInFlight protocol.ByteCount) {
	if priorInFlight == 0 {
		// The first packet of a flight: intervals start now, not at the last ACK before
		// an idle period.
		s.firstSentTime = now
		s.deliveredTime = now
	}
	e := s.slot(pn)
	if e == nil {
		return
	}
	*e = sentState{
		tracked:       true,
		size:          size,
		sendTime:      now,
		delivered:     s.delivered,
		deliveredTime: s.deliveredTime,
		firstSentTime: s.firstSentTime,
		isAppLimited:  s.appLimited != 0,
	}
}

// OnAppLimited marks the packets sent from now on, until the data in flight now is
// delivered, as sent by an application that had nothing more to send.
func (s *deliverySampler) OnAppLimited(bytesInFlight protocol.ByteCount) {
	s.appLimited = max(s.delivered+bytesInFlight, 1)
}

// OnPacketAcked returns the rate sample of an acknowledged packet; ok is false if the
// packet is not (or no longer) tracked.
func (s *deliverySampler) OnPacketAcked(now monotime.Time, pn protocol.PacketNumber, minRTT time.Duration) (rateSample, bool) {
	e := s.lookup(pn)
	if e == nil {
		return rateSample{}, false
	}
	p := *e
	s.forget(pn)
	s.delivered += p.size
	s.deliveredTime = now
	if s.appLimited != 0 && s.delivered > s.appLimited {
		s.appLimited = 0
	}
	if p.delivered >= s.newest {
		s.newest = p.delivered
		s.firstSentTime = p.sendTime
	}
	rs := rateSample{
		delivered:      s.delivered - p.delivered,
		priorDelivered: p.delivered,
		isAppLimited:   p.isAppLimited,
		rtt:            now.Sub(p.sendTime),
	}
	sendElapsed := p.sendTime.Sub(p.firstSentTime)
	ackElapsed := now.Sub(p.deliveredTime)
	rs.interval = max(sendElapsed, ackElapsed)
	// An interval shorter than the minimum RTT means ACKs were compressed: the rate would
	// be overestimated.
	if rs.interval > 0 && (minRTT == 0 || rs.interval >= minRTT) {
		rs.valid = true
		rs.rate = BandwidthFromDelta(rs.delivered, rs.interval)
	}
	return rs, true
}

// OnUntrackedAck counts an acknowledged packet whose state is gone (dropped as too old) as
// delivered, as Linux counts every packet it delivers.
func (s *deliverySampler) OnUntrackedAck(now monotime.Time, size protocol.ByteCount) {
	s.delivered += size
	s.deliveredTime = now
}

// OnPacketLost forgets a packet declared lost.
func (s *deliverySampler) OnPacketLost(pn protocol.PacketNumber) { s.forget(pn) }

// DropOlderThan forgets packets sent before t that are neither acknowledged nor declared
// lost: quic-go drops some packets without telling the congestion controller (those of a
// discarded packet number space, PTO probes it declared lost itself).
func (s *deliverySampler) DropOlderThan(t monotime.Time) {
	for s.count > 0 {
		e := &s.ring[s.head]
		if e.tracked && !e.sendTime.Before(t) {
			return
		}
		s.pop()
	}
}

func (s *deliverySampler) lookup(pn protocol.PacketNumber) *sentState {
	if s.count == 0 || pn < s.firstPN || pn >= s.firstPN+protocol.PacketNumber(s.count) {
		return nil
	}
	e := &s.ring[(s.head+int(pn-s.firstPN))%len(s.ring)]
	if !e.tracked {
		return nil
	}
	return e
}

func (s *deliverySampler) forget(pn protocol.PacketNumber) {
	if e := s.lookup(pn); e != nil {
		e.tracked = false
	}
	for s.count > 0 && !s.ring[s.head].tracked {
		s.pop()
	}
}

func (s *deliverySampler) pop() {
	s.ring[s.head] = sentState{}
	s.head = (s.head + 1) % len(s.ring)
	s.count--
	s.firstPN++
	if s.count == 0 {
		s.head = 0
		s.firstPN = protocol.InvalidPacketNumber
	}
}

// slot returns the (cleared) entry for a new packet number, growing the ring as needed.
// Packet numbers between the last one and pn (skipped, or sent without being in flight)
// get untracked entries.
func (s *deliverySampler) slot(pn protocol.PacketNumber) *sentState {
	if s.count == 0 {
		s.head = 0
		s.firstPN = pn
	}
	if pn < s.firstPN {
		return nil // never happens: packet numbers only grow
	}
	idx := int(pn - s.firstPN)
	if idx < s.count {
		return &s.ring[(s.head+idx)%len(s.ring)]
	}
	if idx >= 2*protocol.MaxTrackedSentPackets {
		// A gap far beyond anything in flight: start over rather than grow without bound.
		for s.count > 0 {
			s.pop()
		}
		s.head = 0
		s.firstPN = pn
		idx = 0
	}
	for idx >= len(s.ring) {
		s.grow()
	}
	for s.count <= idx {
		s.ring[(s.head+s.count)%len(s.ring)] = sentState{}
		s.count++
	}
	return &s.ring[(s.head+idx)%len(s.ring)]
}

func (s *deliverySampler) grow() {
	ring := make([]sentState, 2*len(s.ring))
	for i := 0; i < s.count; i++ {
		ring[i] = s.ring[(s.head+i)%len(s.ring)]
	}
	s.ring = ring
	s.head = 0
}
