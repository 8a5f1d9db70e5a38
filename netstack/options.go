package netstack

import (
	"fmt"
	"net"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Limits and defaults of the link.
const (
	// MaxMTU is the largest link MTU a Stack accepts: the TUN link is virtual and every
	// flow ends in this process, so its MTU need not match any wire. A large MTU is the
	// cheapest throughput lever after batching (fewer, larger segments through gVisor):
	// Teleport's VNet measured 3.09 Gbit/s at 1500 and 6.23 Gbit/s at 9 KiB
	// (https://github.com/gravitational/teleport/pull/69025).
	MaxMTU = 65535

	// DefaultVirtualMTU is the MTU of a NewVirtual stack when Config.MTU is 0.
	DefaultVirtualMTU = MaxMTU

	// RecommendedTUNMTU is the MTU we recommend for the TUN device; see MaxMTU and the
	// figures in doc.go.
	RecommendedTUNMTU = MaxMTU

	// DefaultMaxInFlight bounds the SYNs handed to the Handler but not yet decided.
	DefaultMaxInFlight = 1024

	// DefaultQueueLen is the length of the outbound packet queue between gVisor and the
	// writer goroutine. gVisor drops a packet when it is full (the caller retransmits), so
	// it must hold a good part of a send window: 4096 packets cover 6 MiB at MTU 1500.
	DefaultQueueLen = 4096

	// readOffset is the headroom before each packet in the device buffers: wireguard's TUN
	// with offloads needs at least virtio-net's 10-byte header there; 16 matches
	// wireguard-go's device.
	readOffset = 16

	// bufSize is the size of a packet buffer: the largest IP packet, since with offloads on
	// the kernel hands over GRO-coalesced packets up to 64 KiB.
	bufSize = readOffset + 65535
)

// TCPOptions are the gVisor TCP settings a Stack applies. The zero value of a field keeps
// gVisor's default; DefaultTCPOptions is what NewTUN and NewVirtual use when
// Config.TCP is nil.
type TCPOptions struct {
	// SACK turns on selective acknowledgements (off by default in gVisor); recovery
	// from a loss burst without them costs one RTT per lost segment.
	SACK bool

	// ReceiveBuffer and SendBuffer are the TCP buffer ranges. gVisor's defaults cap both
	// at 4 MiB, too small for multi-Gbit/s with any delay
	// (https://github.com/google/gvisor/issues/11837).
	ReceiveBuffer tcpip.TCPReceiveBufferSizeRangeOption
	SendBuffer    tcpip.TCPSendBufferSizeRangeOption

	// ModerateReceiveBuffer lets the receive buffer grow towards ReceiveBuffer.Max with
	// the measured bandwidth-delay product (like Linux's tcp_moderate_rcvbuf).
	ModerateReceiveBuffer bool

	// DisableRACK sets tcpip.TCPRecovery(0): in gVisor's RACK, ACKs are not handled in
	// time, which gives spurious retransmissions and a reduced congestion window
	// (https://github.com/tailscale/tailscale/issues/9707; Tailscale turns it off).
	DisableRACK bool

	// CongestionControl is "reno" or "cubic"; "" keeps gVisor's default. The default
	// options pin "reno", as Tailscale does: gVisor has an integer overflow in the sender's
	// congestion-window arithmetic that cubic triggers more easily
	// (https://github.com/google/gvisor/issues/11632). On our lossless in-machine links cubic
	// measured no better: its results stayed within the benchmarks' run-to-run spread.
	CongestionControl string

	// KeepAlive is the keepalive of the flows the Handler accepts, so that a flow whose app
	// vanished without a FIN or RST (its host powered off, say) ends with an error: probes
	// after Idle without a segment, then every Interval; Count unanswered probes end the
	// connection. Enable false turns keepalive off. gVisor's own defaults (2 hours, 75 s, 9)
	// would keep a dead flow for over two hours; DefaultTCPOptions uses 60 s, 15 s and 4,
	// the tunnel's defaults (flow.DefaultTCPKeepAlive).
	KeepAlive net.KeepAliveConfig
}

// DefaultTCPOptions returns the tuned settings: SACK, 8 MiB buffer maxima with receive
// buffer moderation, RACK off and Reno pinned.
func DefaultTCPOptions() TCPOptions {
	return TCPOptions{
		KeepAlive: net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4},
		SACK:      true,
		ReceiveBuffer: tcpip.TCPReceiveBufferSizeRangeOption{
			Min:     tcp.MinBufferSize,
			Default: tcp.DefaultReceiveBufferSize,
			Max:     8 << 20,
		},
		SendBuffer: tcpip.TCPSendBufferSizeRangeOption{
			Min:     tcp.MinBufferSize,
			Default: tcp.DefaultSendBufferSize,
			Max:     8 << 20,
		},
		ModerateReceiveBuffer: true,
		DisableRACK:           true,
		CongestionControl:     "reno",
	}
}

// apply sets o on s.
func (o TCPOptions) apply(s *stack.Stack) error {
	set := func(name string, opt tcpip.SettableTransportProtocolOption) error {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: set TCP option %s: %s", name, err)
		}
		return nil
	}
	if o.SACK {
		v := tcpip.TCPSACKEnabled(true)
		if err := set("SACK", &v); err != nil {
			return err
		}
	}
	if o.ReceiveBuffer != (tcpip.TCPReceiveBufferSizeRangeOption{}) {
		v := o.ReceiveBuffer
		if err := set("receive buffer", &v); err != nil {
			return err
		}
	}
	if o.SendBuffer != (tcpip.TCPSendBufferSizeRangeOption{}) {
		v := o.SendBuffer
		if err := set("send buffer", &v); err != nil {
			return err
		}
	}
	if o.ModerateReceiveBuffer {
		v := tcpip.TCPModerateReceiveBufferOption(true)
		if err := set("moderate receive buffer", &v); err != nil {
			return err
		}
	}
	if o.DisableRACK {
		v := tcpip.TCPRecovery(0)
		if err := set("recovery", &v); err != nil {
			return err
		}
	}
	if o.CongestionControl != "" {
		v := tcpip.CongestionControlOption(o.CongestionControl)
		if err := set("congestion control", &v); err != nil {
			return err
		}
	}
	return nil
}

// rcvWnd is the receive window the forwarder offers in its SYN-ACK.
func (o TCPOptions) rcvWnd() int {
	if o.ReceiveBuffer.Default > 0 {
		return o.ReceiveBuffer.Default
	}
	return tcp.DefaultReceiveBufferSize
}
