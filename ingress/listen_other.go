//go:build !linux

package ingress

import (
	"net"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// listenConfig is the listen config of the -L and -D sockets: their accepted sockets keep
// alive as flow.KeepAliveConfig(keepalive) says.
func listenConfig(keepalive time.Duration) net.ListenConfig {
	return flow.TCPListenConfig(keepalive)
}
