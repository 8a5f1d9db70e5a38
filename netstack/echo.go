package netstack

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultMaxEchoes bounds the echo requests handed to an EchoHandler and not yet answered
// when Config.MaxEchoes is 0.
const DefaultMaxEchoes = 64

// EchoHandler answers the ICMP and ICMPv6 echo requests ("ping") the device hands in for a
// destination that is not one of the stack's own addresses (Config.Addrs). They are taken
// before gVisor sees them.
type EchoHandler interface {
	// HandleEcho is called in its own goroutine for each echo request, and reports whether
	// its destination answered: then the stack sends the app the echo reply (from the
	// destination, with the request's identifier, sequence number and payload); otherwise
	// nothing, as for an echo lost on the way. ctx ends when the stack closes; Stack.Close
	// waits for every HandleEcho to return.
	HandleEcho(ctx context.Context, req EchoRequest) bool
}

// EchoHandlerFunc adapts a function to EchoHandler.
type EchoHandlerFunc func(ctx context.Context, req EchoRequest) bool

// HandleEcho calls f(ctx, req).
func (f EchoHandlerFunc) HandleEcho(ctx context.Context, req EchoRequest) bool { return f(ctx, req) }

// EchoRequest is one ICMP (IPv4) or ICMPv6 echo request from the app.
type EchoRequest struct {
	Src, Dst netip.Addr
	ID, Seq  uint16
	Payload  []byte // the handler's own copy
}

// echoer takes echo requests off the link's inbound path (link.inject) for an EchoHandler.
type echoer struct {
	ctx     context.Context
	handler EchoHandler
	link    *link
	own     map[netip.Addr]bool
	slots   chan struct{}
	drops   atomic.Uint64 // requests dropped at the bound
	wg      sync.WaitGroup
}

// intercept reports whether pkt, an inbound IP packet, is an echo request for the handler;
// if so it hands a copy to the handler (or drops it at the bound). It runs on the link's
// read goroutine and never blocks. Checksums are not verified: the packets come from the
// local kernel (as for the rest of the link, CapabilityRXChecksumOffload).
func (e *echoer) intercept(pkt []byte) bool {
	req, ok := parseEcho(pkt)
	if !ok || e.own[req.Dst] {
		return false
	}
	select {
	case e.slots <- struct{}{}:
	default:
		e.drops.Add(1)
		return true
	}
	req.Payload = append([]byte(nil), req.Payload...)
	e.wg.Go(func() {
		defer func() { <-e.slots }()
		if e.handler.HandleEcho(e.ctx, req) && e.ctx.Err() == nil {
			e.link.sendOut(stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(echoReply(req))}))
		}
	})
	return true
}

// parseEcho reads an unfragmented ICMP echo request (IPv4), or an ICMPv6 one with no
// extension header, to a unicast destination. Payload aliases pkt.
func parseEcho(pkt []byte) (EchoRequest, bool) {
	var req EchoRequest
	var msg []byte
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		ip := header.IPv4(pkt)
		hl, total := int(ip.HeaderLength()), int(ip.TotalLength())
		if hl < header.IPv4MinimumSize || total > len(pkt) || total < hl+header.ICMPv4MinimumSize ||
			ip.TransportProtocol() != header.ICMPv4ProtocolNumber || ip.More() || ip.FragmentOffset() != 0 {
			return req, false
		}
		msg = pkt[hl:total]
		if header.ICMPv4(msg).Type() != header.ICMPv4Echo || header.ICMPv4(msg).Code() != 0 {
			return req, false
		}
		req.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		req.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		if req.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return req, false
		}
	case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
		ip := header.IPv6(pkt)
		total := header.IPv6MinimumSize + int(ip.PayloadLength())
		if total > len(pkt) || total < header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize ||
			ip.TransportProtocol() != header.ICMPv6ProtocolNumber {
			return req, false
		}
		msg = pkt[header.IPv6MinimumSize:total]
		if header.ICMPv6(msg).Type() != header.ICMPv6EchoRequest || header.ICMPv6(msg).Code() != 0 {
			return req, false
		}
		req.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		req.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		return req, false
	}
	if !req.Dst.IsGlobalUnicast() && !req.Dst.IsLoopback() && !req.Dst.IsPrivate() {
		return req, false // multicast, link-local, unspecified: not for a far host
	}
	req.ID = binary.BigEndian.Uint16(msg[4:])
	req.Seq = binary.BigEndian.Uint16(msg[6:])
	req.Payload = msg[8:]
	return req, true
}

// echoReply builds the echo reply that req's destination sends its source: type 0 (ICMP)
// or 129 (ICMPv6), the request's identifier, sequence number and payload.
func echoReply(req EchoRequest) []byte {
	const icmpHdr = 8
	if req.Src.Is4() {
		total := header.IPv4MinimumSize + icmpHdr + len(req.Payload)
		b := make([]byte, total)
		icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
		icmp.SetType(header.ICMPv4EchoReply)
		icmp.SetIdent(req.ID)
		icmp.SetSequence(req.Seq)
		copy(icmp[icmpHdr:], req.Payload)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4(req.Dst.As4()),
			DstAddr:     tcpip.AddrFrom4(req.Src.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		return b
	}
	from, to := tcpip.AddrFrom16(req.Dst.As16()), tcpip.AddrFrom16(req.Src.As16())
	b := make([]byte, header.IPv6MinimumSize+icmpHdr+len(req.Payload))
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6EchoReply)
	icmp.SetIdent(req.ID)
	icmp.SetSequence(req.Seq)
	copy(icmp[icmpHdr:], req.Payload)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: from, Dst: to}))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(icmpHdr + len(req.Payload)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           from,
		DstAddr:           to,
	})
	return b
}
