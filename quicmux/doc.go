// Package quicmux is quicgate's tunnel core: the per-stream wire protocol, the client that
// turns flows into QUIC streams on one connection, the server that dials each stream's target,
// the identities and pinning that guard the connection, and the forwarding policy.
//
// The core never knows where a flow came from. An ingress (package ingress: -L ports, the TUN
// netstack) hands Client.Carry a Local, the local end of a flow with its target: a Flow
// (established already), a Pending (a handshake that waits for the server's answer) or a
// Reverse (the server's accepted connection, carried to a local target); a Go program dials
// through Client.DialContext. Reverse forwards go the other way: Client.Listen has the server listen
// (reverse_server.go, under ServerConfig.ListenPolicy) and open a stream per connection it
// accepts, which the client carries to a local target (reverse.go). What a flow is does not
// live here but in package flow: its target (flow.Target, which the wire protocol encodes),
// the one contract every end of a flow has, the stream between included (flow.Conn: read,
// write, CloseWrite for a FIN, Abort for a reset), the one relay that uses nothing else
// (flow.StartRelay, run here with the client's or server's flow.Parker), and how a flow ended
// (flow.ErrReset, which a stream reset or a lost connection maps to; flow.ErrRejected, which
// every *StatusError matches, so that flow.Result names it "rejected"). The server hands each
// target to a Dialer after a Policy has allowed it, under the client connection's context,
// and its flows drain through a flow.Group as the ingresses' do. A reload of its rules and
// authorized clients (reload.go) is a LiveAccess, which the server's config reads, and a
// Reloader that rereads the files on an edit or SIGHUP and calls Server.Recheck.
//
// A UDP flow (udpflow.go, udp_client.go, udp_server.go) is set up on a stream like a TCP
// flow and then carries its packets as QUIC datagrams, which the connection's loop hands to
// one datagram handler (datagramMux) with no queue and no goroutine; Client.OpenUDP returns
// its end as a flow.PacketConn for flow.RelayPackets, and the server relays it to a
// flow.UDPSocket. Every request kind (TCP, UDP, a reverse listen, a resolve, an echo) is
// admitted on one path (admission.go: the policy, the client's limits, the metrics).
// The client notices a server that stopped answering, and moves to another path when the
// host has one (liveness.go), within seconds.
package quicmux
