// Package wan is the WAN-profile benchmark (make bench-wan): each way users would carry one
// TCP flow across a slow, lossy link (direct TCP and ssh -L, each over cubic and over bbr;
// quicgate -L with either congestion control, and over its TCP transport, QUIC over TLS over
// one kernel bbr TCP connection; quicgate TUN), measured across a link emulated in
// userspace (package wanlink) between two network namespaces, for several rate, round trip
// and loss profiles. A UDP flow's ways (direct UDP, quicgate -U, quicgate TUN) are
// measured on the same link after the TCP rows: 1200-byte packets one way at half and nine
// tenths of the link rate, sent and counted by the harness itself on sockets made in the
// two namespaces (udp.go).
//
// The harness runs everything as processes: the link emulator (qgwan link) in the host
// namespace, the destinations (a metering sink and an echo; qgwan serve), sshd and the
// quicgate server in the server namespace, and the ssh client, the quicgate client and the
// load generator (qgwan gen) in the client namespace. The bulk data goes from the client
// side to the server side, as iperf3's default. Every figure is taken at the receiving end
// over a fixed window, so a slow path costs no extra time to drain. The report is a markdown
// table per figure (rows x profiles, with ratios to "ssh -L over bbr"), the targets, JSON
// and a PNG chart; the emulator's CPU use is reported with each result, so that a saturated
// emulator is not mistaken for a slow tunnel.
package wan
