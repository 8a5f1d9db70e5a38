// Package ingress turns local traffic into flows and hands them to the tunnel: each ingress
// finds a flow's target (a flow.Target) and its local end, and gives both to a Tunnel
// (*quicmux.Client) with Carry, as a quicmux.Local: a quicmux.Flow for a socket established
// already (-L), a quicmux.Pending for a handshake that waits for the server's answer (the
// TUN's SYN, a proxy's request), a quicmux.Reverse for a connection the server accepted
// (-R). A UDP flow's local end is a flow.PacketConn, which it joins to the tunnel's
// (UDPTunnel.OpenUDP) with flow.RelayPackets, the one packet relay. It speaks package flow's
// vocabulary and needs quicmux only for the client behind Tunnel and its other interfaces
// (its Local kinds, MaxEchoPayload) and for the server's verdicts (StatusError and its
// sentinels). It owns:
//
//   - the ingress contract (ingress.go): Ingress, which Serve drains and Close releases, and
//     the tunnel each kind of ingress takes, which declares what it uses: Tunnel (Carry)
//     for -L, ProxyTunnel (and UDP flows) for -D, ReverseTunnel (and Listen) for -R,
//     UDPTunnel for -U, TUNTunnel (flows, UDP flows, Resolve, Echo) for the TUN; one helper
//     through which every ingress's flows are carried and logged, and one drain
//     (flow.Group);
//   - -L ports (ports.go): a kernel TCP listener per forward, ssh -L's syntax, accepted
//     sockets with TCP keepalive (set once on the listener, which Linux copies to each
//     accepted socket: flow.TCPListenConfig);
//   - the TUN ingress (tun.go): a TUN device (package tun) whose TCP flows a gVisor netstack
//     (package netstack) terminates, each answered only once the server has reached its
//     destination; UDP 5-tuples become UDP flows (tunudp.go); DNS queries to TUNConfig.DNS
//     are answered by resolving at the server (tundns.go); a UDP flow's app end is the
//     netstack's UDPConn.Packets, and once the flow is open no goroutine is left waiting on
//     it; pings are answered when the
//     server's echo is (tunecho.go); AdoptTUN (tunfd.go) serves a
//     device made in another namespace (quicgate run's, package rootless) the same way;
//   - -R reverse forwards (reverse.go): a listener the server keeps on its side
//     (quicmux.Client.Listen), whose connections are carried to a target dialed here;
//   - -D dynamic forwards (proxy.go, socks.go, httpproxy.go): a SOCKS5 and HTTP proxy on
//     any net.Listener, each request a flow to the target it names, answered only once the
//     server has (with the SOCKS5 reply code or HTTP status of its verdict).
//   - -U UDP forwards (udpport.go): a local UDP socket whose source addresses each get a UDP
//     flow (UDPTunnel.OpenUDP) to the forward's target, as a NAT gives each a mapping;
//   - the flows of a shared UDP socket (udpshared.go): sharedFlow, the flow.PacketConn of one
//     source of a -U port or one target of a SOCKS5 UDP association (socksudp.go), fed by
//     the socket's one reader (flow.SharedUDPSocket), with at most 64 packets kept while
//     the server answers the flow's request.
//
// A TCP flow's local end is a flow.Conn: it can half-close (FIN) and abort (RST), so every
// flow ends at the app the way it ended at the far side, whichever ingress it came through;
// a UDP flow's ends as UDP's do, with an ICMP port unreachable where the far side refused.
// cmd/quicgate only parses flags and wires ingresses to a client.
package ingress
