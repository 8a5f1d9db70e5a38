package ingress

import (
	"context"
	"net/netip"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/tun"
)

// TUNConfig is the TUN device the privileged ingress creates.
type TUNConfig struct {
	Name   string
	MTU    int
	Addrs  []netip.Prefix // the device's own addresses
	Routes []netip.Prefix // what the kernel routes into it (0.0.0.0/0 and ::/0 too)
	// Table, Exclude and KeepConnected are the policy routing that holds Routes (package
	// tun, tun.Config): Table is the routing table, rule priority and firewall mark (0:
	// tun.DefaultTable); the Tunnel's own sockets must carry the mark (quicmux.ClientConfig.Mark)
	// to stay out of the device. Exclude keeps prefixes off it; KeepConnected the host's
	// directly connected subnets.
	Table         int
	Exclude       []netip.Prefix
	KeepConnected bool
	// DNS, if set, is an address routed into the device (not one of its own) at which the
	// ingress answers DNS queries itself, over UDP and TCP port 53, by resolving their
	// names at the server (tundns.go, TUNTunnel's Resolve). Other ports of DNS are closed.
	// Pointing the host's resolver at it is the user's to do.
	DNS netip.Addr
}

// TUN is the privileged ingress: a TUN device whose TCP and UDP flows (tunudp.go) a gVisor
// netstack terminates, and whose pings the server answers (tunecho.go).
// Each flow's original destination becomes its target; the SYN is answered only once the
// server has reached that destination (dial before accept), and with a RST when it has not,
// so apps see "connection refused" at once rather than a hang. Flows keep alive
// (Options.TCPKeepAlive) and are reset (RST) when they fail anywhere along the way.
type TUN struct {
	name  string // "tun NAME", the ingress in metrics
	dev   *tun.Device
	stack *netstack.Stack
	tun   TUNTunnel
	opt   Options
	log   *logrus.Entry
	flows *flow.Group
	// dns answers the queries to its address (TUNConfig.DNS); nil: none. Its sockets are
	// counted in dnsFlows, which ends first on shutdown: they are no flows to drain.
	dns      *dnsResponder
	dnsFlows *flow.Group

	closeOnce sync.Once
	closeErr  error
}

var _ Ingress = (*TUN)(nil)

// OpenTUN creates the device with its addresses and routes (CAP_NET_ADMIN) and the stack
// behind it.
func OpenTUN(cfg TUNConfig, t TUNTunnel, opt Options) (*TUN, error) {
	log := opt.logger().WithField("tun", cfg.Name)
	dev, err := tun.Open(tun.Config{Name: cfg.Name, MTU: cfg.MTU, Addrs: cfg.Addrs, Routes: cfg.Routes, Logger: log,
		Table: cfg.Table, Exclude: cfg.Exclude, KeepConnected: cfg.KeepConnected})
	if err != nil {
		return nil, err
	}
	ing, err := serveDevice(dev, "tun "+dev.Name(), cfg.MTU, cfg.DNS, t, opt, log)
	if err != nil {
		return nil, err
	}
	fields := logrus.Fields{"addrs": cfg.Addrs, "routes": cfg.Routes, "mtu": cfg.MTU, "table": dev.Mark()}
	if len(cfg.Exclude) > 0 {
		fields["exclude"] = cfg.Exclude
	}
	if cfg.DNS.IsValid() {
		fields["dns"] = cfg.DNS
	}
	log.WithFields(fields).Info("tun ready")
	return ing, nil
}

// serveDevice puts the netstack behind dev and returns the ingress that carries its flows,
// named name in metrics and logs, answering DNS at dns if it is set. It closes dev if it
// fails.
func serveDevice(dev *tun.Device, name string, mtu int, dns netip.Addr, t TUNTunnel, opt Options, log *logrus.Entry) (*TUN, error) {
	ing := &TUN{name: name, dev: dev, tun: t, opt: opt, log: log, flows: flow.NewGroup(context.Background()),
		dnsFlows: flow.NewGroup(context.Background())}
	if dns.IsValid() {
		ing.dns = newDNSResponder(dns.Unmap(), t, log)
	}
	tcp := netstack.DefaultTCPOptions()
	tcp.KeepAlive = flow.KeepAliveConfig(opt.TCPKeepAlive)
	// UDP (tunudp.go) and pings (tunecho.go) go through the tunnel too.
	cfg := netstack.Config{MTU: mtu, Handler: ing, UDPHandler: ing, EchoHandler: ing, Logger: log, TCP: &tcp}
	st, err := netstack.NewTUN(dev.TUN(), cfg)
	if err != nil {
		_ = dev.Close()
		return nil, err
	}
	ing.stack = st
	return ing, nil
}

// Bypass keeps addrs, where the tunnel's server is dialed, off the device (tun.Device.Bypass):
// the client tells it each address before it dials (quicmux.ClientConfig.Dialing).
func (ing *TUN) Bypass(addrs ...netip.Addr) error { return ing.dev.Bypass(addrs...) }

// HandleTCP carries one flow the netstack terminated.
func (ing *TUN) HandleTCP(req *netstack.TCPRequest) {
	if ing.dns != nil && req.Dst().Addr() == ing.dns.addr {
		ing.serveDNSTCP(req)
		return
	}
	handleTCP(ing.tun, ing.flows, req, ing.target(req.Dst()), ing.name, ing.log)
}

// target is where a flow to dst goes: dst, or the name whose DNS answer gave the app dst
// (TUNConfig.DNS), so that the server judges the flow by the name's rules as it judged the
// name's resolve; it resolves the name again to dial it.
func (ing *TUN) target(dst netip.AddrPort) flow.Target {
	if ing.dns != nil {
		if name, ok := ing.dns.nameOf(dst.Addr()); ok {
			return flow.Target{Host: name, Port: dst.Port()}
		}
	}
	return flow.TargetFromAddrPort(dst)
}

// handleTCP hands a netstack flow to the tunnel, to target (TUN.target): the SYN waits for
// the server's answer.
func handleTCP(t Tunnel, flows *flow.Group, req *netstack.TCPRequest, target flow.Target, name string, log *logrus.Entry) {
	if !flows.Start() {
		req.Reject()
		return
	}
	f := quicmux.Pending{
		Target: target,
		Accept: func() (flow.Conn, error) {
			c, err := req.Accept()
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Reject:  func(error) { req.Reject() },
		Ingress: name,
		Peer:    req.Src().String(),
	}
	carry(t, flows, f, log)
}

// Serve runs until ctx ends, then drains: new flows are refused, open ones get up to the
// drain timeout, the rest are reset, and the stack, routes and device are removed.
func (ing *TUN) Serve(ctx context.Context) error {
	<-ctx.Done()
	ing.dnsFlows.Close()
	drain(ing.flows, ing.opt.DrainTimeout)
	return ing.Close()
}

// Close resets the flows still open and removes the stack, routes and device. It is
// idempotent, so a client that fails to start can defer it.
func (ing *TUN) Close() error {
	ing.closeOnce.Do(func() {
		ing.dnsFlows.Close()
		ing.flows.Close()
		ing.closeErr = ing.stack.Close()
		if err := ing.dev.Close(); ing.closeErr == nil {
			ing.closeErr = err
		}
		ing.log.Info("tun removed")
	})
	return ing.closeErr
}

// serveDNSTCP answers the DNS queries of a TCP connection to the DNS address; a connection
// to any other port of it is refused.
func (ing *TUN) serveDNSTCP(req *netstack.TCPRequest) {
	if req.Dst().Port() != 53 || !ing.dnsFlows.Start() {
		req.Reject()
		return
	}
	defer ing.dnsFlows.Done()
	c, err := req.Accept()
	if err != nil {
		return
	}
	ing.dns.serveTCP(ing.dnsFlows.Context(), c)
}

// serveDNSUDP answers the DNS queries of a UDP 5-tuple to the DNS address; any other port
// of it answers port unreachable.
func (ing *TUN) serveDNSUDP(conn *netstack.UDPConn) {
	if conn.Dst().Port() != 53 || !ing.dnsFlows.Start() {
		conn.Refuse()
		return
	}
	defer ing.dnsFlows.Done()
	ing.dns.serveUDP(ing.dnsFlows.Context(), conn)
}
