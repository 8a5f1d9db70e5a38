package flow

import (
	"net"
	"syscall"
	"time"
)

// Defaults for how long a flow may outlive its peer.
const (
	// DefaultTCPKeepAlive is how long a TCP end of a flow (a -L socket, a TUN flow, a socket
	// the server dialed) may be silent before keepalive probes ask whether its peer still
	// exists. Four probes go out a quarter of it apart, so a peer that vanished without a
	// packet (powered off, its NAT state dropped) is found, and the flow reset, within twice
	// this time: two minutes.
	DefaultTCPKeepAlive = 60 * time.Second

	// DefaultIdleTimeout resets a flow that moved no byte either way for this long, even
	// though both peers answer keepalives: 2 hours 4 minutes, the shortest idle timeout RFC
	// 5382 (REQ-5) lets a NAT apply to an established TCP connection, so the tunnel is never
	// stricter than the NATs apps already survive.
	DefaultIdleTimeout = 2*time.Hour + 4*time.Minute
)

// keepAliveCount is how many unanswered probes end a connection.
const keepAliveCount = 4

// KeepAliveConfig turns a keepalive time (0: DefaultTCPKeepAlive; negative: off) into the
// socket settings: probes after idle, then every idle/4 (at least a second), four of them.
func KeepAliveConfig(idle time.Duration) net.KeepAliveConfig {
	switch {
	case idle < 0:
		return net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1}
	case idle == 0:
		idle = DefaultTCPKeepAlive
	}
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: max(idle/keepAliveCount, time.Second), Count: keepAliveCount}
}

// keepAliveField is net.Dialer's and net.ListenConfig's KeepAlive for a config: negative
// turns the stdlib's default keepalive off when ours is off.
func keepAliveField(c net.KeepAliveConfig) time.Duration {
	if c.Enable {
		return 0
	}
	return -1
}

// TCPDialer is a net.Dialer whose sockets keep alive as KeepAliveConfig(idle) says.
func TCPDialer(idle time.Duration) *net.Dialer {
	ka := KeepAliveConfig(idle)
	return &net.Dialer{KeepAliveConfig: ka, KeepAlive: keepAliveField(ka), Control: userTimeout(ka)}
}

// TCPListenConfig is a net.ListenConfig whose accepted sockets keep alive as
// KeepAliveConfig(idle) says. On Linux the settings are made once, on the listener, which
// every accepted socket inherits (keepalive_linux.go): a new flow costs four system calls
// fewer.
func TCPListenConfig(idle time.Duration) net.ListenConfig {
	ka := KeepAliveConfig(idle)
	if !ka.Enable || !listenerKeepAlive {
		return net.ListenConfig{KeepAliveConfig: ka, KeepAlive: keepAliveField(ka), Control: userTimeout(ka)}
	}
	ms := int(UserTimeout(ka).Milliseconds())
	return net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			if serr = setUserTimeout(int(fd), ms); serr == nil {
				serr = setKeepAlive(int(fd), ka)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
}

// UserTimeout is how long a TCP end of a flow may leave bytes unacknowledged before it
// fails: the keepalive's own bound, idle plus all the probes. Keepalive probes only go out
// while nothing is unacknowledged; with bytes in flight to a vanished peer the kernel would
// retransmit for about 15 minutes instead.
func UserTimeout(ka net.KeepAliveConfig) time.Duration {
	if !ka.Enable {
		return 0
	}
	return ka.Idle + time.Duration(ka.Count)*ka.Interval
}

// userTimeout sets TCP_USER_TIMEOUT on a socket before it connects or listens (accepted
// sockets inherit it from the listener).
func userTimeout(ka net.KeepAliveConfig) func(network, address string, c syscall.RawConn) error {
	ms := int(UserTimeout(ka).Milliseconds())
	if ms <= 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setUserTimeout(int(fd), ms) }); err != nil {
			return err
		}
		return serr
	}
}
