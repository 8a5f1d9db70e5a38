package quicmux

import (
	"fmt"
	"strings"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Limits are the QUIC transport settings both ends use. Zero fields take the defaults.
type Limits struct {
	// MaxStreams bounds the flows one connection may have open at once (the server's limit on
	// each client). Default 16384.
	MaxStreams int64
	// KeepAlive is how often an idle connection is pinged. The client's default, 1s, also
	// finds a restarted server within a second: the server answers the ping with a stateless
	// reset, and the client reconnects. The server's default is 15s (NAT bindings).
	KeepAlive time.Duration
	// IdleTimeout closes a connection that hears nothing for this long; default 60s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC handshake; default 10s.
	HandshakeTimeout time.Duration
	// StreamWindow is the largest receive window one flow's flow control may grow to
	// (from 512 KiB), default 16 MiB: several Gbit/s on a low-latency path.
	//
	// ConnWindow is the connection's receive window, shared by all its flows; it starts at
	// its maximum, default 256 MiB. A flow whose far side stops reading keeps up to its own
	// window of it, so the default lets at least 16 such flows, each grown to the full
	// 16 MiB (or 512 stalled from the start), stall without freezing the others. It is
	// credit, not memory: memory is used only while data waits for a slow reader.
	StreamWindow uint64
	ConnWindow   uint64
	// Congestion is the congestion controller for the packets this end sends; each end
	// chooses its own. Default CongestionBBR.
	Congestion Congestion
}

// Congestion names a congestion controller.
type Congestion string

const (
	// CongestionBBR is BBR (version 1): it paces at its estimate of the path's bottleneck
	// bandwidth and keeps its rate through random loss (docs/performance.md).
	CongestionBBR Congestion = "bbr"
	// CongestionCubic is Cubic (RFC 9438), loss-based like most TCP stacks' default.
	CongestionCubic Congestion = "cubic"
)

// ErrCongestion is the error of an unknown congestion controller name.
var ErrCongestion = fmt.Errorf("unknown congestion control: want %s or %s", CongestionBBR, CongestionCubic)

// ParseCongestion checks a congestion controller's name (in any case).
func ParseCongestion(s string) (Congestion, error) {
	switch c := Congestion(strings.ToLower(s)); c {
	case CongestionBBR, CongestionCubic:
		return c, nil
	}
	return "", fmt.Errorf("%w (got %q)", ErrCongestion, s)
}

func (c Congestion) quic() quic.CongestionControl {
	if c == CongestionCubic {
		return quic.CongestionCubic
	}
	return quic.CongestionBBR
}

// check reports settings that cannot work.
func (l Limits) check() error {
	if _, err := ParseCongestion(string(l.Congestion)); err != nil {
		return fmt.Errorf("quicmux: %w", err)
	}
	return nil
}

func (l Limits) withDefaults(server bool) Limits {
	if l.MaxStreams <= 0 {
		l.MaxStreams = 16384
	}
	if l.KeepAlive <= 0 {
		l.KeepAlive = time.Second
		if server {
			l.KeepAlive = 15 * time.Second
		}
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 60 * time.Second
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.StreamWindow == 0 {
		l.StreamWindow = 16 << 20
	}
	if l.ConnWindow == 0 {
		l.ConnWindow = 256 << 20
	}
	if l.Congestion == "" {
		l.Congestion = CongestionBBR
	}
	return l
}

func (l Limits) quicConfig(server bool) *quic.Config {
	c := &quic.Config{
		HandshakeIdleTimeout:           l.HandshakeTimeout,
		MaxIdleTimeout:                 l.IdleTimeout,
		KeepAlivePeriod:                l.KeepAlive,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         l.StreamWindow,
		InitialConnectionReceiveWindow: l.ConnWindow, // see ConnWindow: no slow start here
		MaxConnectionReceiveWindow:     l.ConnWindow,
		MaxIncomingUniStreams:          -1, // quicgate uses bidirectional streams only
		// Datagrams carry only the client's liveness probe (see Client.watch); the
		// server never reads them, and quic-go drops what overflows its small queue.
		EnableDatagrams: true,
		Congestion:      l.Congestion.quic(),
	}
	// The server opens streams too, one per connection a reverse forward's listener
	// accepted; a client without listeners resets them.
	c.MaxIncomingStreams = l.MaxStreams
	return c
}
