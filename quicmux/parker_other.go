//go:build !linux

package quicmux

import (
	"errors"
	"sync/atomic"
	"syscall"
)

// parker parks idle kernel sockets in one epoll instance; epoll is Linux's, so elsewhere
// newParker fails and the relay waits for each socket with a goroutine of its own.
type parker struct{}

// newParker reports errors.ErrUnsupported: there is no parker off Linux.
func newParker() (*parker, error) { return nil, errors.ErrUnsupported }

// park is never reached: there is no parker off Linux.
func (p *parker) park(rc syscall.RawConn, f func()) error { return errors.ErrUnsupported }

// parkUnless is never reached either.
func (p *parker) parkUnless(rc syscall.RawConn, f func(), refuse *atomic.Bool) error {
	return errors.ErrUnsupported
}

// unpark has nothing to cancel.
func (p *parker) unpark(rc syscall.RawConn) bool { return false }

// close has nothing to stop.
func (p *parker) close() {}
