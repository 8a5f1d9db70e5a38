// Package flow is the vocabulary of a flow, shared by the tunnel core (package quicmux), the
// ingresses (package ingress) and any program that relays through quicgate. It owns:
//
//   - where a flow goes (target.go): Target, an IP address or a domain name and a port, which
//     quicmux's wire protocol encodes; ParseTarget, ParsePort, CheckHostname, ErrBadTarget;
//   - what an end of a flow is (conn.go): Conn, the one contract every end has (the app's
//     socket behind an ingress, the QUIC stream, the destination socket the server dialed):
//     Read, Write, CloseWrite for a FIN, Abort for a reset, Close; AsConn gives it to any
//     net.Conn;
//   - the one relay (relay.go): Relay, RelayWith and StartRelay move bytes both ways between
//     two Conns and end each side the way the other ended; RelayOptions (idle timeout, byte
//     counters, an end to follow, a Parker), Stats; the Parker (parker_linux.go) watches idle
//     kernel sockets in one epoll set so that an idle flow costs no goroutine;
//   - the drain (group.go): Group, a set of open flows that refuses new ones and resets
//     those that outlive it (ErrDrained);
//   - how a flow ended (errors.go): ErrReset and IsReset (relay.go), ErrIdle, ErrRejected
//     (which the tunnel's own errors match), and Result, the name logs and metrics give it;
//   - TCP keepalive for a flow's kernel sockets (keepalive.go): KeepAliveConfig, TCPDialer,
//     TCPListenConfig (on Linux set once on the listener, keepalive_linux.go), UserTimeout,
//     and the defaults DefaultTCPKeepAlive and DefaultIdleTimeout;
//   - the one packet relay (packet.go): PacketConn, the contract every end of a UDP flow has
//     (Start hands its packets over as they come, WritePackets sends a batch without
//     waiting, except the tunnel's end, Close tells the peer why), RelayPackets, which joins
//     two ends holding no goroutine (an idle timeout is a timer), PacketRelayOptions,
//     PacketStats; MaxUDPPacket, the largest packet a UDP flow carries;
//   - kernel UDP sockets as packet ends: UDPSocket (udpsock.go), a connected socket (the
//     server's to a UDP target) read in batches while packets come and watched by the
//     Parker while none do; SharedUDPSocket (udpshared.go), one bound socket that many
//     flows share, with one reader; both read with recvmmsg and UDP GRO and write with
//     sendmmsg and UDP GSO (mmsg_linux.go), and GROSegmentSize reads the GRO control
//     message for any socket, the QUIC connection's included.
//
// It knows nothing of QUIC or of where a flow came from: it imports neither quicmux nor
// quic-go nor ingress (imports_test.go), so every layer can name a flow without the core.
package flow
