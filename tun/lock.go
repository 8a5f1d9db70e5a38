package tun

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// tableLock is held by the quicgate that uses a routing table in a network namespace: an
// abstract unix socket named "quicgate-route-table-T" bound to it. Abstract unix sockets
// belong to the network namespace the socket is made in (here, the thread calling Open's),
// have no file to remove, and are released by the kernel when the process dies, however it
// dies: a lock Open can take means that no live quicgate uses the table, so whatever is in
// it was left by one that did not exit cleanly.
type tableLock struct{ fd int }

// lockTable takes table's lock, or fails with ErrBusy if another process holds it.
func lockTable(table int) (*tableLock, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: locking routing table %d: %w", table, err)
	}
	// A leading '@' makes the name abstract (x/sys/unix writes the NUL byte).
	addr := &unix.SockaddrUnix{Name: "@quicgate-route-table-" + strconv.Itoa(table)}
	if err := unix.Bind(fd, addr); err != nil {
		_ = unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("%w: routing table %d is in use by another quicgate in this network namespace; choose another --route-table", ErrBusy, table)
		}
		return nil, fmt.Errorf("tun: locking routing table %d: %w", table, err)
	}
	return &tableLock{fd: fd}, nil
}

// release lets another quicgate take the table. It is called once, by Close.
func (l *tableLock) release() error {
	if err := unix.Close(l.fd); err != nil {
		return fmt.Errorf("tun: releasing the routing table's lock: %w", err)
	}
	return nil
}
