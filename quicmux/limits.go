package quicmux

import (
	"time"

	"github.com/quic-go/quic-go"
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
	// StreamWindow and ConnWindow are the largest receive windows flow control may grow to;
	// defaults 16 MiB and 64 MiB, enough for several Gbit/s on a low-latency path.
	StreamWindow uint64
	ConnWindow   uint64
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
		l.ConnWindow = 64 << 20
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
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     l.ConnWindow,
		MaxIncomingUniStreams:          -1, // quicgate uses bidirectional streams only
		// Datagrams carry only the client's liveness probe (see Client.supervise); the
		// server never reads them, and quic-go drops what overflows its small queue.
		EnableDatagrams: true,
	}
	if server {
		c.MaxIncomingStreams = l.MaxStreams
	} else {
		c.MaxIncomingStreams = -1 // the server never opens streams
	}
	return c
}
