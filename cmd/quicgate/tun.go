package main

import (
	"errors"
	"flag"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/quicmux"
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
	fs.Var(&t.addrs, "tun-addr", "address of the TUN interface, CIDR (repeatable)")
	fs.Var(&t.routes, "route", "prefix to route into the TUN interface, CIDR (repeatable)")
	fs.IntVar(&t.mtu, "tun-mtu", 9000, "MTU of the TUN interface")
}

type tunConfig struct{}

func (t *tunFlags) config() (*tunConfig, error) {
	if t.name == "" {
		if len(t.addrs) > 0 || len(t.routes) > 0 {
			return nil, usageErr("--tun-addr and --route need --tun")
		}
		return nil, nil
	}
	return nil, usageErr("--tun is not available in this build yet")
}

func openTUN(cfg tunConfig, client *quicmux.Client, drain time.Duration, log *logrus.Entry) (ingress, error) {
	return nil, errors.New("no TUN support")
}
