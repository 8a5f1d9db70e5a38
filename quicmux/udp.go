package quicmux

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// udpBufferSize is what quic-go asks of a UDP socket's buffers for fast transfers.
const udpBufferSize = 7 << 20

// listenUDP opens the UDP socket for QUIC and sizes its buffers. Root gets the size it asks
// for through SO_RCVBUFFORCE/SO_SNDBUFFORCE, past net.core.rmem_max; others get up to the
// sysctl limits, and quic-go's own attempt then reports what it could not do.
func listenUDP(addr string) (net.PacketConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quicmux: listen address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("quicmux: %w", err)
	}
	forceBuffers(conn)
	return withGRO(conn), nil
}

func forceBuffers(conn *net.UDPConn) {
	if os.Geteuid() != 0 {
		return
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, udpBufferSize)
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, udpBufferSize)
	})
}
