package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/quicgate/quicgate/quicmux"
)

func runClient(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("client", stderr)
	server := fs.String("server", "", "server's UDP address, host:port (required)")
	pinStr := fs.String("pin", "", "the server's fingerprint, as 'quicgate fingerprint' prints it (required)")
	var forwards multiFlag
	fs.Var(&forwards, "L", "forward [bind_address:]port:host:hostport through the tunnel, as ssh -L (repeatable)")
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
	var fwds []quicmux.LocalForward
	for _, spec := range forwards {
		f, err := quicmux.ParseLocalForward(spec)
		if err != nil {
			return usageErr("-L: %v", err)
		}
		fwds = append(fwds, f)
	}
	tunCfg, err := tf.config()
	if err != nil {
		return err
	}
	if len(fwds) == 0 && tunCfg == nil {
		return usageErr("nothing to forward: give at least one -L or --tun")
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
	var listeners []*quicmux.PortListener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for _, f := range fwds {
		l, err := quicmux.ListenLocalForward(f, client, log)
		if err != nil {
			return err
		}
		l.DrainTimeout = common.drain
		listeners = append(listeners, l)
	}
	var tunIngress ingress
	if tunCfg != nil {
		tunIngress, err = openTUN(*tunCfg, client, common.drain, log)
		if err != nil {
			return err
		}
		defer tunIngress.Close()
	}

	if err := client.Connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for _, l := range listeners {
		log.WithFields(logrus.Fields{"listen": l.Addr().String(), "target": l.Target().String()}).Info("forwarding")
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, l := range listeners {
		g.Go(func() error { return l.Serve(gctx) })
	}
	if tunIngress != nil {
		g.Go(func() error { return tunIngress.Serve(gctx) })
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

// ingress is a source of flows. Serve runs until ctx ends, drains, and releases what the
// ingress holds; Close releases it at once (idempotent, for a start that fails half-way).
type ingress interface {
	Serve(ctx context.Context) error
	Close() error
}
