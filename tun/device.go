package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"sync"

	"github.com/quicgate/quicgate/internal/logging"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Config describes the device to create.
type Config struct {
	Name   string         // interface name, at most 15 bytes, e.g. "qg0"
	MTU    int            // 1280..65535; the link is virtual, so a large MTU is cheap
	Addrs  []netip.Prefix // addresses with their prefix length, e.g. 10.77.0.1/24
	Routes []netip.Prefix // prefixes routed into the device, e.g. 10.99.0.0/16 or 0.0.0.0/0
	Logger *logrus.Entry  // nil: discard

	// Table is the routing table that holds Routes, and also the priority of the rules
	// that send unmarked traffic to it and the firewall mark (Device.Mark) that keeps the
	// tunnel's own packets out of it: see policy.go. 0 means DefaultTable. Valid: 1-32765
	// other than 253 (default) and 255 (local), or MainTable, which puts Routes in the main
	// table with no rule and no mark, as quicgate did before it had a table of its own (for
	// a device in a network namespace of its own, where nothing else routes).
	Table int
	// Exclude lists prefixes kept off the device although a Route covers them: a throw
	// route in Table for each, so that their lookups fall through to the host's own
	// routes. Between a Route and an Exclude the longer prefix wins (10.0.0.0/8 routed,
	// 10.1.0.0/16 excluded, 10.1.2.0/24 routed again works as it reads); an Exclude equal
	// to a Route is an error. An Exclude of a family that has no Route changes nothing.
	// Not with MainTable.
	Exclude []netip.Prefix
	// KeepConnected keeps the host's directly connected subnets (its LANs, IPv6 link-local
	// fe80::/64 included) off the device, as if each were in Exclude, and follows them
	// while the device is open (Wi-Fi gives way to LTE): see connected.go. A Route or an
	// Exclude of exactly a connected subnet's prefix wins, so --route 192.168.1.0/24 still
	// sends that LAN into the tunnel. Not with MainTable.
	KeepConnected bool
}

// Device is an open TUN device with its addresses and routes.
type Device struct {
	dev   wgtun.Device // nil while Open has not made it yet
	name  string
	index int
	// nl is the netlink handle every request of Open, Close and the connected-subnet sync
	// goes through: made on Open's thread, its socket stays in that thread's network
	// namespace whichever goroutine uses it later. nil for FromFD.
	nl     *netlink.Handle
	routes []*netlink.Route // MainTable: the routes to remove on Close
	policy *policyRouting   // nil: MainTable, or FromFD
	mark   uint32           // Config.Mark; 0 for FromFD
	log    *logrus.Entry

	closeOnce sync.Once
	closeErr  error
}

// Validate checks cfg without touching the system.
func (cfg Config) Validate() error {
	if cfg.Name == "" || len(cfg.Name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("%w: interface name %q must be 1 to 15 bytes", ErrConfig, cfg.Name)
	}
	if cfg.MTU < 1280 || cfg.MTU > 65535 {
		return fmt.Errorf("%w: MTU %d is not 1280-65535", ErrConfig, cfg.MTU)
	}
	if err := validTable(cfg.Table); err != nil {
		return err
	}
	if cfg.Table == MainTable && len(cfg.Exclude) > 0 {
		return fmt.Errorf("%w: Exclude needs a routing table of quicgate's own, not the main table", ErrConfig)
	}
	if cfg.Table == MainTable && cfg.KeepConnected {
		return fmt.Errorf("%w: KeepConnected needs a routing table of quicgate's own, not the main table", ErrConfig)
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range cfg.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("%w: address %v", ErrConfig, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: address %v given twice", ErrConfig, p)
		}
		seen[p] = true
	}
	routed := map[netip.Prefix]bool{}
	for _, p := range cfg.Routes {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("%w: route %v is not a prefix (host bits set?)", ErrConfig, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: route %v given twice", ErrConfig, p)
		}
		seen[p], routed[p] = true, true
	}
	excluded := map[netip.Prefix]bool{}
	for _, p := range cfg.Exclude {
		switch {
		case !p.IsValid() || p.Masked() != p:
			return fmt.Errorf("%w: excluded %v is not a prefix (host bits set?)", ErrConfig, p)
		case routed[p]:
			return fmt.Errorf("%w: %v is both routed and excluded", ErrConfig, p)
		case excluded[p]:
			return fmt.Errorf("%w: excluded %v given twice", ErrConfig, p)
		}
		excluded[p] = true
	}
	return nil
}

// table is the routing table cfg asks for, DefaultTable for 0.
func (cfg Config) table() int {
	if cfg.Table == 0 {
		return DefaultTable
	}
	return cfg.Table
}

// Mark is the firewall mark (SO_MARK) the tunnel's own sockets must carry so that their
// packets bypass a device Open makes with cfg and take the host's routes: the routing
// table's number (DefaultTable for 0), and 0 for MainTable, which has no rule to bypass.
// Device.Mark is this, for the device Open made.
func (cfg Config) Mark() uint32 {
	if t := cfg.table(); t != MainTable {
		return uint32(t)
	}
	return 0
}

// Open creates the device, sets its MTU, addresses and routes, and brings it up. With a
// table of its own (every Table but MainTable) it first takes the table's lock and clears
// what a quicgate that died left there, then sets up policy routing (policy.go). On any
// failure it removes what it made.
//
// Open must run on the thread, and so in the network namespace, where the device belongs;
// Close and the sync behind KeepConnected may then run on any goroutine.
func Open(cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logging.OrDiscard(cfg.Logger)
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tun: netlink: %w", err)
	}
	d := &Device{nl: h, name: cfg.Name, mark: cfg.Mark(), log: log}
	if t := cfg.table(); t != MainTable {
		if d.policy, err = openPolicy(h, t, log); err != nil {
			h.Close()
			return nil, permissionOr(err, cfg.Name)
		}
	}
	dev, err := wgtun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		_ = d.Close()
		return nil, permissionOr(fmt.Errorf("tun: creating %s: %w", cfg.Name, err), cfg.Name)
	}
	d.dev = dev
	if d.name, err = dev.Name(); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("tun: %w", err)
	}
	if err := d.configure(cfg); err != nil {
		_ = d.Close()
		return nil, permissionOr(err, d.name)
	}
	log.WithFields(logrus.Fields{"dev": d.name, "mtu": cfg.MTU, "batch": dev.BatchSize(), "table": cfg.table()}).Debug("tun device up")
	return d, nil
}

func (d *Device) configure(cfg Config) error {
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("tun: finding %s: %w", d.name, err)
	}
	d.index = link.Attrs().Index
	if hasIPv6(cfg) {
		if err := enableIPv6(d.name); err != nil {
			return err
		}
	}
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD // usable at once: nothing else is on this link
		}
		if err := d.nl.AddrAdd(link, a); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: address %s on %s: the address exists already on this host; choose another --tun-addr", ErrConfig, p, d.name)
			}
			return fmt.Errorf("tun: address %s on %s: %w", p, d.name, err)
		}
	}
	if err := d.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("tun: bringing %s up: %w", d.name, err)
	}
	if d.policy != nil {
		return d.policy.install(cfg, d.index)
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{LinkIndex: d.index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
		if err := d.nl.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: route %s via %s: a route for %s exists already in this namespace", ErrConfig, p, d.name, p)
			}
			return fmt.Errorf("tun: route %s via %s: %w", p, d.name, err)
		}
		d.routes = append(d.routes, r)
	}
	return nil
}

// TUN is the wireguard device, for the netstack (which may close it; Close allows that).
func (d *Device) TUN() wgtun.Device { return d.dev }

// Name is the interface's name.
func (d *Device) Name() string { return d.name }

// Mark is the firewall mark (SO_MARK) the tunnel's own sockets must carry so that their
// packets bypass the device and take the host's routes: its Config's Mark, the routing
// table's number. It is 0 for MainTable and for a device from FromFD, which have no rule
// to bypass.
func (d *Device) Mark() uint32 { return d.mark }

// Bypass keeps addrs, the addresses the tunnel's server is dialed at, off the device: a
// throw route for each in the device's table, replacing those of an earlier call (see
// policyRouting). It does nothing for MainTable and FromFD devices, and after Close. Safe
// from any goroutine.
func (d *Device) Bypass(addrs ...netip.Addr) error {
	if d.policy == nil {
		return nil
	}
	return d.policy.setBypass(addrs)
}

// Close undoes Open: it stops the connected-subnet sync, removes the rules and every route
// in the device's table (or, with MainTable, the routes it added), closes the device, which deletes the interface and its addresses, and
// releases the table's lock last, so that no other quicgate takes the table before it is
// clean. It is idempotent and safe from any goroutine; what is gone already (a route that
// went away with the interface) is not an error.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		if d.policy != nil {
			errs = append(errs, d.policy.remove())
		}
		for _, r := range d.routes {
			if err := d.nl.RouteDel(r); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("tun: removing route %s: %w", r.Dst, err))
			}
		}
		if d.dev != nil {
			if err := d.dev.Close(); err != nil && !errors.Is(err, fs.ErrClosed) {
				errs = append(errs, fmt.Errorf("tun: closing %s: %w", d.name, err))
			}
		}
		if d.policy != nil {
			errs = append(errs, d.policy.unlock())
		}
		if d.nl != nil {
			d.nl.Close()
		}
		d.closeErr = errors.Join(errs...)
		d.log.WithField("dev", d.name).Debug("tun device removed")
	})
	return d.closeErr
}

// gone reports whether a netlink error means the object no longer exists.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL)
}

// permissionOr turns a lack of privilege into ErrPermission with a message naming it: EPERM
// is the missing capability; EACCES is /dev/net/tun's file mode keeping this user out, which
// no capability mends. A device in use by another process is ErrBusy.
func permissionOr(err error, name string) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: creating TUN device %s needs CAP_NET_ADMIN (run as root, or grant it: setcap cap_net_admin+ep quicgate)", ErrPermission, name)
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: creating TUN device %s: /dev/net/tun is not open to this user (its mode is usually 0666; here it keeps this user out): run as root or make it accessible", ErrPermission, name)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: TUN device %s is in use by another process (another quicgate?); choose another --tun name", ErrBusy, name)
	}
	return err
}
