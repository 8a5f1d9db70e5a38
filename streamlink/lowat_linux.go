package streamlink

import (
	"net"

	"golang.org/x/sys/unix"
)

// NotSentLowat is the most unsent data the kernel keeps in a stream's socket
// (TCP_NOTSENT_LOWAT): a write waits beyond it, so the queue in front of a stream's
// congestion window stays short and QUIC, not the socket, holds what waits.
const NotSentLowat = 128 << 10

// tuneStream sets NotSentLowat on c's TCP socket (under TLS sessions and a proxy's
// buffered conn too), where it is one.
func tuneStream(c net.Conn) {
	tcp, ok := innermost(c).(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, NotSentLowat)
	})
}
