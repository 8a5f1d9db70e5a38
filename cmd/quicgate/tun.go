package main

import (
	"flag"
	"net/netip"

	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/netstack"
)

// tunFlags are the client's privileged-mode flags.
type tunFlags struct {
	name   string
	addrs  multiFlag
	routes multiFlag
	mtu    int
}

func (t *tunFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.name, "tun", "", "create this TUN interface and tunnel the TCP flows routed into it (needs CAP_NET_ADMIN)")
	fs.Var(&t.addrs, "tun-addr", "address of the TUN interface with its prefix length, e.g. 10.77.0.1/24 (repeatable)")
	fs.Var(&t.routes, "route", "prefix to route into the TUN interface, e.g. 10.99.0.0/16 (repeatable; at least one with --tun)")
	fs.IntVar(&t.mtu, "tun-mtu", netstack.RecommendedTUNMTU, "MTU of the TUN interface (1280-65535; the link is virtual and every flow ends in this process, so larger moves bytes cheaper)")
}

func (t *tunFlags) config() (*ingress.TUNConfig, error) {
	if t.name == "" {
		if len(t.addrs) > 0 || len(t.routes) > 0 {
			return nil, usageErr("--tun-addr and --route need --tun")
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
		return nil, usageErr("--tun needs at least one --route: the prefixes whose TCP flows go through the tunnel")
	}
	c := &ingress.TUNConfig{Name: t.name, MTU: t.mtu, Addrs: addrs}
	for _, s := range t.routes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErr("--route %q: want a prefix, e.g. 10.99.0.0/16", s)
		}
		if p.Masked() != p {
			return nil, usageErr("--route %q: host bits set; did you mean %s?", s, p.Masked())
		}
		c.Routes = append(c.Routes, p)
	}
	return c, nil
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
