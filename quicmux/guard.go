package quicmux

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// guarded reports whether a is an address that a name rule alone does not let the server
// dial: loopback, link-local (169.254.0.0/16, fe80::/10, where clouds serve instance
// metadata), unspecified, or one of the server's own addresses. An allowed name whose DNS
// answer points there (DNS rebinding) would reach services the operator never allowed;
// only an address rule covering a, or a name from the hosts file, reaches it.
func (s *Server) guarded(a netip.Addr) bool {
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || s.own.has(a)
}

// ownAddrs is the set of the host's interface addresses, read again when older than ownTTL
// (addresses come and go with DHCP and VPNs).
type ownAddrs struct {
	mu    sync.Mutex
	read  time.Time
	addrs map[netip.Addr]bool
}

const ownTTL = 5 * time.Second

func (o *ownAddrs) has(a netip.Addr) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.addrs == nil || time.Since(o.read) > ownTTL {
		o.addrs = map[netip.Addr]bool{}
		o.read = time.Now()
		if ifAddrs, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range ifAddrs {
				if p, err := netip.ParsePrefix(ia.String()); err == nil {
					o.addrs[p.Addr().Unmap()] = true
				}
			}
		}
	}
	return o.addrs[a.Unmap()]
}
