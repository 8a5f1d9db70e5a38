package tun

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/privtest"
)

var testCfg = Config{
	Name:   "qgtest0",
	MTU:    9000,
	Addrs:  []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd00:77::1/64")},
	Routes: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("fd00:99::/64")},
}

func TestValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", testCfg, ""},
		{"empty name", Config{MTU: 1500}, "interface name"},
		{"long name", Config{Name: "sixteen-chars-xx", MTU: 1500}, "interface name"},
		{"small MTU", Config{Name: "a", MTU: 1000}, "MTU"},
		{"large MTU", Config{Name: "a", MTU: 70000}, "MTU"},
		{"route with host bits", Config{Name: "a", MTU: 1500, Routes: []netip.Prefix{p("10.99.0.1/16")}}, "host bits"},
		{"duplicate route", Config{Name: "a", MTU: 1500, Routes: []netip.Prefix{p("10.99.0.0/16"), p("10.99.0.0/16")}}, "twice"},
		{"duplicate address", Config{Name: "a", MTU: 1500, Addrs: []netip.Prefix{p("10.0.0.1/24"), p("10.0.0.1/24")}}, "twice"},
		{"main table", Config{Name: "a", MTU: 1500, Table: MainTable}, ""},
		{"table 1", Config{Name: "a", MTU: 1500, Table: 1}, ""},
		{"highest table", Config{Name: "a", MTU: 1500, Table: 32765}, ""},
		{"default table", Config{Name: "a", MTU: 1500, Table: DefaultTable}, ""},
		{"negative table", Config{Name: "a", MTU: 1500, Table: -1}, "routing table -1"},
		{"table after main's rule", Config{Name: "a", MTU: 1500, Table: 32766}, "routing table 32766"},
		{"table 'default'", Config{Name: "a", MTU: 1500, Table: 253}, "routing table 253"},
		{"table 'local'", Config{Name: "a", MTU: 1500, Table: 255}, "routing table 255"},
		{"exclude with the main table", Config{Name: "a", MTU: 1500, Table: MainTable, Exclude: []netip.Prefix{p("10.1.0.0/16")}}, "Exclude needs a routing table"},
		{"keep connected with the main table", Config{Name: "a", MTU: 1500, Table: MainTable, KeepConnected: true}, "KeepConnected needs a routing table"},
		{"exclude equal to a route", Config{Name: "a", MTU: 1500, Routes: []netip.Prefix{p("10.0.0.0/8")}, Exclude: []netip.Prefix{p("10.0.0.0/8")}}, "both routed and excluded"},
		{"exclude with host bits", Config{Name: "a", MTU: 1500, Exclude: []netip.Prefix{p("10.1.0.1/16")}}, "host bits"},
		{"duplicate exclude", Config{Name: "a", MTU: 1500, Exclude: []netip.Prefix{p("10.1.0.0/16"), p("10.1.0.0/16")}}, "twice"},
		{"exclude inside a route", Config{Name: "a", MTU: 1500, Routes: []netip.Prefix{p("0.0.0.0/0")}, Exclude: []netip.Prefix{p("10.1.0.0/16")}, KeepConnected: true}, ""},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrConfig saying %q", tt.name, err, tt.want)
		}
	}
}

// Mark is the table's number, DefaultTable's for Table 0, and none for MainTable.
func TestConfigMark(t *testing.T) {
	for _, tt := range []struct {
		table int
		want  uint32
	}{
		{0, DefaultTable},
		{DefaultTable, DefaultTable},
		{1, 1},
		{100, 100},
		{32765, 32765},
		{MainTable, 0},
	} {
		if got := (Config{Table: tt.table}).Mark(); got != tt.want {
			t.Errorf("Table %d: Mark %d, want %d", tt.table, got, tt.want)
		}
	}
}

// Open makes the device with its MTU, addresses and routes, up and batched: with a table of
// its own, routes in that table and one rule per family; with MainTable, routes in the main
// table, no rule and no mark. Close removes it all, and twice is fine.
func TestOpenAndClose(t *testing.T) {
	privtest.Require(t)
	for _, table := range []int{0, MainTable} {
		wantTable, wantMark, wantRules := DefaultTable, uint32(DefaultTable), 2
		if table == MainTable {
			wantTable, wantMark, wantRules = unix.RT_TABLE_MAIN, 0, 0
		}
		privtest.InNewNetns(t, func() {
			cfg := testCfg
			cfg.Table = table
			d, err := Open(cfg)
			if err != nil {
				t.Error(err)
				return
			}
			defer d.Close()
			link, err := netlink.LinkByName(cfg.Name)
			if err != nil {
				t.Error(err)
				return
			}
			if link.Attrs().MTU != cfg.MTU || link.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("link %s: mtu %d flags %v", cfg.Name, link.Attrs().MTU, link.Attrs().Flags)
			}
			if n := d.TUN().BatchSize(); n <= 1 {
				t.Errorf("BatchSize %d: offloads are off", n)
			}
			if d.Mark() != wantMark {
				t.Errorf("table %d: Mark %d, want %d", wantTable, d.Mark(), wantMark)
			}
			addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL)
			for _, want := range cfg.Addrs {
				if !hasAddr(addrs, want) {
					t.Errorf("address %s missing: %v", want, addrs)
				}
			}
			routes, _ := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: wantTable, LinkIndex: link.Attrs().Index},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
			for _, want := range cfg.Routes {
				if !hasRoute(routes, want) {
					t.Errorf("table %d: route %s missing: %v", wantTable, want, routes)
				}
			}
			if n := len(ourRules(t)); n != wantRules {
				t.Errorf("table %d: %d rules of priority %d, want %d", wantTable, n, DefaultTable, wantRules)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := netlink.LinkByName(cfg.Name); err == nil {
				t.Error("link still there after Close")
			}
			all, _ := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
			for _, want := range cfg.Routes {
				if hasRoute(all, want) {
					t.Errorf("route %s still there after Close", want)
				}
			}
			if n := len(ourRules(t)); n != 0 {
				t.Errorf("%d rules left after Close", n)
			}
		})
	}
}

// A device name another process holds is reported as busy, by name.
func TestOpenBusyDevice(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		d, err := Open(testCfg)
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		cfg := testCfg
		cfg.Addrs, cfg.Routes = nil, []netip.Prefix{netip.MustParsePrefix("10.98.0.0/16")}
		cfg.Table = 100 // not the first device's table, whose lock would fail first
		d2, err := Open(cfg)
		if err == nil {
			_ = d2.Close()
			t.Error("a second Open of the same device succeeded")
			return
		}
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "in use by another process") {
			t.Errorf("second Open: %v, want ErrBusy", err)
		}
		// The failed Open released table 100's lock and left nothing in it.
		d3, err := Open(Config{Name: "qgtest1", MTU: 1500, Routes: cfg.Routes, Table: 100})
		if err != nil {
			t.Errorf("Open after a failed Open with the same table: %v", err)
			return
		}
		_ = d3.Close()
	})
}

// A failure half-way (a route that cannot be added) leaves nothing behind. A clash needs
// MainTable: in a table of its own, quicgate's routes clash with nothing.
func TestOpenFailureLeavesNothing(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		cfg := testCfg
		cfg.Table = MainTable
		cfg.Routes = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("0.0.0.0/0")}
		// A default route already present makes the second RouteAdd fail with EEXIST.
		lo, _ := netlink.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		_ = netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 1, 1, 1), Mask: net.CIDRMask(8, 32)}})
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
			t.Errorf("setup: %v", err)
			return
		}
		d, err := Open(cfg)
		if err == nil {
			_ = d.Close()
			t.Error("Open succeeded with a clashing route")
			return
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "a route for 0.0.0.0/0 exists already in this namespace") {
			t.Errorf("clashing route: %v, want ErrConfig saying the route exists", err)
		}
		if strings.Contains(err.Error(), "ip route del") {
			t.Errorf("clashing route: %v advises deleting a route", err)
		}
		if _, err := netlink.LinkByName(cfg.Name); err == nil {
			t.Error("the device survived a failed Open")
		}
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		if hasRoute(routes, cfg.Routes[0]) {
			t.Error("the first route survived a failed Open")
		}
	})
}

// A datagram sent to an address in a routed prefix comes out of the device, batched reads
// and the virtio header offset included; one sent with the device's mark does not.
func TestPacketsReachTheDevice(t *testing.T) {
	privtest.Require(t)
	privtest.InNewNetns(t, func() {
		d, err := Open(testCfg)
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		// A socket carrying the device's mark skips its table: here, with no other route,
		// it has none at all.
		if mc, err := markedDialer(d.Mark()).Dial("udp", "10.99.0.5:9999"); !errors.Is(err, unix.ENETUNREACH) {
			if mc != nil {
				_ = mc.Close()
			}
			t.Errorf("a socket with mark %d: %v, want ENETUNREACH: it would loop into the device", d.Mark(), err)
		}
		c, err := net.Dial("udp", "10.99.0.5:9999")
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		dev := d.TUN()
		bufs := make([][]byte, dev.BatchSize())
		sizes := make([]int, len(bufs))
		for i := range bufs {
			bufs[i] = make([]byte, 65536)
		}
		got := make(chan netip.Addr, 1)
		go func() {
			for {
				n, err := dev.Read(bufs, sizes, virtioNetHdrLen)
				if err != nil {
					close(got)
					return
				}
				for i := range n {
					pkt := bufs[i][virtioNetHdrLen : virtioNetHdrLen+sizes[i]]
					if len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == unix.IPPROTO_UDP && binary.BigEndian.Uint16(pkt[22:24]) == 9999 {
						got <- netip.AddrFrom4([4]byte(pkt[16:20]))
						return
					}
				}
			}
		}()
		// The test waits for the reader's report. The datagram is sent again every 50 ms in
		// case the kernel drops one (UDP promises nothing); the deadline only turns a device
		// that never delivers into a failure instead of a hang.
		deadline := time.NewTimer(hangLimit)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = c.Write([]byte("hello tun"))
			select {
			case a, ok := <-got:
				if !ok {
					t.Error("the device's Read failed before the packet came")
				} else if a != netip.MustParseAddr("10.99.0.5") {
					t.Errorf("packet to %v", a)
				}
				return
			case <-deadline.C:
				t.Errorf("no packet came out of the device in %v", hangLimit)
				return
			case <-tick.C:
			}
		}
	})
}

// hangLimit bounds a test's wait for an event that must come: far above the time it takes,
// even on a loaded machine, it turns a hang into a failure and is no measure of speed.
const hangLimit = 60 * time.Second

// virtioNetHdrLen is the room a read needs before each packet for the virtio-net header
// (wireguard-go keeps its constant unexported).
const virtioNetHdrLen = 10

func hasAddr(addrs []netlink.Addr, p netip.Prefix) bool {
	for _, a := range addrs {
		if a.IPNet.String() == ipNet(p).String() {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, p netip.Prefix) bool {
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == p.String() {
			return true
		}
	}
	return false
}
