package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"sync"

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
	Routes []netip.Prefix // prefixes routed into the device, e.g. 10.99.0.0/16
	Logger *logrus.Entry  // nil: discard
}

// Device is an open TUN device with its addresses and routes.
type Device struct {
	dev    wgtun.Device
	name   string
	index  int
	routes []*netlink.Route
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
	for _, p := range cfg.Routes {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("%w: route %v is not a prefix (host bits set?)", ErrConfig, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: route %v given twice", ErrConfig, p)
		}
		seen[p] = true
	}
	return nil
}

// Open creates the device, sets its MTU, addresses and routes, and brings it up. On any
// failure it removes what it made.
func Open(cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = logrus.NewEntry(l)
	}
	dev, err := wgtun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, permissionOr(fmt.Errorf("tun: creating %s: %w", cfg.Name, err), cfg.Name)
	}
	d := &Device{dev: dev, log: log}
	if d.name, err = dev.Name(); err != nil {
		_ = dev.Close()
		return nil, fmt.Errorf("tun: %w", err)
	}
	if err := d.configure(cfg); err != nil {
		_ = d.Close()
		return nil, permissionOr(err, d.name)
	}
	log.WithFields(logrus.Fields{"dev": d.name, "mtu": cfg.MTU, "batch": dev.BatchSize()}).Debug("tun device up")
	return d, nil
}

func (d *Device) configure(cfg Config) error {
	link, err := netlink.LinkByName(d.name)
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
		if err := netlink.AddrAdd(link, a); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: address %s on %s: the address exists already on this host; choose another --tun-addr", ErrConfig, p, d.name)
			}
			return fmt.Errorf("tun: address %s on %s: %w", p, d.name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tun: bringing %s up: %w", d.name, err)
	}
	for _, p := range cfg.Routes {
		r := &netlink.Route{LinkIndex: d.index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%w: route %s via %s: a route for %s exists already (another interface, or a quicgate that did not exit cleanly); remove it ('ip route del %s') or choose another --route", ErrConfig, p, d.name, p, p)
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

// Close removes the routes it added and closes the device, which deletes the interface and
// its addresses. It is idempotent and safe from any goroutine; a route that went away with
// the interface is not an error.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		for _, r := range d.routes {
			if err := netlink.RouteDel(r); err != nil && !gone(err) {
				d.closeErr = fmt.Errorf("tun: removing route %s: %w", r.Dst, err)
			}
		}
		if err := d.dev.Close(); err != nil && !errors.Is(err, fs.ErrClosed) && d.closeErr == nil {
			d.closeErr = fmt.Errorf("tun: closing %s: %w", d.name, err)
		}
		d.log.WithField("dev", d.name).Debug("tun device removed")
	})
	return d.closeErr
}

// gone reports whether a netlink error means the object no longer exists.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL)
}

// ErrBusy: a TUN device of that name is in use by another process.
var ErrBusy = errors.New("tun: device busy")

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

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
