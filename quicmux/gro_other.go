//go:build !linux

package quicmux

import "net"

// withGRO returns conn as it is: UDP GRO is a Linux socket option.
func withGRO(conn *net.UDPConn) net.PacketConn { return conn }
