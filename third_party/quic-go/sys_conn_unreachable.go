//go:build unix

package quic

import (
	"errors"
	"syscall"
)

// quicgate patch: isNetworkSendErr reports whether a failed send says only that the network
// cannot carry the packet right now: no route (an interface went down, Wi-Fi is handing
// over to LTE), a socket bound to an interface that went away, a local address that was
// removed, a full device queue, or a firewall that refused it. Such a packet is lost, as
// one dropped by a router would be, and loss recovery and the idle timeout take it from
// there; upstream closes the connection on any send error but EMSGSIZE
// (quic-go/quic-go#2809 "handle temporary send errors", open), which ends every stream of
// a connection that the next route would have carried on.
func isNetworkSendErr(err error) bool {
	for _, e := range []syscall.Errno{
		syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ENETDOWN, syscall.EHOSTDOWN,
		syscall.EADDRNOTAVAIL, syscall.ENODEV, syscall.ENXIO, syscall.ENOBUFS, syscall.EPERM,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
