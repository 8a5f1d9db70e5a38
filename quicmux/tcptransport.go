package quicmux

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/streamlink"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// The TCP transport: where UDP is blocked, the same QUIC connection runs over TLS on TCP,
// each QUIC packet a frame on the TLS stream (package streamlink). Everything above the
// packets is the QUIC transport's: the handshake with the client's and server's identities,
// the pin, the authorized clients, the streams, their flow control, resets and half-closes,
// the per-flow protocol, datagrams (in QUIC DATAGRAM frames inside the packets), the
// liveness probes. The outer TLS (ALPNTCP) adds what a TCP firewall or proxy sees: a TLS
// 1.3 session with the server's own certificate, which the client checks against its pin
// before it sends a packet, and a client certificate, without which the server reads
// nothing. Who may connect is decided once, inside, as over UDP.

// ALPNTCP is the ALPN of the TCP transport's outer TLS session.
const ALPNTCP = "quicgate-tcp/1"

// streamPacketSize is the QUIC packet size over a stream: the largest the fork's buffers hold
// (third_party/quic-go, MaxPacketBufferSize). A stream neither fragments nor loses a packet
// for its size, so there is nothing for path MTU discovery to find.
const streamPacketSize = 16383

// streamQUICConfig is a QUIC config for a connection over a stream: the stream is TCP's,
// congestion controlled and with backpressure (package streamlink), so the connection has no
// congestion control of its own (quic.CongestionNone) and sends as fast as the stream takes
// packets, as an application writing to a TCP socket; --congestion is QUIC's over UDP.
func streamQUICConfig(c *quic.Config) *quic.Config {
	c.InitialPacketSize = streamPacketSize
	c.DisablePathMTUDiscovery = true
	c.Congestion = quic.CongestionNone
	return c
}

// outerTLS makes a TLS config of the QUIC one for the TCP transport's outer session.
func outerTLS(inner *tls.Config) *tls.Config {
	c := inner.Clone()
	c.NextProtos = []string{ALPNTCP}
	return c
}

// ListenTCP serves the TCP transport on addr (host:port, TCP) until Close: the same
// clients, rules and limits as Listen's QUIC. It returns the bound address.
func (s *Server) ListenTCP(addr string) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.tcpLn != nil {
		return nil, fmt.Errorf("quicmux: server is already listening on TCP")
	}
	var lc net.ListenConfig
	tl, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("quicmux: %w", err)
	}
	// The outer session demands a client certificate but does not judge it: the QUIC
	// handshake inside does, with the rejection the client understands (ErrUnauthorized).
	outer := &tls.Config{Certificates: []tls.Certificate{s.cfg.Identity.Cert}, NextProtos: []string{ALPNTCP},
		MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert}
	sl := streamlink.NewServer(tl, streamlink.ServerConfig{
		HandshakeTimeout: s.cfg.Limits.HandshakeTimeout,
		Handshake: func(ctx context.Context, c net.Conn) (net.Conn, error) {
			tc := tls.Server(c, outer)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, err
			}
			return tc, nil
		},
		Rejected: func(peer net.Addr, reason string, err error) {
			if ok, held := s.tcpLines.allow(); ok {
				s.log.WithFields(withHeld(logrus.Fields{"peer": peer.String(), "reason": reason}, held)).WithError(err).
					Debug("TCP transport: connection closed before its QUIC handshake")
			}
		},
	})
	resetKey, err := s.cfg.Identity.statelessResetKey()
	if err != nil {
		_ = sl.Close()
		return nil, err
	}
	tr := &quic.Transport{Conn: sl, StatelessResetKey: resetKey, ConnContext: s.hs.connContext}
	tlsConf := serverTLS(s.cfg.Identity, s.cfg.Authorized, s.log, s.cfg.Metrics.handshakeFailed)
	ln, err := tr.Listen(tlsConf, streamQUICConfig(s.cfg.Limits.quicConfig(true)))
	if err != nil {
		_ = tr.Close()
		_ = sl.Close()
		return nil, fmt.Errorf("quicmux: %w", err)
	}
	s.tcpTr, s.tcpLn, s.streams = tr, ln, sl
	s.wg.Add(1)
	go s.acceptConns(ln, sl)
	s.log.WithField("addr", sl.Addr().String()).Info("server listening on TCP (the fallback transport)")
	return sl.Addr(), nil
}

// overStream ties a connection that came over the TCP transport (sl) to its stream: the
// connection ends with the stream (a client that went away: no need to wait for the idle
// timeout), and the stream stops counting as pending (streamlink.Server.Claim). serveConn
// calls what it returns once the connection has ended: it closes the stream, after writing
// what is queued (the connection's close), in serveConn's goroutine, which the server waits
// for.
func overStream(sl *streamlink.Server, qc *quic.Conn) (done func()) {
	if sl == nil {
		return func() {}
	}
	sctx, ok := sl.Claim(qc.RemoteAddr())
	if !ok {
		_ = qc.CloseWithError(connShutdown, "stream closed")
		return func() {}
	}
	stop := context.AfterFunc(sctx, func() { _ = qc.CloseWithError(connShutdown, "stream closed") })
	return func() {
		stop()
		sl.CloseStream(qc.RemoteAddr())
	}
}
