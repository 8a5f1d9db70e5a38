package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/privtest"
)

// fullTunnel sends everything into the device, save what it excludes: 198.51.100.0/24
// (but its upper half, routed again: the longer prefix wins) and 2001:db8:5::/48.
// 192.168.51.0/24, a connected subnet of lan's, is routed explicitly.
var fullTunnel = Config{
	Name:  "qgtest0",
	MTU:   9000,
	Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd00:77::1/64")},
	Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"),
		netip.MustParsePrefix("198.51.100.128/25"), netip.MustParsePrefix("192.168.51.0/24")},
	Exclude: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:5::/48")},
}

// A full tunnel (0.0.0.0/0 and ::/0) opens beside the host's default routes without
// touching them: unmarked traffic goes into the device, traffic with the device's mark
// takes the host's routes, excluded prefixes too, and so do the connected subnets with
// KeepConnected (but one routed explicitly).
func TestFullTunnel(t *testing.T) {
	privtest.Require(t)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("KeepConnected=%v", keep), func(t *testing.T) {
			privtest.InNewNetns(t, func() {
				lanIdx, err := lan()
				if err != nil {
					t.Error(err)
					return
				}
				mainBefore, err := routeStrings(unix.RT_TABLE_MAIN)
				if err != nil {
					t.Error(err)
					return
				}
				cfg := fullTunnel
				cfg.KeepConnected = keep
				d, err := Open(cfg)
				if err != nil {
					t.Errorf("Open: %v", err)
					return
				}
				defer d.Close()
				if d.Mark() != DefaultTable {
					t.Errorf("Mark %d, want %d", d.Mark(), DefaultTable)
				}
				link, err := netlink.LinkByName(cfg.Name)
				if err != nil {
					t.Error(err)
					return
				}
				tunIdx := link.Attrs().Index
				// The main table has the device's own subnets now, and nothing else changed.
				mainAfter, _ := routeStrings(unix.RT_TABLE_MAIN)
				mainAfter = slices.DeleteFunc(mainAfter, func(s string) bool { return strings.Contains(s, fmt.Sprintf(" dev %d ", tunIdx)) })
				if !slices.Equal(mainBefore, mainAfter) {
					t.Errorf("main table changed:\nbefore %q\nafter  %q", mainBefore, mainAfter)
				}
				connected := tunIdx
				if keep {
					connected = lanIdx
				}
				for _, c := range []struct {
					dst  string
					mark uint32
					want int
				}{
					{"203.0.113.9", 0, tunIdx},
					{"203.0.113.9", DefaultTable, lanIdx},
					{"2001:db8:1::9", 0, tunIdx},
					{"2001:db8:1::9", DefaultTable, lanIdx},
					{"192.168.50.7", 0, connected},
					{"fd50::7", 0, connected},
					{"192.168.50.7", DefaultTable, lanIdx},
					{"192.168.51.7", 0, tunIdx}, // an explicit route wins over the connected subnet
					{"198.51.100.7", 0, lanIdx}, // excluded
					{"198.51.100.200", 0, tunIdx},
					{"2001:db8:5::7", 0, lanIdx},
					{"10.77.0.9", DefaultTable, tunIdx}, // the device's own subnet, from main
				} {
					got, err := routeVia(c.dst, c.mark)
					if err != nil {
						t.Errorf("route to %s (mark %d): %v", c.dst, c.mark, err)
					} else if got != c.want {
						t.Errorf("route to %s (mark %d): via link %d, want %d (tun %d, lan %d)", c.dst, c.mark, got, c.want, tunIdx, lanIdx)
					}
				}
				if keep {
					for _, p := range []string{"192.168.50.0/24", "fd50::/64", "fe80::/64"} {
						if ok, err := hasThrow(DefaultTable, netip.MustParsePrefix(p)); !ok || err != nil {
							t.Errorf("no throw route for the connected subnet %s (%v)", p, err)
						}
					}
					for _, p := range []string{"192.168.51.0/24", "10.77.0.0/24", "fd00:77::/64"} {
						if ok, err := hasThrow(DefaultTable, netip.MustParsePrefix(p)); ok || err != nil {
							t.Errorf("a throw route for %s, routed explicitly or the device's own (%v)", p, err)
						}
					}
				}
			})
		})
	}
}

// With KeepConnected, a subnet that appears while the device is open (an address added to
// the LAN's link) gets its throw route, and loses it when it goes. The sync runs on a
// goroutine of its own, outside the test's namespace: the host's rules and table stay as
// they were.
func TestConnectedSubnetsFollowed(t *testing.T) {
	privtest.Require(t)
	defer hostUnchanged(t)()
	privtest.InNewNetns(t, func() {
		lanIdx, err := lan()
		if err != nil {
			t.Error(err)
			return
		}
		cfg := fullTunnel
		cfg.KeepConnected = true
		d, err := Open(cfg)
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		defer d.Close()
		link, _ := netlink.LinkByIndex(lanIdx)
		for _, s := range []string{"10.55.0.1/24", "fd55::1/64"} {
			a := netip.MustParsePrefix(s)
			addr := &netlink.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(link, addr); err != nil {
				t.Errorf("adding %s: %v", a, err)
				return
			}
			if err := waitFor(func() (bool, error) { return hasThrow(DefaultTable, a.Masked()) }); err != nil {
				t.Errorf("throw route for the new subnet %s: %v", a.Masked(), err)
			}
			if got, err := routeVia(a.Addr().Next().String(), 0); err != nil || got != lanIdx {
				t.Errorf("route to %s: via %d (%v), want the LAN's link %d", a.Addr().Next(), got, err, lanIdx)
			}
			if err := netlink.AddrDel(link, addr); err != nil {
				t.Errorf("deleting %s: %v", a, err)
				return
			}
			if err := waitFor(func() (bool, error) { ok, err := hasThrow(DefaultTable, a.Masked()); return !ok, err }); err != nil {
				t.Errorf("throw route for the subnet %s, gone: %v", a.Masked(), err)
			}
		}
	})
}

// hostUnchanged reads the host namespace's rules and table (read only) and returns a
// function that fails the test if they changed since.
func hostUnchanged(t *testing.T) func() {
	t.Helper()
	before, err := tableState(DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		after, err := tableState(DefaultTable)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(before, after) {
			t.Errorf("the host's namespace changed:\nbefore %q\nafter  %q", before, after)
		}
	}
}

// Bypass keeps the server's addresses off the device, also from unmarked lookups (the
// reverse-path check of the server's replies); a later call replaces the addresses of an
// earlier one, and Close removes them with the rest.
func TestBypass(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		lanIdx, err := lan()
		if err != nil {
			t.Error(err)
			return
		}
		d, err := Open(fullTunnel)
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		defer d.Close()
		link, err := netlink.LinkByName(fullTunnel.Name)
		if err != nil {
			t.Error(err)
			return
		}
		tunIdx := link.Attrs().Index
		check := func(step string, want map[string]int) {
			for dst, idx := range want {
				if got, err := routeVia(dst, 0); err != nil || got != idx {
					t.Errorf("%s: %s by link %d (%v), want %d", step, dst, got, err, idx)
				}
			}
		}
		check("before", map[string]int{"203.0.113.9": tunIdx, "2001:db8:1::9": tunIdx})
		if err := d.Bypass(netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("2001:db8:1::9")); err != nil {
			t.Errorf("Bypass: %v", err)
		}
		check("bypassed", map[string]int{"203.0.113.9": lanIdx, "2001:db8:1::9": lanIdx, "203.0.113.10": tunIdx})
		if err := d.Bypass(netip.MustParseAddr("::ffff:203.0.113.10")); err != nil {
			t.Errorf("second Bypass: %v", err)
		}
		check("replaced", map[string]int{"203.0.113.9": tunIdx, "2001:db8:1::9": tunIdx, "203.0.113.10": lanIdx})
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if rs, _ := routeStrings(DefaultTable); len(rs) != 0 {
			t.Errorf("routes left in table %d after Close: %q", DefaultTable, rs)
		}
		if err := d.Bypass(netip.MustParseAddr("203.0.113.11")); err != nil {
			t.Errorf("Bypass after Close: %v", err)
		}
		if rs, _ := routeStrings(DefaultTable); len(rs) != 0 {
			t.Errorf("Bypass after Close added %q", rs)
		}
	})
}

// Close leaves the rules and every table as they were before Open.
func TestCloseRestoresEverything(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		if _, err := lan(); err != nil {
			t.Error(err)
			return
		}
		before, err := snapshot()
		if err != nil {
			t.Error(err)
			return
		}
		cfg := fullTunnel
		cfg.KeepConnected = true
		d, err := Open(cfg)
		if err != nil {
			t.Errorf("Open: %v", err)
			return
		}
		if n := len(ourRules(t)); n != 2 {
			t.Errorf("%d rules while open, want 2", n)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		after, err := snapshot()
		if err != nil {
			t.Error(err)
			return
		}
		if !slices.Equal(before, after) {
			t.Errorf("rules and routes after Close differ from before Open:\nbefore %q\nafter  %q", before, after)
		}
	})
}

// Close works from any goroutine: here from two at once, in the host's namespace, while
// the device lives in another. It cleans the device's namespace (its rules and tables)
// and touches nothing in the host's.
func TestCloseFromAnotherNamespace(t *testing.T) {
	privtest.Require(t)
	defer hostUnchanged(t)()
	var (
		d      *Device
		ns     netns.NsHandle
		before []string
		err    error
	)
	privtest.InNewNetns(t, func() {
		if _, err := lan(); err != nil {
			t.Error(err)
			return
		}
		if before, err = snapshot(); err != nil {
			t.Error(err)
			return
		}
		// The namespace outlives this thread: ns holds it.
		if ns, err = netns.Get(); err != nil {
			t.Error(err)
			return
		}
		cfg := fullTunnel
		cfg.KeepConnected = true
		if d, err = Open(cfg); err != nil {
			t.Errorf("Open: %v", err)
		}
	})
	if ns.IsOpen() {
		defer ns.Close()
	}
	if d == nil {
		return
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- d.Close() }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if err := inNetns(ns, func() {
		after, err := snapshot()
		if err != nil {
			t.Error(err)
			return
		}
		if !slices.Equal(before, after) {
			t.Errorf("rules and routes after Close differ from before Open:\nbefore %q\nafter  %q", before, after)
		}
	}); err != nil {
		t.Error(err)
	}
}

// What a quicgate killed with -9 leaves (rules and throw routes) is removed by the next
// Open with one warning; a second quicgate with the same table in the same namespace is
// refused while the first runs on, and the table is free again after Close.
func TestLeftoversAndLock(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		lanIdx, err := lan()
		if err != nil {
			t.Error(err)
			return
		}
		// A dead run's: one rule per family, two throw routes, and a route through a link
		// that still exists.
		mask := uint32(0xffffffff)
		var errs []error
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			r := netlink.NewRule()
			r.Family, r.Table, r.Priority, r.Mark, r.Mask, r.Invert = fam, DefaultTable, DefaultTable, DefaultTable, &mask, true
			errs = append(errs, netlink.RuleAdd(r))
		}
		errs = append(errs,
			netlink.RouteAdd(throwRoute(netip.MustParsePrefix("10.123.0.0/16"), DefaultTable)),
			netlink.RouteAdd(throwRoute(netip.MustParsePrefix("fd12:3::/48"), DefaultTable)),
			netlink.RouteAdd(&netlink.Route{Dst: ipNet(netip.MustParsePrefix("10.124.0.0/16")), LinkIndex: lanIdx, Table: DefaultTable}))
		if err := errors.Join(errs...); err != nil {
			t.Errorf("setting up the leftovers: %v", err)
			return
		}
		logger, hook := logtest.NewNullLogger()
		logger.SetLevel(logrus.DebugLevel)
		cfg := fullTunnel
		cfg.Logger = logrus.NewEntry(logger)
		d, err := Open(cfg)
		if err != nil {
			t.Errorf("Open over leftovers: %v", err)
			return
		}
		defer d.Close()
		warns := entriesAt(hook, logrus.WarnLevel)
		if len(warns) != 1 || warns[0] != "removed the rules and routes a quicgate that did not exit cleanly left behind" {
			t.Errorf("warnings %q, want one about the leftovers", warns)
		}
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel && (e.Data["rules"] != 2 || e.Data["routes"] != 3 || e.Data["table"] != DefaultTable) {
				t.Errorf("the warning's fields %v, want rules 2, routes 3, table %d", e.Data, DefaultTable)
			}
		}
		for _, p := range []string{"10.123.0.0/16", "fd12:3::/48", "10.124.0.0/16"} {
			if rs, _ := routeStrings(DefaultTable); slices.ContainsFunc(rs, func(s string) bool { return strings.Contains(s, " "+p+" ") }) {
				t.Errorf("leftover %s still in the table: %q", p, rs)
			}
		}
		if n := len(ourRules(t)); n != 2 {
			t.Errorf("%d rules, want 2", n)
		}

		cfg2 := fullTunnel
		cfg2.Name = "qgtest1"
		d2, err := Open(cfg2)
		if err == nil {
			_ = d2.Close()
			t.Error("a second Open with the same table succeeded")
			return
		}
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "routing table 29031 is in use by another quicgate in this network namespace; choose another --route-table") {
			t.Errorf("second Open: %v, want ErrBusy naming the table", err)
		}
		if _, err := netlink.LinkByName(cfg2.Name); err == nil {
			t.Error("the refused Open made its device")
		}
		tunLink, _ := netlink.LinkByName(cfg.Name)
		if got, err := routeVia("203.0.113.9", 0); err != nil || tunLink == nil || got != tunLink.Attrs().Index {
			t.Errorf("after the refused Open, route via %d (%v), want the first device", got, err)
		}
		if n := len(ourRules(t)); n != 2 {
			t.Errorf("after the refused Open, %d rules, want 2", n)
		}

		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		hook.Reset()
		d3, err := Open(cfg2)
		if err != nil {
			t.Errorf("Open after Close: %v", err)
			return
		}
		_ = d3.Close()
		if warns := entriesAt(hook, logrus.WarnLevel); len(warns) != 0 {
			t.Errorf("Open after a clean Close warned: %q", warns)
		}
	})
}

// lan gives the namespace a link standing for the host's LAN: qglan0, with 192.168.50.1/24,
// 192.168.51.1/24 and fd50::1/64, and default routes via 192.168.50.2 and fd50::2 in the
// main table. It brings lo up too, and returns qglan0's index.
func lan() (int, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return 0, err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return 0, err
	}
	// A veth pair rather than a dummy link: some kernels have no dummy driver. Its peer
	// stays in the namespace, up and without addresses, so that the link has a carrier.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "qglan0"}, PeerName: "qglan1"}); err != nil {
		return 0, fmt.Errorf("adding the LAN link: %w", err)
	}
	link, err := netlink.LinkByName("qglan0")
	if err != nil {
		return 0, err
	}
	peer, err := netlink.LinkByName("qglan1")
	if err != nil {
		return 0, err
	}
	if err := netlink.LinkSetUp(peer); err != nil {
		return 0, err
	}
	if err := enableIPv6("qglan0"); err != nil {
		return 0, err
	}
	for _, a := range []string{"192.168.50.1/24", "192.168.51.1/24", "fd50::1/64"} {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a)), Flags: unix.IFA_F_NODAD}); err != nil {
			return 0, fmt.Errorf("address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, err
	}
	for _, gw := range []string{"192.168.50.2", "fd50::2"} {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			return 0, fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	// The kernel adds the IPv6 link-local (fe80::/64) and multicast routes of both ends once
	// they have their carrier, a moment after they are up: wait for them, so that the
	// tables stay as they are from here on.
	linkLocal := func(idx int) (bool, error) {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
		return hasRoute(rs, netip.MustParsePrefix("fe80::/64")), err
	}
	for _, idx := range []int{link.Attrs().Index, peer.Attrs().Index} {
		if err := waitFor(func() (bool, error) { return linkLocal(idx) }); err != nil {
			return 0, fmt.Errorf("the link-local route of link %d: %w", idx, err)
		}
	}
	return link.Attrs().Index, nil
}

// routeVia is the index of the link the kernel sends a packet to dst with mark through.
func routeVia(dst string, mark uint32) (int, error) {
	rs, err := netlink.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{Mark: mark})
	if err != nil {
		return 0, err
	}
	if len(rs) == 0 {
		return 0, errors.New("no route")
	}
	return rs[0].LinkIndex, nil
}

// hasThrow reports whether table has a throw route for p.
func hasThrow(table int, p netip.Prefix) (bool, error) {
	rs, err := netlink.RouteListFiltered(family(p), &netlink.Route{Table: table, Type: unix.RTN_THROW}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err != nil {
		return false, err
	}
	return hasRoute(rs, p), nil
}

// routeStrings lists the routes of table (RT_TABLE_UNSPEC: of every table) in both
// families, one string each, sorted.
func routeStrings(table int) ([]string, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("table %d type %d %v dev %d gw %v scope %d proto %d metric %d", r.Table, r.Type, r.Dst, r.LinkIndex, r.Gw, r.Scope, r.Protocol, r.Priority))
	}
	slices.Sort(out)
	return out, nil
}

// ruleStrings lists the rules of both families, one string each, sorted.
func ruleStrings() ([]string, error) {
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleList(fam)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			mask := "none"
			if r.Mask != nil {
				mask = fmt.Sprintf("%#x", *r.Mask)
			}
			out = append(out, fmt.Sprintf("%s priority %d: not %v fwmark %d/%s lookup %d", familyName(fam), r.Priority, r.Invert, r.Mark, mask, r.Table))
		}
	}
	slices.Sort(out)
	return out, nil
}

// snapshot is every rule and every route of every table.
func snapshot() ([]string, error) {
	rules, err := ruleStrings()
	if err != nil {
		return nil, err
	}
	routes, err := routeStrings(unix.RT_TABLE_UNSPEC)
	return append(rules, routes...), err
}

// tableState is the rules of priority table and the routes in table.
func tableState(table int) ([]string, error) {
	rules, err := ruleStrings()
	if err != nil {
		return nil, err
	}
	rules = slices.DeleteFunc(rules, func(s string) bool { return !strings.Contains(s, fmt.Sprintf(" priority %d:", table)) })
	routes, err := routeStrings(table)
	return append(rules, routes...), err
}

// ourRules lists the rules of priority DefaultTable in both families.
func ourRules(t testing.TB) []netlink.Rule {
	var out []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleList(fam)
		if err != nil {
			t.Errorf("listing rules: %v", err)
		}
		for _, r := range rs {
			if r.Priority == DefaultTable {
				out = append(out, r)
			}
		}
	}
	return out
}

// markedDialer dials from sockets carrying mark (SO_MARK).
func markedDialer(mark uint32) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
		return errors.Join(err, serr)
	}}
}

// waitFor polls cond until it holds. It waits for an event that must come; the deadline
// (hangLimit) only turns one that never comes into a failure instead of a hang.
func waitFor(cond func() (bool, error)) error {
	deadline := time.Now().Add(hangLimit)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not in %v", hangLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inNetns runs f on a thread moved into ns, and waits for it. The thread is never
// returned to the Go scheduler: it ends with f's goroutine.
func inNetns(ns netns.NsHandle, f func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	return <-done
}

func entriesAt(hook *logtest.Hook, level logrus.Level) []string {
	var out []string
	for _, e := range hook.AllEntries() {
		if e.Level == level {
			out = append(out, e.Message)
		}
	}
	return out
}
