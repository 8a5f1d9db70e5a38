// Package netstack terminates TCP and UDP flows in a userspace gVisor stack and hands each
// one, with its original destination, to a Handler (TCP) or a UDPHandler (UDP). It never imports the tunnel core
// (quicmux): the Handler decides what a flow becomes.
//
// What it owns:
//
//   - the gVisor stack (one NIC, IPv4 and IPv6, TCP and UDP) and its tuned TCP settings
//     (options.go: SACK, 8 MiB buffers with moderation, RACK off, Reno pinned);
//   - the batched link endpoint (endpoint.go): a read goroutine and a write goroutine that
//     move packets between gVisor and a wireguard tun.Device in batches of BatchSize();
//   - the forwarder (forwarder.go): every SYN that no ListenTCP listener takes becomes a
//     TCPRequest passed to Handler.HandleTCP in its own goroutine, before the handshake
//     (dial before accept); Accept sends the SYN-ACK, Reject a RST;
//   - the UDP forwarder (udp.go): every new 5-tuple becomes a connected UDPConn, created
//     at once so the first packets wait in it (1 MiB receive buffer), passed to
//     UDPHandler.HandleUDP in its own goroutine, which may return once the flow is set up;
//     replies leave from the original destination, and UDPConn.Refuse answers with an
//     ICMP port unreachable built here (gVisor offers no API to send one) and queued on
//     the link. Config.MaxUDPFlows bounds the open flows. UDPConn.Packets (udppackets.go)
//     is the flow's app end as a flow.PacketConn: a gVisor waiter entry wakes a batched
//     read when packets come, so an idle flow holds no goroutine and no buffer. The link's
//     read loop yields every 64 UDP packets (endpoint.go) so that those reads keep up
//     with a flood rather than let the stack's queues overflow;
//   - echo requests (echo.go): ICMP and ICMPv6 echo requests to hosts other than the
//     stack's own addresses are taken off the link before gVisor sees them and passed to
//     EchoHandler.HandleEcho in their own goroutine (Config.MaxEchoes at once); the echo
//     reply, built here, is queued on the link when the handler says the host answered;
//   - the tun.Device given to NewTUN: Stack.Close closes it, because a blocking
//     Device.Read only returns once the device is closed.
//
// Two ways to build a Stack: NewTUN over a device (a kernel TUN made by package tun, or
// any tun.Device, such as wireguard's tun/netstack.CreateNetTUN or memtun.Pipe in tests),
// promiscuous and spoofing so every routed destination is answered; and NewVirtual, with
// no device, whose DialTCP and ListenTCP serve in-process applications.
//
// # Throughput
//
// One flow, 2-core machine, `go test -run XXX -bench . -benchtime 2s ./netstack/`,
// Gbit/s over two runs (up = app to Handler, down = Handler to app; runs vary widely):
//
//	                          MTU 1500            MTU 9000            MTU 65535
//	CreateNetTUN pipeline     up 1.0-1.6          up 2.5-3.5          up 7.2
//	                          down 2.0-3.2        down 5.4-6.6        down 13.8-16.8
//	two Stacks over memtun    up 2.6-3.9          up 8.1-13.7         up 14.8-25
//	(batch 128)               down 2.4-4.0        down 9.1-15.4       down 16.5-29
//
// In the CreateNetTUN pipeline the application side (wireguard's netstack, one packet
// per Read through an unbuffered channel, one allocation per packet) is the bottleneck;
// the memtun rows show what this package's batched link sustains. The MTU is the
// biggest lever after batching: use RecommendedTUNMTU (65535) for the TUN device unless
// something on the path needs less; 9000 still gives most of the gain.
//
// # GSO
//
// The stack does not use gVisor GSO. wireguard's tun.Device.Write takes plain IP packets
// (it GRO-coalesces them towards the kernel itself) and its Read already returns
// GRO-coalesced packets, so with a 64 KiB MTU gVisor already sends and receives
// 64 KiB segments, which is what Tailscale's GSO change
// (tailscale commit cc370314, wgengine/netstack/link_endpoint.go) bought them with a
// 1280 MTU. Passing gVisor GSO segments with a virtio header to the kernel needs a
// device write API wireguard-go does not offer; it is the next lever if a small TUN MTU
// is ever required.
package netstack
