package main

import (
	"flag"
	"net/netip"
	"strings"

	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/tun"
)

// tunFlags are the client's privileged-mode flags.
type tunFlags struct {
	name             string
	addrs            multiFlag
	routes           multiFlag
	excludes         multiFlag
	excludeConnected bool
	table            int
	mtu              int
	dns              string
}

func (t *tunFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.name, "tun", "", "create this TUN interface and tunnel the TCP and UDP flows (and pings) routed into it (needs CAP_NET_ADMIN)")
	fs.Var(&t.addrs, "tun-addr", "address of the TUN interface with its prefix length, e.g. 10.77.0.1/24 (repeatable)")
	fs.Var(&t.routes, "route", "prefix to route into the TUN interface, e.g. 10.99.0.0/16, or 0.0.0.0/0 and ::/0 ('default': both) for every flow of the host; the tunnel's own packets keep the host's routes (repeatable; at least one with --tun)")
	fs.Var(&t.excludes, "exclude", "prefix kept off the TUN interface although a --route covers it, e.g. a printer's 192.168.1.20/32 (repeatable; the longer prefix wins)")
	fs.BoolVar(&t.excludeConnected, "exclude-connected", true, "keep the host's directly connected subnets (its LANs) off the TUN interface, as they change; false sends them into the tunnel too")
	fs.IntVar(&t.table, "route-table", tun.DefaultTable, "routing table, rule priority and firewall mark of the TUN's routes (1-32765, not 253; another one for a second TUN client on this host)")
	fs.StringVar(&t.dns, "tun-dns", "", "answer DNS queries sent to this address (UDP and TCP port 53; inside a --tun-addr prefix or a --route, not the interface's own address) by resolving their names at the server, under its policy; point the host's resolver at it yourself (quicgate never changes it)")
	fs.IntVar(&t.mtu, "tun-mtu", netstack.RecommendedTUNMTU, "MTU of the TUN interface (1280-65535; the link is virtual and every flow ends in this process, so larger moves bytes cheaper)")
}

func (t *tunFlags) config() (*ingress.TUNConfig, error) {
	if t.name == "" {
		if len(t.addrs) > 0 || len(t.routes) > 0 || len(t.excludes) > 0 || t.dns != "" || t.table != tun.DefaultTable {
			return nil, usageErr("--tun-addr, --route, --exclude, --route-table and --tun-dns need --tun")
		}
		return nil, nil
	}
	if len(t.name) > 15 {
		return nil, usageErr("--tun %q: interface names are at most 15 characters", t.name)
	}
	addrs, err := t.device()
	if err != nil {
		return nil, err
	}
	if len(t.routes) == 0 {
		return nil, usageErr("--tun needs at least one --route: the prefixes whose flows go through the tunnel")
	}
	c := &ingress.TUNConfig{Name: t.name, MTU: t.mtu, Addrs: addrs, Table: t.table, KeepConnected: t.excludeConnected}
	for _, s := range t.routes {
		if s == "default" {
			c.Routes = append(c.Routes, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
			continue
		}
		p, err := prefixFlag("--route", s)
		if err != nil {
			return nil, err
		}
		c.Routes = append(c.Routes, p)
	}
	for _, s := range t.excludes {
		p, err := prefixFlag("--exclude", s)
		if err != nil {
			return nil, err
		}
		c.Exclude = append(c.Exclude, p)
	}
	if err := (tun.Config{Name: t.name, MTU: t.mtu, Addrs: addrs, Routes: c.Routes, Table: t.table, Exclude: c.Exclude}).Validate(); err != nil {
		return nil, usageErr("%v", strings.TrimPrefix(err.Error(), tun.ErrConfig.Error()+": "))
	}
	if c.DNS, err = t.dnsAddr(c.Addrs, c.Routes); err != nil {
		return nil, err
	}
	return c, nil
}

// hostRouting reports whether a TUN device of the host's or its routing was asked for
// (run makes its own, in a namespace of its own).
func (t *tunFlags) hostRouting() bool {
	return t.name != "" || len(t.routes) > 0 || len(t.excludes) > 0 || t.table != tun.DefaultTable
}

// prefixFlag parses a prefix flag's value (a lone address is its host prefix).
func prefixFlag(name, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, usageErr("%s %q: want a prefix, e.g. 10.99.0.0/16", name, s)
		}
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	if p.Masked() != p {
		return netip.Prefix{}, usageErr("%s %q: host bits set; did you mean %s?", name, s, p.Masked())
	}
	return p, nil
}

// dnsAddr parses --tun-dns, which must reach the TUN: inside one of its prefixes or routes,
// and none of its own addresses (the kernel would keep a packet to one of those).
func (t *tunFlags) dnsAddr(addrs, routes []netip.Prefix) (netip.Addr, error) {
	if t.dns == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(t.dns)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, usageErr("--tun-dns %q: want an IP address, e.g. 10.77.0.53", t.dns)
	}
	a = a.Unmap()
	inside := false
	for _, p := range addrs {
		if p.Addr().Unmap() == a {
			return netip.Addr{}, usageErr("--tun-dns %s is the interface's own address: pick another one in %s", a, p.Masked())
		}
		inside = inside || p.Masked().Contains(a)
	}
	for _, p := range routes {
		inside = inside || p.Contains(a)
	}
	if !inside {
		return netip.Addr{}, usageErr("--tun-dns %s is not inside a --tun-addr prefix or a --route, so its queries would not reach the TUN", a)
	}
	return a, nil
}

// device checks --tun-mtu and parses --tun-addr, which the client's device and run's share.
func (t *tunFlags) device() ([]netip.Prefix, error) {
	if t.mtu < 1280 || t.mtu > 65535 {
		return nil, usageErr("--tun-mtu %d: want 1280 to 65535", t.mtu)
	}
	var addrs []netip.Prefix
	for _, s := range t.addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErr("--tun-addr %q: want an address with its prefix length, e.g. 10.77.0.1/24", s)
		}
		addrs = append(addrs, p)
	}
	return addrs, nil
}
