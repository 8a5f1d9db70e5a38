package netstack

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is the batched link endpoint: gVisor's channel.Endpoint holds the outbound queue,
// and two pump goroutines move packets between it and a tun.Device in batches of
// dev.BatchSize() each way. A one-packet-per-call channel endpoint reached only about
// 0.55 Gbit/s (see /work/shared/NOTES.md); batching amortises the syscall (or, for an
// in-memory device, the lock and wake-up) over up to BatchSize packets.
//
// No goroutine is started per packet and nothing is logged per packet: write errors are
// counted and reported at most once per logEvery.
type link struct {
	ep    *channel.Endpoint
	dev   tun.Device // nil for NewVirtual: outbound packets are discarded
	batch int
	log   *logrus.Entry
	echo  *echoer // nil: echo requests go to gVisor

	writeErrs  atomic.Uint64
	lastLogged atomic.Int64 // unix nanoseconds of the last write-error log line
}

// logEvery bounds how often a failing device write is logged.
const logEvery = 5 * time.Second

func newLink(dev tun.Device, mtu, queueLen int, log *logrus.Entry) *link {
	l := &link{
		ep:    channel.New(queueLen, uint32(mtu), ""),
		dev:   dev,
		batch: 1,
		log:   log,
	}
	if dev != nil {
		l.batch = max(dev.BatchSize(), 1)
		// Packets from the TUN come from the local kernel (which checksummed them, or
		// wireguard's GSO split did) or from an in-process stack: skip verifying
		// checksums on receive, as Tailscale's link endpoint does.
		l.ep.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	}
	return l
}

// readLoop reads batches from the device and injects them into gVisor until the device
// is closed.
func (l *link) readLoop() {
	bufs := make([][]byte, l.batch)
	sizes := make([]int, l.batch)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	udp := 0 // UDP packets since the last yield
	for {
		n, err := l.dev.Read(bufs, sizes, readOffset)
		for i := range n {
			pkt := bufs[i][readOffset : readOffset+sizes[i]]
			if isUDP(pkt) {
				udp++
			}
			l.inject(pkt)
		}
		// Let the goroutines that carry what was injected run before reading more: while
		// the device has packets its reads never wait, and with one thread (quicgate's
		// default on 2 cores) this loop would take it for a whole time slice, filling the
		// flows' buffers with packets that are then dropped after all the work of taking
		// them in, so that more offered meant less carried. Yielding leaves the excess in
		// the device's queue, where the kernel drops it for nearly nothing. Every
		// yieldEvery UDP packets, so that the flows still take their packets in batches;
		// TCP needs none of it (its senders slow down on their own, and the yields cost
		// a TCP upload through the TUN 5 %).
		if udp >= yieldEvery {
			udp = 0
			runtime.Gosched()
		}
		switch {
		case err == nil:
		case errors.Is(err, tun.ErrTooManySegments):
			// Some packets of a GSO batch were dropped; TCP retransmits them.
			l.log.WithError(err).Debug("netstack: TUN read dropped packets")
		case errors.Is(err, os.ErrClosed), errors.Is(err, net.ErrClosed):
			return
		default:
			// As wireguard-go's device does, stop on any other read error: the device is
			// gone or broken, and spinning on it helps nobody. Close still works.
			l.log.WithError(err).Error("netstack: TUN read failed; no more inbound packets")
			return
		}
	}
}

// yieldEvery is how many UDP packets the read loop takes in before it lets the goroutines
// that carry them run (readLoop).
const yieldEvery = 64

// isUDP reports whether pkt, an IP packet, carries UDP (IPv6: as its first next header).
func isUDP(pkt []byte) bool {
	switch {
	case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
		return pkt[9] == uint8(header.UDPProtocolNumber)
	case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
		return pkt[6] == uint8(header.UDPProtocolNumber)
	}
	return false
}

// inject hands one IP packet to gVisor; it copies pkt into a pooled buffer.
func (l *link) inject(pkt []byte) {
	if len(pkt) == 0 {
		return
	}
	if l.echo != nil && l.echo.intercept(pkt) {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
		proto = header.IPv4ProtocolNumber
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	l.ep.InjectInbound(proto, pb)
	pb.DecRef()
}

// writeLoop drains the outbound queue in batches until ctx is done: it blocks for one
// packet, then takes whatever else is already queued, up to the batch size, and writes
// them with a single dev.Write.
func (l *link) writeLoop(ctx context.Context) {
	pkts := make([]*stack.PacketBuffer, 0, l.batch)
	var bufs, backing [][]byte
	if l.dev != nil {
		bufs = make([][]byte, 0, l.batch)
		backing = make([][]byte, l.batch)
		for i := range backing {
			// Full 64 KiB capacity, not just the MTU: wireguard's Write coalesces TCP
			// segments in place (GRO towards the kernel) when a buffer has room.
			backing[i] = make([]byte, bufSize)
		}
	}
	for {
		pkt := l.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		pkts = append(pkts, pkt)
		for len(pkts) < l.batch {
			p := l.ep.Read()
			if p == nil {
				break
			}
			pkts = append(pkts, p)
		}
		if l.dev != nil {
			for i, p := range pkts {
				b := backing[i][:readOffset]
				for _, s := range p.AsSlices() {
					b = append(b, s...)
				}
				bufs = append(bufs, b)
			}
			if _, err := l.dev.Write(bufs, readOffset); err != nil {
				if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
					l.release(pkts)
					return
				}
				l.writeFailed(err)
			}
			clear(bufs)
			bufs = bufs[:0]
		}
		l.release(pkts)
		pkts = pkts[:0]
	}
}

func (l *link) release(pkts []*stack.PacketBuffer) {
	for i, p := range pkts {
		p.DecRef()
		pkts[i] = nil
	}
}

func (l *link) writeFailed(err error) {
	n := l.writeErrs.Add(1)
	now := time.Now().UnixNano()
	last := l.lastLogged.Load()
	if now-last < int64(logEvery) || !l.lastLogged.CompareAndSwap(last, now) {
		return
	}
	l.log.WithError(err).WithField("write_errors", n).Warn("netstack: TUN write failed")
}

// drainEvents consumes the device's events until ctx is done or the channel closes:
// wireguard's NativeTun blocks its netlink listener when nobody reads them.
func (l *link) drainEvents(ctx context.Context) {
	events := l.dev.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev&tun.EventMTUUpdate != 0 {
				if mtu, err := l.dev.MTU(); err == nil {
					l.log.WithField("mtu", mtu).Debug("netstack: TUN MTU changed; the stack keeps its own")
				}
			}
		}
	}
}
