package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// connectedThrows keeps the host's directly connected subnets (its LANs) off the device
// (Config.KeepConnected): a throw route in table T for each, so that their lookups fall
// through to the main table and leave by the host's own interface.
//
// A connected subnet is a route of the main table that is unicast, has no gateway and a
// device that is not the TUN, and is of a family that has Routes; for IPv4 also scope
// link (IPv6 routes all have scope global). That includes IPv6's fe80::/64, and excludes a
// default route without a gateway ("default dev ppp0") and loopback prefixes. A Route or
// an Exclude of exactly that prefix wins: no throw route is made for it.
//
// It follows the main table while the device is open (Wi-Fi gives way to LTE; a container
// bridge comes up). Its goroutine, follow, is owned by the Device: stop, from Close, ends
// it and waits for it.
type connectedThrows struct {
	h        *netlink.Handle
	table    int
	tun      int // the TUN's index: its own subnets are not the host's
	families []int
	explicit map[netip.Prefix]bool // Routes and Excludes
	log      *logrus.Entry

	// sock receives the kernel's route updates. netlink.RouteSubscribeWithOptions would
	// give parsed updates, but its loop ends for good on its first receive error, and
	// ENOBUFS (a burst of updates overflowed the socket's buffer) is one to live with:
	// follow then looks at the whole table again. It only needs to know which family
	// changed in the main table, which the message's header says.
	sock *nl.NetlinkSocket
	quit chan struct{} // closed by stop before it closes sock
	done chan struct{} // closed when follow returns

	// thrown holds the throw routes made, by prefix. Open's goroutine owns it until
	// follow starts, follow after that.
	thrown map[netip.Prefix]bool
}

// startConnectedThrows subscribes to the route updates, makes the throw routes for the
// connected subnets of today, then follows the updates. Subscribing first loses none: an
// update that the first look saw already changes nothing when it comes.
//
// It runs on Open's thread: the subscription's socket belongs to that thread's network
// namespace, as h's does.
func startConnectedThrows(h *netlink.Handle, table, tun int, fams []int, explicit map[netip.Prefix]bool, log *logrus.Entry) (*connectedThrows, error) {
	var groups []uint
	for _, fam := range fams {
		if fam == netlink.FAMILY_V4 {
			groups = append(groups, unix.RTNLGRP_IPV4_ROUTE)
		} else {
			groups = append(groups, unix.RTNLGRP_IPV6_ROUTE)
		}
	}
	sock, err := nl.Subscribe(unix.NETLINK_ROUTE, groups...)
	if err != nil {
		return nil, fmt.Errorf("tun: subscribing to route updates: %w", err)
	}
	c := &connectedThrows{h: h, table: table, tun: tun, families: fams, explicit: explicit, log: log,
		sock: sock, quit: make(chan struct{}), done: make(chan struct{}), thrown: map[netip.Prefix]bool{}}
	for _, fam := range fams {
		if err := c.resync(fam); err != nil {
			sock.Close()
			return nil, err
		}
	}
	go c.follow()
	return c, nil
}

// follow brings the throw routes up to date after each change of a unicast route in the
// main table, until stop.
func (c *connectedThrows) follow() {
	defer close(c.done)
	for {
		msgs, from, err := c.sock.Receive()
		select {
		case <-c.quit:
			return
		default:
		}
		switch {
		case errors.Is(err, unix.ENOBUFS):
			c.log.Debug("route updates lost (socket buffer full): looking at the main table again")
			for _, fam := range c.families {
				c.resyncOrWarn(fam)
			}
			continue
		case err != nil:
			c.log.WithError(err).Warn("tun: no longer following the host's connected subnets")
			return
		case from.Pid != nl.PidKernel:
			continue
		}
		changed := map[int]bool{}
		for _, m := range msgs {
			if (m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE) || len(m.Data) < unix.SizeofRtMsg {
				continue
			}
			if rt := nl.DeserializeRtMsg(m.Data); rt.Table == unix.RT_TABLE_MAIN && rt.Type == unix.RTN_UNICAST {
				changed[int(rt.Family)] = true
			}
		}
		for _, fam := range c.families {
			if changed[fam] {
				c.resyncOrWarn(fam)
			}
		}
	}
}

func (c *connectedThrows) resyncOrWarn(fam int) {
	if err := c.resync(fam); err != nil {
		c.log.WithError(err).Warn("tun: updating the throw routes for the host's connected subnets")
	}
}

// resync makes a throw route for every connected subnet of fam in the main table, and
// removes the ones made for subnets that are gone.
func (c *connectedThrows) resync(fam int) error {
	routes, err := listRoutes(c.h, fam, unix.RT_TABLE_MAIN)
	if err != nil {
		return fmt.Errorf("tun: listing the main table: %w", err)
	}
	want := map[netip.Prefix]bool{}
	for _, r := range routes {
		if p, ok := c.connected(r); ok {
			want[p] = true
		}
	}
	var errs []error
	for p := range c.thrown {
		if family(p) != fam || want[p] {
			continue
		}
		if err := c.h.RouteDel(throwRoute(p, c.table)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("tun: removing the throw route for %s: %w", p, err))
			continue
		}
		delete(c.thrown, p)
		c.log.WithField("subnet", p).Debug("connected subnet gone")
	}
	for p := range want {
		if c.thrown[p] {
			continue
		}
		if err := c.h.RouteAdd(throwRoute(p, c.table)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("tun: throw route for the connected subnet %s: %w", p, err))
			continue
		}
		c.thrown[p] = true
		c.log.WithField("subnet", p).Debug("connected subnet kept off the tunnel")
	}
	return errors.Join(errs...)
}

// connected returns r's prefix if r is a directly connected subnet that needs a throw
// route (see connectedThrows).
func (c *connectedThrows) connected(r netlink.Route) (netip.Prefix, bool) {
	p, ok := prefixOf(r.Dst)
	if !ok || r.Type != unix.RTN_UNICAST || r.Gw != nil || r.Via != nil || len(r.MultiPath) > 0 ||
		r.LinkIndex == 0 || r.LinkIndex == c.tun || p.Bits() == 0 || p.Addr().IsLoopback() || c.explicit[p] {
		return netip.Prefix{}, false
	}
	if family(p) == netlink.FAMILY_V4 && r.Scope != netlink.SCOPE_LINK {
		return netip.Prefix{}, false
	}
	return p, true
}

// stop ends follow and waits for it. The throw routes stay: Close removes every route in
// the table next.
func (c *connectedThrows) stop() {
	close(c.quit)
	c.sock.Close()
	<-c.done
}
