package main

import (
	"context"
	"flag"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/tun"
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

type tunConfig struct {
	name   string
	mtu    int
	addrs  []netip.Prefix
	routes []netip.Prefix
}

func (t *tunFlags) config() (*tunConfig, error) {
	if t.name == "" {
		if len(t.addrs) > 0 || len(t.routes) > 0 {
			return nil, usageErr("--tun-addr and --route need --tun")
		}
		return nil, nil
	}
	if len(t.name) > 15 {
		return nil, usageErr("--tun %q: interface names are at most 15 characters", t.name)
	}
	if t.mtu < 1280 || t.mtu > 65535 {
		return nil, usageErr("--tun-mtu %d: want 1280 to 65535", t.mtu)
	}
	if len(t.routes) == 0 {
		return nil, usageErr("--tun needs at least one --route: the prefixes whose TCP flows go through the tunnel")
	}
	c := &tunConfig{name: t.name, mtu: t.mtu}
	for _, s := range t.addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErr("--tun-addr %q: want an address with its prefix length, e.g. 10.77.0.1/24", s)
		}
		c.addrs = append(c.addrs, p)
	}
	for _, s := range t.routes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, usageErr("--route %q: want a prefix, e.g. 10.99.0.0/16", s)
		}
		if p.Masked() != p {
			return nil, usageErr("--route %q: host bits set; did you mean %s?", s, p.Masked())
		}
		c.routes = append(c.routes, p)
	}
	return c, nil
}

// tunIngress is the privileged ingress: a TUN device whose TCP flows a gVisor netstack
// terminates. Each flow's original destination becomes its target; the SYN is answered only
// once the server has reached that destination (dial before accept), and with a RST when it
// has not, so apps see "connection refused" at once rather than a hang.
type tunIngress struct {
	dev    *tun.Device
	stack  *netstack.Stack
	client *quicmux.Client
	log    *logrus.Entry
	drain  time.Duration

	flowCtx    context.Context
	resetFlows context.CancelFunc
	draining   atomic.Bool
	mu         sync.Mutex
	flows      sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

func openTUN(cfg tunConfig, client *quicmux.Client, drain time.Duration, log *logrus.Entry) (ingress, error) {
	log = log.WithField("tun", cfg.name)
	dev, err := tun.Open(tun.Config{Name: cfg.name, MTU: cfg.mtu, Addrs: cfg.addrs, Routes: cfg.routes, Logger: log})
	if err != nil {
		return nil, err
	}
	ing := &tunIngress{dev: dev, client: client, log: log, drain: drain}
	ing.flowCtx, ing.resetFlows = context.WithCancel(context.Background())
	st, err := netstack.NewTUN(dev.TUN(), netstack.Config{MTU: cfg.mtu, Handler: ing, Logger: log})
	if err != nil {
		ing.resetFlows()
		_ = dev.Close()
		return nil, err
	}
	ing.stack = st
	log.WithFields(logrus.Fields{"addrs": cfg.addrs, "routes": cfg.routes, "mtu": cfg.mtu}).Info("tun ready")
	return ing, nil
}

// HandleTCP carries one flow the netstack terminated.
func (ing *tunIngress) HandleTCP(req *netstack.TCPRequest) {
	ing.mu.Lock()
	if ing.draining.Load() {
		ing.mu.Unlock()
		req.Reject()
		return
	}
	ing.flows.Add(1)
	ing.mu.Unlock()
	defer ing.flows.Done()

	target := quicmux.TargetFromAddrPort(req.Dst())
	log := ing.log.WithFields(logrus.Fields{"peer": req.Src().String(), "target": target.String()})
	ctx, cancel := context.WithCancel(ing.flowCtx)
	defer cancel()
	stop := context.AfterFunc(req.Context(), cancel)
	defer stop()
	remote, err := ing.client.Dial(ctx, target)
	if err != nil {
		req.Reject()
		log.WithError(err).Debug("flow rejected")
		return
	}
	local, err := req.Accept()
	if err != nil {
		quicmux.Abort(remote) // the destination must see a reset, not a clean empty flow
		log.WithError(err).Debug("accept failed")
		return
	}
	stats, err := ing.client.Carry(ctx, local, remote)
	log.WithFields(logrus.Fields{"bytes_up": stats.AtoB, "bytes_down": stats.BtoA, "result": quicmux.ResultOf(err)}).Debug("flow ended")
}

// Serve runs until ctx ends, then drains: new flows are refused, open ones get up to the
// drain timeout, the rest are reset, and the stack, routes and device are removed.
func (ing *tunIngress) Serve(ctx context.Context) error {
	<-ctx.Done()
	ing.mu.Lock()
	ing.draining.Store(true)
	ing.mu.Unlock()
	done := make(chan struct{})
	go func() { ing.flows.Wait(); close(done) }()
	timer := time.NewTimer(ing.drain)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		ing.resetFlows()
		<-done
	}
	return ing.Close()
}

// Close resets the flows still open and removes the stack, routes and device. It is
// idempotent, so a client that fails to start can defer it.
func (ing *tunIngress) Close() error {
	ing.closeOnce.Do(func() {
		ing.mu.Lock()
		ing.draining.Store(true)
		ing.mu.Unlock()
		ing.resetFlows()
		ing.closeErr = ing.stack.Close()
		if err := ing.dev.Close(); ing.closeErr == nil {
			ing.closeErr = err
		}
		ing.log.Info("tun removed")
	})
	return ing.closeErr
}
