package flow

// MaxUDPPacket is the largest packet a UDP flow carries: the most a UDP datagram holds over
// IPv6 (65,535 less the UDP header; IPv4's is 65,507, and a server's socket refuses more
// toward an IPv4 target, dropping it). Buffers of this size never cut a packet short.
const MaxUDPPacket = 65527
