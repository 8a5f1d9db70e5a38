package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/quicgate/quicgate/httpproxy"
	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/tun"
)

// slowConnect is how long the client waits for its first connection before it says it is
// still trying.
const slowConnect = 2 * time.Second

func runClient(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("client", stderr)
	cf := registerClientFlags(fs)
	if err := parseWithConfig(fs, args, &cf.common.config); err != nil {
		return err
	}
	spec, err := cf.check()
	if err != nil {
		return err
	}
	if spec.tunCfg, err = cf.tun.config(); err != nil {
		return err
	}
	if len(spec.fwds) == 0 && len(spec.udps) == 0 && len(spec.revs) == 0 && len(spec.dyns) == 0 && spec.tunCfg == nil {
		return usageErr("nothing to forward: give at least one -L, -U, -R, -D or --tun")
	}
	return serveClient(ctx, spec, stderr, clientHooks{})
}

// clientFlags are the client's flags, which `client` and `run` both take.
type clientFlags struct {
	server, pin, proxyAuth       string
	transport, proxy, serverTCP  string
	forwards, dynamics, reverses multiFlag
	udpForwards                  multiFlag
	dialTimeout                  time.Duration
	common                       *common
	tun                          tunFlags
}

func registerClientFlags(fs *flag.FlagSet) *clientFlags {
	f := &clientFlags{}
	fs.StringVar(&f.server, "server", "", "server's address, host:port: UDP for QUIC, and TCP for the fallback transport unless --server-tcp says otherwise (required)")
	fs.StringVar(&f.transport, "transport", "auto", "how to reach the server: auto (QUIC, and TCP/TLS when QUIC has not answered within 300 ms; back to QUIC when it answers again), quic, or tcp")
	fs.StringVar(&f.serverTCP, "server-tcp", "", "the server's TCP transport address, host:port (default: --server's)")
	fs.StringVar(&f.proxy, "proxy", "", "reach the server's TCP transport through this HTTP CONNECT proxy, http://[user:pass@]host:port (default: $HTTPS_PROXY or $ALL_PROXY, for the TCP transport only, QUIC still tried first; 'none': no proxy); with --proxy, QUIC is not tried")
	fs.StringVar(&f.pin, "pin", "", "the server's fingerprint, as 'quicgate fingerprint' prints it (required)")
	fs.Var(&f.forwards, "L", "forward [bind_address:]port:host:hostport through the tunnel, as ssh -L (repeatable)")
	fs.Var(&f.udpForwards, "U", "forward local UDP port [bind_address:]port to UDP host:hostport through the tunnel, a flow per source address (repeatable)")
	fs.Var(&f.dynamics, "D", "a SOCKS5 and HTTP proxy on [bind_address:]port whose requests go through the tunnel, as ssh -D (repeatable)")
	fs.StringVar(&f.proxyAuth, "proxy-auth", "", "file of user:password lines that -D clients must present (SOCKS5 username/password, HTTP Proxy-Authorization: Basic; both clear text); default: no authentication")
	fs.Var(&f.reverses, "R", "have the server listen on [bind_address:]port (its side; where its --allow-listen lets this client) and forward to host:hostport from this side, as ssh -R (repeatable)")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", 10*time.Second, "how long a flow waits for the server")
	f.common = commonFlags(fs, "client", 1, "One QUIC connection is driven by one loop, and more threads mostly add wake-ups: on a 2-core host one thread moved about 10% more and spent 15% less CPU per GB (docs/performance.md).")
	f.tun.register(fs)
	return f
}

// clientSpec is a client's checked configuration.
type clientSpec struct {
	server      string
	pin         quicmux.Fingerprint
	fwds        []ingress.LocalForward
	udps        []ingress.UDPForward
	dyns        []ingress.DynamicForward
	proxyCfg    ingress.ProxyConfig
	revs        []ingress.RemoteForward
	tunCfg      *ingress.TUNConfig
	dialTimeout time.Duration
	transport   quicmux.Transport
	serverTCP   string
	proxy       *url.URL
	// proxyFromEnv: the proxy came from the environment, and carries only the TCP
	// transport: --transport auto still tries QUIC first, directly.
	proxyFromEnv bool
	common       *common
}

// check validates the parsed flags but the TUN ones, which each command reads its way.
func (f *clientFlags) check() (*clientSpec, error) {
	if f.server == "" {
		return nil, usageErr("--server is required")
	}
	if f.pin == "" {
		return nil, usageErr("--pin is required: the server's fingerprint ('quicgate fingerprint --state-dir SERVER_DIR' prints it)")
	}
	pin, err := quicmux.ParseFingerprint(f.pin)
	if err != nil {
		return nil, usageErr("--pin: %v", err)
	}
	spec := &clientSpec{server: f.server, pin: pin, dialTimeout: f.dialTimeout, common: f.common, serverTCP: f.serverTCP}
	if spec.transport, err = quicmux.ParseTransport(f.transport); err != nil {
		return nil, usageErr("--transport: %q: want auto, quic or tcp", f.transport)
	}
	if f.serverTCP != "" {
		if _, _, err := net.SplitHostPort(f.serverTCP); err != nil {
			return nil, usageErr("--server-tcp: %v", err)
		}
	}
	switch {
	case f.proxy != "":
		if spec.proxy, err = httpproxy.Parse(f.proxy); err != nil {
			return nil, usageErr("--proxy: %v", err)
		}
	case spec.transport != quicmux.TransportQUIC:
		target := f.server
		if f.serverTCP != "" {
			target = f.serverTCP
		}
		if spec.proxy, err = httpproxy.FromEnvironment(target, os.Getenv); err != nil {
			return nil, usageErr("%v (or give --proxy none)", err)
		}
		spec.proxyFromEnv = spec.proxy != nil
	}
	if spec.proxy != nil && spec.transport == quicmux.TransportQUIC {
		return nil, usageErr("--proxy carries only the TCP transport: give --transport auto or tcp with it")
	}
	for _, s := range f.forwards {
		fw, err := ingress.ParseLocalForward(s)
		if err != nil {
			return nil, usageErr("-L: %v", err)
		}
		spec.fwds = append(spec.fwds, fw)
	}
	for _, s := range f.udpForwards {
		fw, err := ingress.ParseUDPForward(s)
		if err != nil {
			return nil, usageErr("-U: %v", err)
		}
		spec.udps = append(spec.udps, fw)
	}
	for _, s := range f.dynamics {
		fw, err := ingress.ParseDynamicForward(s)
		if err != nil {
			return nil, usageErr("-D: %v", err)
		}
		spec.dyns = append(spec.dyns, fw)
	}
	if f.proxyAuth != "" {
		if len(spec.dyns) == 0 {
			return nil, usageErr("--proxy-auth without -D: it is the -D proxy's")
		}
		if spec.proxyCfg.Users, err = ingress.LoadProxyUsers(f.proxyAuth); err != nil {
			return nil, usageErr("--proxy-auth: %v", err)
		}
	}
	for _, s := range f.reverses {
		fw, err := ingress.ParseRemoteForward(s)
		if err != nil {
			return nil, usageErr("-R: %v", err)
		}
		spec.revs = append(spec.revs, fw)
	}
	if err := positive(map[string]time.Duration{"--dial-timeout": f.dialTimeout}); err != nil {
		return nil, err
	}
	return spec, nil
}

// mark is the firewall mark of the client's sockets: a TUN's routes are policy routing in
// their own table, which the mark keeps the tunnel's own packets out of. It is the TUN
// device's own (tun.Config.Mark): DefaultTable for --route-table 0, none for the main table.
func (s *clientSpec) mark() uint32 {
	if s.tunCfg == nil || len(s.tunCfg.Routes) == 0 {
		return 0
	}
	return tun.Config{Table: s.tunCfg.Table}.Mark()
}

// serverBypass keeps the address the client dials the server at off the TUN's routes
// (ingress.TUN.Bypass): the client may dial before the TUN exists, and again at another
// address when the server's name resolves anew.
type serverBypass struct {
	log   *logrus.Entry
	mu    sync.Mutex
	addrs []netip.Addr // the last addresses the client dialed: the server's (UDP, TCP) and a proxy's
	tun   *ingress.TUN
}

// maxBypass is how many addresses stay off the tunnel: the server's, its TCP transport's when
// it is elsewhere, a proxy's, and one more for a name whose address changed.
const maxBypass = 4

func (b *serverBypass) dialing(server netip.AddrPort) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := server.Addr()
	if i := slices.Index(b.addrs, a); i >= 0 {
		b.addrs = slices.Delete(b.addrs, i, i+1)
	}
	b.addrs = append(b.addrs, a)
	if len(b.addrs) > maxBypass {
		b.addrs = b.addrs[len(b.addrs)-maxBypass:]
	}
	b.apply()
}

func (b *serverBypass) setTUN(t *ingress.TUN) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tun = t
	b.apply()
}

// apply runs under mu.
func (b *serverBypass) apply() {
	if b.tun == nil || len(b.addrs) == 0 {
		return
	}
	if err := b.tun.Bypass(b.addrs...); err != nil {
		b.log.WithError(err).Warn("cannot keep the server's address off the tunnel's routes")
	}
}

// clientHooks let a command add to the client: `run` serves its namespace's TUN device.
type clientHooks struct {
	// ingress, if set, makes one more ingress once the client exists, before it connects.
	ingress func(client *quicmux.Client, opt ingress.Options, log *logrus.Entry) (ingress.Ingress, error)
	// connected, if set, runs once the client has connected and every ingress is ready,
	// before they serve; an error stops the client.
	connected func() error
}

// serveClient runs the client spec describes until ctx ends, then drains.
func serveClient(ctx context.Context, spec *clientSpec, stderr io.Writer, hooks clientHooks) error {
	common := spec.common
	fwds, dyns, revs, tunCfg, proxyCfg := spec.fwds, spec.dyns, spec.revs, spec.tunCfg, spec.proxyCfg
	env, err := common.setup("client", stderr)
	if err != nil {
		return err
	}
	defer env.obs.close()
	log := env.log
	bypass := &serverBypass{log: log}
	client, err := quicmux.NewClient(quicmux.ClientConfig{
		Server:          spec.server,
		Identity:        env.id,
		Pin:             spec.pin,
		DialTimeout:     spec.dialTimeout,
		FlowIdleTimeout: common.flowIdle,
		Limits:          env.limits,
		Metrics:         env.obs.metrics,
		Logger:          log,
		Mark:            spec.mark(),
		Dialing:         bypass.dialing,
		Transport:       spec.transport,
		ServerTCP:       spec.serverTCP,
		Proxy:           spec.proxy,
		ProxyForTCPOnly: spec.proxyFromEnv,
	})
	if err != nil {
		return err
	}
	defer client.Close()

	// Bind every ingress before serving any, so a bad -L or a missing privilege fails the
	// start rather than leaving half a client running.
	opt := ingress.Options{DrainTimeout: common.drain, TCPKeepAlive: common.tcpKeepAlive(), Logger: log}
	var ingresses []ingress.Ingress
	defer func() {
		for _, in := range ingresses {
			_ = in.Close()
		}
	}()
	var ports []*ingress.Port
	for _, f := range fwds {
		p, err := ingress.ListenPort(f, client, opt)
		if err != nil {
			return err
		}
		ports = append(ports, p)
		ingresses = append(ingresses, p)
	}
	var udpPorts []*ingress.UDPPort
	for _, f := range spec.udps {
		p, err := ingress.ListenUDPPort(f, client, opt, ingress.UDPPortConfig{})
		if err != nil {
			return err
		}
		udpPorts = append(udpPorts, p)
		ingresses = append(ingresses, p)
	}
	var proxies []*ingress.Proxy
	for _, f := range dyns {
		p, err := ingress.ListenProxy(f, client, opt, proxyCfg)
		if err != nil {
			return err
		}
		proxies = append(proxies, p)
		ingresses = append(ingresses, p)
	}
	if tunCfg != nil {
		t, err := ingress.OpenTUN(*tunCfg, client, opt)
		if err != nil {
			return err
		}
		ingresses = append(ingresses, t)
		bypass.setTUN(t)
	}
	if hooks.ingress != nil {
		in, err := hooks.ingress(client, opt, log)
		if err != nil {
			return err
		}
		ingresses = append(ingresses, in)
	}

	// Waiting for a server that does not answer is not silent for long.
	slow := time.AfterFunc(slowConnect, func() {
		log.WithField("dial_timeout", spec.dialTimeout.String()).Warn("no answer from server " + spec.server + " yet, still trying")
	})
	err = client.Connect(ctx)
	slow.Stop()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for _, p := range ports {
		log.WithFields(logrus.Fields{"listen": p.Addr().String(), "target": p.Target().String()}).Info("forwarding")
	}
	for _, p := range udpPorts {
		log.WithFields(logrus.Fields{"listen": p.Addr().String(), "target": p.Target().String()}).Info("forwarding udp")
	}
	for _, p := range proxies {
		log.WithFields(logrus.Fields{"listen": p.Addr().String(), "auth": proxyCfg.Users != nil}).Info("proxying (SOCKS5, HTTP)")
	}
	// The server's listeners for -R, once connected: a refusal (its --allow-listen, a port
	// in use) fails the start with the reason.
	for _, f := range revs {
		r, err := ingress.ListenReverse(ctx, f, client, opt)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ingresses = append(ingresses, r)
		log.WithFields(logrus.Fields{"remote_listen": f.Bind.String(), "target": f.Target.String()}).Info("reverse forwarding")
	}
	if hooks.connected != nil {
		if err := hooks.connected(); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, in := range ingresses {
		g.Go(func() error { return in.Serve(gctx) })
	}
	stopLog := context.AfterFunc(ctx, func() {
		log.WithField("drain_timeout", common.drain.String()).Info("shutting down: draining open flows")
	})
	defer stopLog()
	err = g.Wait()
	log.Info("stopped")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
