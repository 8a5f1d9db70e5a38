package wanlink

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// InNetns runs f on an OS thread switched into the named network namespace (one made by
// `ip netns add`), and switches the thread back afterwards. Sockets and devices f creates
// stay in that namespace and stay usable from any thread. If the thread cannot be switched
// back it is left locked, so that it ends with its goroutine and no other code runs there.
func InNetns(name string, f func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving network namespace %s: %w", name, err))
			return // still locked: the thread exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// openTUN creates a TUN device with wireguard-go's offloads inside namespace ns, gives it
// addr and mtu and brings it up. Closing the device removes it.
func openTUN(ns, name string, mtu int, addr netip.Prefix) (wgtun.Device, error) {
	var dev wgtun.Device
	err := InNetns(ns, func() error {
		var err error
		dev, err = wgtun.CreateTUN(name, mtu)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating TUN %s in %s: %w", name, ns, err)
	}
	// Nobody needs the up/down events; drain them so that wireguard-go's listener never blocks.
	go func() {
		for range dev.Events() {
		}
	}()
	if err := configure(ns, name, addr); err != nil {
		_ = dev.Close()
		return nil, err
	}
	return dev, nil
}

func configure(ns, name string, addr netip.Prefix) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", name, ns, err)
	}
	ipnet, err := netlink.ParseIPNet(addr.String())
	if err != nil {
		return err
	}
	if err := nl.AddrAdd(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", addr, name, ns, err)
	}
	// Room for bursts while the emulator's reader is descheduled (the default is 500).
	if err := nl.LinkSetTxQLen(link, 5000); err != nil {
		return fmt.Errorf("txqueuelen of %s in %s: %w", name, ns, err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up in %s: %w", name, ns, err)
	}
	return nil
}

// txDropped is the count of packets the kernel dropped because the device's queue toward
// the emulator was full (the emulator did not read fast enough).
func txDropped(ns, name string) (uint64, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	link, err := nl.LinkByName(name)
	if err != nil {
		return 0, err
	}
	if s := link.Attrs().Statistics; s != nil {
		return s.TxDropped, nil
	}
	return 0, nil
}
