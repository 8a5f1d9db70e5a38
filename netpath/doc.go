// Package netpath owns what a tunnel client learns from the host's routing about its way to
// the server (Linux; elsewhere it offers nothing and reports no change):
//
//   - Control: socket options for the client's UDP sockets: a firewall mark (SO_MARK), which
//     a full tunnel's policy routing (package tun) lets past the tunnel onto the host's own
//     routes, and a binding to one interface (SO_BINDTODEVICE) for a path that must leave
//     through it;
//   - Others: the interfaces other than today's through which the host's routes reach the
//     server, to probe when today's stopped carrying packets;
//   - Watcher: a signal when the host's links, addresses or routes change, from netlink
//     events (no polling), so that the client tells the server of a new address at once.
//
// It knows nothing of QUIC or of the tunnel: quicmux's client uses it.
package netpath
