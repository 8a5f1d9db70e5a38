//go:build !linux

package streamlink

import "net"

// NotSentLowat is Linux's TCP_NOTSENT_LOWAT setting; elsewhere the socket's defaults hold.
const NotSentLowat = 0

func tuneStream(net.Conn) {}
