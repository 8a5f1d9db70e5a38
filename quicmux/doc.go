// Package quicmux is quicgate's tunnel core: the per-stream wire protocol, the client that
// turns flows into QUIC streams on one connection, the server that dials each stream's target,
// the identities and pinning that guard the connection, the forwarding policy, and the one relay
// every flow goes through.
//
// The core never knows where a flow came from. An ingress (a localhost port listener, the TUN
// netstack, or a Go program through Client.DialContext) hands it a net.Conn plus a target; the
// server side hands each target to a Dialer after a Policy has allowed it.
package quicmux
