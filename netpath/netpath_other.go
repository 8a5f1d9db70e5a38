//go:build !linux

package netpath

import (
	"net/netip"
	"syscall"
)

// Control returns nil: marks and interface bindings are Linux's.
func Control(mark uint32, dev string) func(network, address string, c syscall.RawConn) error {
	return nil
}

// Others knows of no other path.
func Others(dst netip.Addr, mark uint32) ([]string, error) { return nil, nil }

// Watcher never signals here.
type Watcher struct{ C <-chan struct{} }

// NewWatcher returns a watcher that never signals.
func NewWatcher() (*Watcher, error) { return &Watcher{}, nil }

// Close does nothing.
func (w *Watcher) Close() {}
