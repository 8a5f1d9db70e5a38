package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

// prefixOf converts a route's destination; ok is false for none (a default route has one:
// 0.0.0.0/0).
func prefixOf(n *net.IPNet) (p netip.Prefix, ok bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// family is p's address family, netlink.FAMILY_V4 or FAMILY_V6.
func family(p netip.Prefix) int {
	if p.Addr().Unmap().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// families lists the address families of ps, IPv4 first.
func families(ps []netip.Prefix) []int {
	var v4, v6 bool
	for _, p := range ps {
		if family(p) == netlink.FAMILY_V4 {
			v4 = true
		} else {
			v6 = true
		}
	}
	var fams []int
	if v4 {
		fams = append(fams, netlink.FAMILY_V4)
	}
	if v6 {
		fams = append(fams, netlink.FAMILY_V6)
	}
	return fams
}

func familyName(fam int) string {
	if fam == netlink.FAMILY_V4 {
		return "IPv4"
	}
	return "IPv6"
}

// dumpTries bounds how often a dump is made again when the kernel reports that a change
// interrupted it (NLM_F_DUMP_INTR), which leaves its results incomplete.
const dumpTries = 5

// listRoutes lists the routes of one family in table. A kernel without that family has
// none.
func listRoutes(h *netlink.Handle, fam, table int) ([]netlink.Route, error) {
	return dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	})
}

// listRules lists the rules of one family. A kernel without that family has none.
func listRules(h *netlink.Handle, fam int) ([]netlink.Rule, error) {
	return dump(func() ([]netlink.Rule, error) { return h.RuleList(fam) })
}

func dump[T any](list func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpTries {
		var res []T
		res, err = list()
		switch {
		case errors.Is(err, unix.EAFNOSUPPORT):
			return nil, nil
		case !errors.Is(err, netlink.ErrDumpInterrupted):
			return res, err
		}
	}
	return nil, err
}
