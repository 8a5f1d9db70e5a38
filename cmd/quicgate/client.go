package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/quicmux"
)

// slowConnect is how long the client waits for its first connection before it says it is
// still trying.
const slowConnect = 2 * time.Second

func runClient(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("client", stderr)
	server := fs.String("server", "", "server's UDP address, host:port (required)")
	pinStr := fs.String("pin", "", "the server's fingerprint, as 'quicgate fingerprint' prints it (required)")
	var forwards multiFlag
	fs.Var(&forwards, "L", "forward [bind_address:]port:host:hostport through the tunnel, as ssh -L (repeatable)")
	var dynamics multiFlag
	fs.Var(&dynamics, "D", "a SOCKS5 and HTTP proxy on [bind_address:]port whose requests go through the tunnel, as ssh -D (repeatable)")
	proxyAuth := fs.String("proxy-auth", "", "file of user:password lines that -D clients must present (SOCKS5 username/password, HTTP Proxy-Authorization: Basic; both clear text); default: no authentication")
	var reverses multiFlag
	fs.Var(&reverses, "R", "have the server listen on [bind_address:]port (its side; where its --allow-listen lets this client) and forward to host:hostport from this side, as ssh -R (repeatable)")
	dialTimeout := fs.Duration("dial-timeout", 10*time.Second, "how long a flow waits for the server")
	common := commonFlags(fs, "client", 1, "One QUIC connection is driven by one loop, and more threads mostly add wake-ups: on a 2-core host one thread moved about 10% more and spent 15% less CPU per GB (docs/performance.md).")
	var tf tunFlags
	tf.register(fs)
	if err := parseWithConfig(fs, args, &common.config); err != nil {
		return err
	}
	if *server == "" {
		return usageErr("--server is required")
	}
	if *pinStr == "" {
		return usageErr("--pin is required: the server's fingerprint ('quicgate fingerprint --state-dir SERVER_DIR' prints it)")
	}
	pin, err := quicmux.ParseFingerprint(*pinStr)
	if err != nil {
		return usageErr("--pin: %v", err)
	}
	var fwds []ingress.LocalForward
	for _, spec := range forwards {
		f, err := ingress.ParseLocalForward(spec)
		if err != nil {
			return usageErr("-L: %v", err)
		}
		fwds = append(fwds, f)
	}
	var dyns []ingress.DynamicForward
	for _, spec := range dynamics {
		f, err := ingress.ParseDynamicForward(spec)
		if err != nil {
			return usageErr("-D: %v", err)
		}
		dyns = append(dyns, f)
	}
	var proxyCfg ingress.ProxyConfig
	if *proxyAuth != "" {
		if len(dyns) == 0 {
			return usageErr("--proxy-auth without -D: it is the -D proxy's")
		}
		if proxyCfg.Users, err = ingress.LoadProxyUsers(*proxyAuth); err != nil {
			return usageErr("--proxy-auth: %v", err)
		}
	}
	var revs []ingress.RemoteForward
	for _, spec := range reverses {
		f, err := ingress.ParseRemoteForward(spec)
		if err != nil {
			return usageErr("-R: %v", err)
		}
		revs = append(revs, f)
	}
	tunCfg, err := tf.config()
	if err != nil {
		return err
	}
	if len(fwds) == 0 && len(revs) == 0 && len(dyns) == 0 && tunCfg == nil {
		return usageErr("nothing to forward: give at least one -L, -R, -D or --tun")
	}
	if err := positive(map[string]time.Duration{"--dial-timeout": *dialTimeout}); err != nil {
		return err
	}
	env, err := common.setup("client", stderr)
	if err != nil {
		return err
	}
	defer env.obs.close()
	log := env.log
	client, err := quicmux.NewClient(quicmux.ClientConfig{
		Server:          *server,
		Identity:        env.id,
		Pin:             pin,
		DialTimeout:     *dialTimeout,
		FlowIdleTimeout: common.flowIdle,
		Limits:          env.limits,
		Metrics:         env.obs.metrics,
		Logger:          log,
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
	}

	// Waiting for a server that does not answer is not silent for long.
	slow := time.AfterFunc(slowConnect, func() {
		log.WithField("dial_timeout", dialTimeout.String()).Warn("no answer from server " + *server + " yet, still trying")
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
