package ingress

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/flow"
)

// listenConfig is the listen config of the -L and -D sockets: their accepted sockets keep
// alive as flow.KeepAliveConfig(keepalive) says. Linux copies a listening socket's
// keepalive settings (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) and its
// TCP_USER_TIMEOUT to every socket it accepts, so they are set once, on the listener,
// instead of with four system calls on each accepted socket (as net.ListenConfig's
// KeepAliveConfig does): a new flow costs four system calls fewer.
func listenConfig(keepalive time.Duration) net.ListenConfig {
	lc := flow.TCPListenConfig(keepalive)
	ka := flow.KeepAliveConfig(keepalive)
	if !ka.Enable {
		return lc
	}
	userTimeout := lc.Control // TCP_USER_TIMEOUT, inherited too
	lc.KeepAlive, lc.KeepAliveConfig = -1, net.KeepAliveConfig{}
	lc.Control = func(network, address string, c syscall.RawConn) error {
		if userTimeout != nil {
			if err := userTimeout(network, address, c); err != nil {
				return err
			}
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt, v int }{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, seconds(ka.Idle)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, seconds(ka.Interval)},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ka.Count},
			} {
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
	return lc
}

// seconds rounds d up to whole seconds, as net.KeepAliveConfig's own setting does.
func seconds(d time.Duration) int { return max(1, int((d+time.Second-1)/time.Second)) }
