package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// DefaultTable is the routing table, rule priority and firewall mark quicgate uses when
	// Config.Table is 0: 29031 is 0x7167, "qg".
	DefaultTable = 29031
	// MainTable is the host's main routing table (RT_TABLE_MAIN). As Config.Table it puts
	// the routes there, with no rule and no mark: a route that exists already clashes,
	// and a route covering the server's address would loop the tunnel into itself. It is
	// for a device in a network namespace of its own.
	MainTable = unix.RT_TABLE_MAIN
)

// maxTable is the highest table Config.Table accepts: the table is also the rule's
// priority, which must come before the main table's rule (32766).
const maxTable = 32765

func validTable(t int) error {
	switch {
	case t == 0, t == MainTable:
		return nil
	case t < 1 || t > maxTable, t == unix.RT_TABLE_DEFAULT, t == unix.RT_TABLE_LOCAL:
		return fmt.Errorf("%w: routing table %d: want 1-%d other than %d (default) and %d (local)", ErrConfig, t, maxTable, unix.RT_TABLE_DEFAULT, unix.RT_TABLE_LOCAL)
	}
	return nil
}

// policyRouting routes Config.Routes through the device the way wg-quick does, with a
// routing table T of quicgate's own instead of the main table:
//
//   - every Route is a route in T (unicast, dev = the TUN, scope link); every Exclude, and
//     with KeepConnected every connected subnet (connected.go), a throw route in T;
//   - for each address family that has a Route, one rule
//     "not fwmark T/0xffffffff lookup T priority T": unmarked traffic looks up T first, and
//     a destination T has no route for, or throws, falls through to the following rules
//     (the main table). The tunnel's own socket carries the mark (Device.Mark), skips T and
//     uses the host's routes, so even 0.0.0.0/0, or a Route covering the server's address,
//     never loops the tunnel into itself. The host's routes are never deleted or replaced.
//   - the server's address, which the client tells the device as it dials (Device.Bypass),
//     gets a throw route in T too. The tunnel's packets would keep the host's routes
//     without it, by their mark; but the server's replies come in unmarked, and strict
//     reverse-path filtering (rp_filter 1, the default on some distributions) checks
//     their source with a lookup that would find T and the TUN, not the interface they
//     came in on, and drop them. An app's flow to the server's own address goes directly.
//
// What a quicgate killed with -9 leaves behind (rules and throw routes; the other routes
// vanish with its device) is removed by the next Open with the same table, which the lock
// (lock.go) tells apart from a quicgate still running.
type policyRouting struct {
	table int
	h     *netlink.Handle
	log   *logrus.Entry
	lock  *tableLock
	sync  *connectedThrows // nil without KeepConnected

	mu     sync.Mutex
	bypass map[netip.Addr]bool // the server addresses thrown (Bypass); under mu
	closed bool                // remove has run; under mu
}

// openPolicy takes table's lock and removes what a quicgate that did not exit cleanly left
// in it, saying so in one line. It runs before the device is made.
func openPolicy(h *netlink.Handle, table int, log *logrus.Entry) (*policyRouting, error) {
	lock, err := lockTable(table)
	if err != nil {
		return nil, err
	}
	p := &policyRouting{table: table, h: h, log: log.WithField("table", table), lock: lock}
	rules, routes, err := p.flush()
	if err != nil {
		_ = lock.release()
		return nil, err
	}
	if rules+routes > 0 {
		p.log.WithFields(logrus.Fields{"rules": rules, "routes": routes}).Warn(
			"removed the rules and routes a quicgate that did not exit cleanly left behind")
	}
	return p, nil
}

// install puts cfg's routes, excludes and rules in place for the device tun. The rules
// come last, when the table they send traffic to is complete.
func (p *policyRouting) install(cfg Config, tun int) error {
	fams := families(cfg.Routes)
	for _, r := range cfg.Routes {
		route := &netlink.Route{LinkIndex: tun, Dst: ipNet(r), Scope: netlink.SCOPE_LINK, Table: p.table}
		if err := p.h.RouteAdd(route); err != nil {
			return fmt.Errorf("tun: route %s in table %d: %w", r, p.table, err)
		}
	}
	for _, x := range cfg.Exclude {
		if !slices.Contains(fams, family(x)) {
			continue // no rule sends this family to the table
		}
		if err := p.h.RouteAdd(throwRoute(x, p.table)); err != nil {
			return fmt.Errorf("tun: excluding %s in table %d: %w", x, p.table, err)
		}
	}
	if cfg.KeepConnected {
		explicit := map[netip.Prefix]bool{}
		for _, q := range slices.Concat(cfg.Routes, cfg.Exclude) {
			explicit[q] = true
		}
		var err error
		if p.sync, err = startConnectedThrows(p.h, p.table, tun, fams, explicit, p.log); err != nil {
			return err
		}
	}
	for _, fam := range fams {
		if err := p.h.RuleAdd(p.rule(fam)); err != nil {
			return fmt.Errorf("tun: rule 'not fwmark %d lookup %d' (%s): %w", p.table, p.table, familyName(fam), err)
		}
	}
	p.log.WithFields(logrus.Fields{"routes": cfg.Routes, "exclude": cfg.Exclude, "keep_connected": cfg.KeepConnected}).Debug("policy routing in place")
	return nil
}

// rule is "not fwmark T/0xffffffff lookup T priority T" for fam.
func (p *policyRouting) rule(fam int) *netlink.Rule {
	mask := uint32(0xffffffff)
	r := netlink.NewRule()
	r.Family = fam
	r.Table = p.table
	r.Priority = p.table
	r.Mark = p.mark()
	r.Mask = &mask
	r.Invert = true
	return r
}

// setBypass makes addrs the server addresses kept off the device: a throw route for each
// (a host prefix), and none for the ones before that are not among them.
func (p *policyRouting) setBypass(addrs []netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	var errs []error
	for a := range p.bypass {
		if want[a] {
			continue
		}
		if err := p.h.RouteDel(throwRoute(netip.PrefixFrom(a, a.BitLen()), p.table)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("tun: removing the throw route for the server's old address %s: %w", a, err))
			continue
		}
		delete(p.bypass, a)
	}
	for a := range want {
		if p.bypass[a] {
			continue
		}
		if err := p.h.RouteAdd(throwRoute(netip.PrefixFrom(a, a.BitLen()), p.table)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("tun: throw route for the server's address %s: %w", a, err))
			continue
		}
		if p.bypass == nil {
			p.bypass = map[netip.Addr]bool{}
		}
		p.bypass[a] = true
		p.log.WithField("server", a).Debug("server's address kept off the tunnel")
	}
	return errors.Join(errs...)
}

func (p *policyRouting) mark() uint32 { return uint32(p.table) }

// remove stops the sync and Bypass, and removes the rules and every route in the table.
// They stop first: neither may add a throw route after the flush.
func (p *policyRouting) remove() error {
	if p.sync != nil {
		p.sync.stop()
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	rules, routes, err := p.flush()
	p.log.WithFields(logrus.Fields{"rules": rules, "routes": routes}).Debug("policy routing removed")
	return err
}

// unlock releases the table's lock: the last step of Close.
func (p *policyRouting) unlock() error { return p.lock.release() }

// flush deletes, in both families, every rule of priority T that looks up T and every route
// in T, and counts them. It goes on past a failure and returns every error. Only the
// holder of the lock may call it: everything in T is then its own, or a dead run's.
func (p *policyRouting) flush() (rules, routes int, err error) {
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := listRules(p.h, fam)
		if err != nil {
			errs = append(errs, fmt.Errorf("tun: listing %s rules: %w", familyName(fam), err))
		}
		for _, r := range rs {
			if r.Priority != p.table || r.Table != p.table {
				continue
			}
			if err := p.h.RuleDel(&r); err != nil {
				if !gone(err) {
					errs = append(errs, fmt.Errorf("tun: removing %s rule priority %d: %w", familyName(fam), p.table, err))
				}
				continue
			}
			rules++
		}
		rts, err := listRoutes(p.h, fam, p.table)
		if err != nil {
			errs = append(errs, fmt.Errorf("tun: listing %s routes in table %d: %w", familyName(fam), p.table, err))
		}
		for _, r := range rts {
			if err := p.h.RouteDel(&r); err != nil {
				if !gone(err) {
					errs = append(errs, fmt.Errorf("tun: removing route %s from table %d: %w", r.Dst, p.table, err))
				}
				continue
			}
			routes++
		}
	}
	return rules, routes, errors.Join(errs...)
}

// throwRoute is a throw route for p in table: a lookup that ends there falls through to
// the next rule, as if the table had no route for it.
func throwRoute(p netip.Prefix, table int) *netlink.Route {
	return &netlink.Route{Dst: ipNet(p), Table: table, Type: unix.RTN_THROW}
}
