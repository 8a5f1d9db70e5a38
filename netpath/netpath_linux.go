package netpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Control returns a net.ListenConfig.Control function that sets mark on the socket
// (SO_MARK, needs CAP_NET_ADMIN) when it is not 0, and binds the socket to the interface dev
// (SO_BINDTODEVICE) when dev is not "". A socket bound to an interface sends by that
// interface's routes only.
func Control(mark uint32, dev string) func(network, address string, c syscall.RawConn) error {
	if mark == 0 && dev == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if mark != 0 {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
					serr = fmt.Errorf("netpath: setting the socket's firewall mark %d (needs CAP_NET_ADMIN): %w", mark, err)
					return
				}
			}
			if dev != "" {
				if err := unix.BindToDevice(int(fd), dev); err != nil {
					serr = fmt.Errorf("netpath: binding a socket to %s: %w", dev, err)
				}
			}
		})
		return errors.Join(err, serr)
	}
}

// Others lists the interfaces through which the main routing table reaches dst other than
// the one the host's routes use for it now (for a packet carrying mark): an interface with a
// default route or a route covering dst, up and with carrier, best metric first. A socket
// bound to one of them (Control) leaves by that interface's route.
func Others(dst netip.Addr, mark uint32) ([]string, error) {
	ip := net.IP(dst.Unmap().AsSlice())
	current := -1
	if rs, err := netlink.RouteGetWithOptions(ip, &netlink.RouteGetOptions{Mark: mark}); err == nil && len(rs) > 0 {
		current = rs[0].LinkIndex
	}
	family := netlink.FAMILY_V4
	if dst.Unmap().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("netpath: listing routes: %w", err)
	}
	type cand struct {
		index, metric int
	}
	var cands []cand
	add := func(index, metric int) {
		if index <= 0 || index == current {
			return
		}
		for _, c := range cands {
			if c.index == index {
				return
			}
		}
		cands = append(cands, cand{index, metric})
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || (r.Dst != nil && !r.Dst.Contains(ip)) {
			continue
		}
		if r.Flags&unix.RTNH_F_LINKDOWN != 0 || r.Flags&unix.RTNH_F_DEAD != 0 {
			continue
		}
		add(r.LinkIndex, r.Priority)
		for _, nh := range r.MultiPath {
			if nh.Flags&(unix.RTNH_F_LINKDOWN|unix.RTNH_F_DEAD) == 0 {
				add(nh.LinkIndex, r.Priority)
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return a.metric - b.metric })
	var names []string
	for _, c := range cands {
		l, err := netlink.LinkByIndex(c.index)
		if err != nil {
			continue
		}
		a := l.Attrs()
		if a.Flags&net.FlagUp == 0 || a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown {
			continue
		}
		names = append(names, a.Name)
	}
	return names, nil
}

// Watcher signals changes of the host's links, addresses and routes (in the network
// namespace it was made in), from one netlink socket subscribed to their multicast groups.
type Watcher struct {
	// C receives after one or more changes; it holds at most one signal, so a burst of
	// events that arrives while the reader is busy is one signal.
	C <-chan struct{}

	c    chan struct{}
	f    *os.File
	wg   sync.WaitGroup
	once sync.Once
}

// NewWatcher subscribes to the changes; it needs no privilege. Close stops it.
func NewWatcher() (*Watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netpath: netlink socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("netpath: subscribing to netlink route events: %w", err)
	}
	// A non-blocking descriptor in an *os.File is read through the runtime's poller, so
	// Close wakes the reader.
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, f: os.NewFile(uintptr(fd), "netlink-route")}
	w.wg.Add(1)
	go w.read()
	return w, nil
}

func (w *Watcher) read() {
	defer w.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		_, err := w.f.Read(buf)
		if err != nil && !errors.Is(err, unix.ENOBUFS) { // ENOBUFS: events were lost, which is a change too
			return
		}
		select {
		case w.c <- struct{}{}:
		default:
		}
	}
}

// Close stops the watcher and waits for its goroutine; it is idempotent.
func (w *Watcher) Close() {
	w.once.Do(func() {
		_ = w.f.Close()
		w.wg.Wait()
	})
}
