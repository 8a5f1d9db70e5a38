package tun

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// ipNet converts a prefix, keeping the address's host bits (an interface address).
func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func hasIPv6(cfg Config) bool {
	for _, p := range append(append([]netip.Prefix(nil), cfg.Addrs...), cfg.Routes...) {
		if p.Addr().Is6() && !p.Addr().Is4In6() {
			return true
		}
	}
	return false
}

// enableIPv6 clears disable_ipv6 on the interface, which a namespace or a host may set by
// default; without it IPv6 addresses and routes are refused.
func enableIPv6(name string) error {
	path := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("tun: IPv6 is not available on this host (%s missing)", path)
		}
		return fmt.Errorf("tun: %w", err)
	}
	if strings.TrimSpace(string(b)) == "0" {
		return nil
	}
	if err := os.WriteFile(path, []byte("0"), 0o644); err != nil {
		return fmt.Errorf("tun: enabling IPv6 on %s: %w", name, err)
	}
	return nil
}
