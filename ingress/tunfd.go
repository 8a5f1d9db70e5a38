package ingress

import (
	"net/netip"

	"github.com/quicgate/quicgate/tun"
)

// AdoptTUN serves a TUN device made elsewhere (tun.FromFD: quicgate run's namespace, where
// the device has its addresses and routes) exactly as OpenTUN serves its own: the same
// netstack, dial before accept, keepalive, drain and metrics. name labels its flows in
// metrics and logs (such as "run 12345"); mtu is the device's; dns, if set, is where it
// answers DNS queries (TUNConfig.DNS). The ingress owns dev: Close closes it, also when
// AdoptTUN fails.
func AdoptTUN(dev *tun.Device, name string, mtu int, dns netip.Addr, t TUNTunnel, opt Options) (*TUN, error) {
	log := opt.logger().WithField("tun", name)
	ing, err := serveDevice(dev, name, mtu, dns, t, opt, log)
	if err != nil {
		return nil, err
	}
	log.WithFields(map[string]any{"mtu": mtu, "dns": dns}).Info("tun ready")
	return ing, nil
}
