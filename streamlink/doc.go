// Package streamlink carries QUIC packets over byte streams, for quicgate's TCP transport:
// where UDP is blocked, the client reaches the server over TLS on TCP (directly, or through an
// HTTP CONNECT proxy) and runs the same QUIC connection, the same streams and the same
// per-flow protocol over it, packet by packet.
//
// It owns three things:
//
//   - the framing (frame.go): each packet is a 2-byte big-endian length and the packet;
//   - the client's end (conn.go): Conn, a net.PacketConn over one stream, which a
//     quic.Transport takes as its socket;
//   - the server's end (server.go): Server, one net.PacketConn over every stream a listener
//     accepts, each stream one peer address, with the listener's protections (a bound on
//     streams in their handshake, per source address, and a deadline for the QUIC
//     handshake to complete on a stream).
//
// A stream is congestion controlled already (by TCP), so it gives its writers backpressure,
// as a socket does: what a sender writes waits in a small queue (QueueBytes) while the stream
// is busy, and a writer that finds the queue full waits for room, up to a second, before its
// packet is dropped. The QUIC connection over it runs without congestion control of its own
// (quic-go's CongestionNone, third_party/quic-go/QUICGATE.md): it sends as fast as the
// stream takes packets, and the stream always has data waiting, as an application writing
// to a TCP socket keeps it. The kernel's unsent data is kept short as well (NotSentLowat),
// so that what waits, waits inside QUIC, per QUIC stream. Reads never drop. Packets may be as
// large as the framing allows (MaxPacket), so a QUIC connection over a stream uses packets
// of 16 KiB rather than a UDP path's 1,452 bytes, and most of QUIC's cost, which is per
// packet, falls tenfold.
package streamlink
