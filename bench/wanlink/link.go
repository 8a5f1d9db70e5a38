package wanlink

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Config is a link between two existing named network namespaces.
type Config struct {
	ClientNS, ServerNS     string       // made by `ip netns add`
	Device                 string       // the TUN device's name in each namespace; default "wan0"
	ClientAddr, ServerAddr netip.Prefix // the devices' addresses, in one subnet
	MTU                    int          // default 1500
	Up, Down               Params       // client to server, server to client
}

// Symmetric returns the parameters of one direction of a link of rate bit/s and round trip
// rtt with random loss: a one-way delay of rtt/2 and a queue of one bandwidth-delay product
// (at least 16 packets of mtu bytes).
func Symmetric(rate int64, rtt time.Duration, loss float64, mtu int, seed uint64) Params {
	q := int(float64(rate) * rtt.Seconds() / 8)
	return Params{Rate: rate, Queue: max(q, 16*mtu), Delay: rtt / 2, Loss: loss, Seed: seed}
}

// Link is an open link: two TUN devices and the goroutines between them.
type Link struct {
	cfg        Config
	cdev, sdev wgtun.Device
	up, down   *pump
	wg         sync.WaitGroup
	errMu      sync.Mutex
	err        error
	closeOnce  sync.Once
}

// Open creates the devices, one in each namespace, and starts moving packets. Close removes
// the devices (their addresses and routes go with them).
func Open(cfg Config) (*Link, error) {
	if cfg.Device == "" {
		cfg.Device = "wan0"
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.MTU < 576 || cfg.MTU > slabSize-offset {
		return nil, fmt.Errorf("wanlink: MTU %d is not 576-%d", cfg.MTU, slabSize-offset)
	}
	l := &Link{cfg: cfg}
	var err error
	if l.up, err = newPump(nil, nil, cfg.MTU, cfg.Up); err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}
	if l.down, err = newPump(nil, nil, cfg.MTU, cfg.Down); err != nil {
		return nil, fmt.Errorf("down: %w", err)
	}
	if l.cdev, err = openTUN(cfg.ClientNS, cfg.Device, cfg.MTU, cfg.ClientAddr); err != nil {
		return nil, err
	}
	if l.sdev, err = openTUN(cfg.ServerNS, cfg.Device, cfg.MTU, cfg.ServerAddr); err != nil {
		_ = l.cdev.Close()
		return nil, err
	}
	l.up.in, l.up.out = l.cdev, l.sdev
	l.down.in, l.down.out = l.sdev, l.cdev
	for _, p := range []*pump{l.up, l.down} {
		l.wg.Add(2)
		go func() { defer l.wg.Done(); l.fail(p.read()) }()
		go func() { defer l.wg.Done(); l.fail(p.write()) }()
	}
	return l, nil
}

func (l *Link) fail(err error) {
	if err == nil {
		return
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.err = errors.Join(l.err, err)
}

// Err is the first error a pump stopped on (nil while all is well).
func (l *Link) Err() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// Config returns the configuration the link was opened with, defaults filled in.
func (l *Link) Config() Config { return l.cfg }

// Stats are the counters so far, with the kernel's drops on each device.
func (l *Link) Stats() Stats {
	s := Stats{Up: l.up.c.snapshot(), Down: l.down.c.snapshot()}
	s.Up.TxDropped, _ = txDropped(l.cfg.ClientNS, l.cfg.Device)
	s.Down.TxDropped, _ = txDropped(l.cfg.ServerNS, l.cfg.Device)
	return s
}

// BlockUDP drops every UDP packet both ways while on is true, as a firewall that blocks UDP
// (or starts to, in the middle of a transfer); other packets pass as before.
func (l *Link) BlockUDP(on bool) {
	l.up.dropUDP.Store(on)
	l.down.dropUDP.Store(on)
}

// Blocked is how many UDP packets BlockUDP dropped, both ways.
func (l *Link) Blocked() int64 { return l.up.c.blocked.Load() + l.down.c.blocked.Load() }

// Close stops the pumps and removes both devices. It is idempotent.
func (l *Link) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.up.stop()
		l.down.stop()
		err = errors.Join(l.cdev.Close(), l.sdev.Close()) // ends the readers' blocking reads
		l.wg.Wait()
		l.up.release()
		l.down.release()
	})
	return err
}
