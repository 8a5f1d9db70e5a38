// Package quicmux is quicgate's tunnel core: the per-stream wire protocol, the client that
// turns flows into QUIC streams on one connection, the server that dials each stream's target,
// the identities and pinning that guard the connection, the forwarding policy, and the one relay
// every flow goes through.
//
// The core never knows where a flow came from. An ingress (package ingress: -L ports, the TUN
// netstack) hands Client.Carry a Flow, a target plus a local end; a Go program dials through
// Client.DialContext. Reverse forwards go the other way: Client.Listen has the server listen
// (reverse_server.go, under ServerConfig.ListenPolicy) and open a stream per connection it
// accepts, which the client carries to a local target (reverse.go). Every end of a flow, the stream between included, has one contract,
// FlowConn (read, write, CloseWrite for a FIN, Abort for a reset), and Relay uses nothing
// else. The server hands each target to a Dialer after a Policy has allowed it, under the
// client connection's context, and its flows drain through a FlowGroup as the ingresses' do.
package quicmux
