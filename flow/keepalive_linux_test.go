package flow

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAcceptedSocketsInheritKeepAlive: the keepalive settings and the user timeout set once
// on a listener (TCPListenConfig: -L, -D, -R) are those of every socket it accepts, as if each
// had been set on its own; and keepalive off leaves them off.
func TestAcceptedSocketsInheritKeepAlive(t *testing.T) {
	for _, keepalive := range []time.Duration{0, 7 * time.Second, -1} {
		lc := TCPListenConfig(keepalive)
		ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ka := KeepAliveConfig(keepalive)
		want := map[string]int{"SO_KEEPALIVE": 0, "TCP_USER_TIMEOUT": 0}
		if ka.Enable {
			want = map[string]int{
				"SO_KEEPALIVE":     1,
				"TCP_KEEPIDLE":     seconds(ka.Idle),
				"TCP_KEEPINTVL":    seconds(ka.Interval), // rounded up, as net.KeepAliveConfig does
				"TCP_KEEPCNT":      ka.Count,
				"TCP_USER_TIMEOUT": int(UserTimeout(ka) / time.Millisecond),
			}
		}
		opts := map[string][2]int{
			"SO_KEEPALIVE": {unix.SOL_SOCKET, unix.SO_KEEPALIVE}, "TCP_KEEPIDLE": {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, "TCP_KEEPCNT": {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
			"TCP_USER_TIMEOUT": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
		}
		rc, err := a.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		for name, w := range want {
			var got int
			var gerr error
			_ = rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), opts[name][0], opts[name][1]) })
			if gerr != nil || got != w {
				t.Errorf("keepalive %v: accepted socket's %s = %d (%v), want %d", keepalive, name, got, gerr, w)
			}
		}
		_ = a.Close()
		_ = c.Close()
		_ = ln.Close()
	}
}
