package quicmux

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
)

// udpBufferSize is what quic-go asks of a UDP socket's buffers for fast transfers.
const udpBufferSize = 7 << 20

// listenUDP opens the UDP socket for QUIC and sizes its buffers; control, if not nil, sets
// socket options before the bind (netpath.Control: a firewall mark, an interface). Root
// gets the size it asks for through SO_RCVBUFFORCE/SO_SNDBUFFORCE, past net.core.rmem_max;
// others get up to the sysctl limits, and quic-go's own attempt then reports what it could
// not do.
func listenUDP(addr string, control func(network, address string, c syscall.RawConn) error) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: control}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quicmux: %w", err)
	}
	conn := pc.(*net.UDPConn)
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
