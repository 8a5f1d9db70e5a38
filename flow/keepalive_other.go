//go:build !linux

package flow

import "net"

// listenerKeepAlive: elsewhere accepted sockets are not known to inherit a listener's
// keepalive settings, so net.ListenConfig sets them on each.
const listenerKeepAlive = false

func setKeepAlive(int, net.KeepAliveConfig) error { return nil }
