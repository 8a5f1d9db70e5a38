package flow

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// listenerKeepAlive: Linux copies a listening socket's keepalive settings (SO_KEEPALIVE,
// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) and its TCP_USER_TIMEOUT to every socket it
// accepts, so TCPListenConfig sets them once, on the listener, instead of with four system
// calls on each accepted socket (as net.ListenConfig's KeepAliveConfig does).
const listenerKeepAlive = true

// setKeepAlive sets ka's keepalive options on fd.
func setKeepAlive(fd int, ka net.KeepAliveConfig) error {
	for _, o := range []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, seconds(ka.Idle)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, seconds(ka.Interval)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ka.Count},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return err
		}
	}
	return nil
}

// seconds rounds d up to whole seconds, as net.KeepAliveConfig's own setting does.
func seconds(d time.Duration) int { return max(1, int((d+time.Second-1)/time.Second)) }
