package tun

import (
	"fmt"

	"github.com/quicgate/quicgate/internal/logging"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// FromFD wraps a TUN device that another process created, given its open file descriptor
// (received over a Unix socket with SCM_RIGHTS): quicgate run's child makes the device in
// a network namespace of its own, with its addresses and routes, and hands the descriptor
// to the process that stays in the host's namespace. The device lives in that other
// namespace, so nothing here looks it up by name: wireguard's unmonitored device reads
// and writes the descriptor (with the offloads and batches the creator enabled, when it
// was made with a virtio-net header as Open makes it) and sends no link events.
//
// The Device takes ownership of fd. Its Close closes the descriptor, which deletes the
// device once no other process holds it, and with it the namespace's routes through it;
// it has no routes of its own to remove.
func FromFD(fd int, log *logrus.Entry) (*Device, error) {
	log = logging.OrDiscard(log)
	// Check that fd is a TUN device before wireguard wraps it in an *os.File: past that
	// point a failure leaves the descriptor to the file's finalizer, and closing it here too
	// could close a reused number.
	ifr, err := unix.NewIfreq("")
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("tun: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("tun: descriptor %d is not a TUN device: %w", fd, err)
	}
	dev, name, err := wgtun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("tun: adopting descriptor %d: %w", fd, err)
	}
	d := &Device{dev: dev, name: name, log: log}
	log.WithFields(logrus.Fields{"dev": name, "batch": dev.BatchSize()}).Debug("tun device adopted")
	return d, nil
}
