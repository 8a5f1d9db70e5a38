//go:build !linux

package flow

import (
	"errors"
	"sync/atomic"
	"syscall"
)

// Parker parks idle kernel sockets in one epoll instance; epoll is Linux's, so elsewhere
// NewParker fails and the relay waits for each socket with a goroutine of its own.
type Parker struct{}

// NewParker reports errors.ErrUnsupported: there is no parker off Linux.
func NewParker() (*Parker, error) { return nil, errors.ErrUnsupported }

// park is never reached: there is no parker off Linux.
func (p *Parker) park(rc syscall.RawConn, f func()) error { return errors.ErrUnsupported }

// parkUnless is never reached either.
func (p *Parker) parkUnless(rc syscall.RawConn, f func(), refuse *atomic.Bool) error {
	return errors.ErrUnsupported
}

// unpark has nothing to cancel.
func (p *Parker) unpark(rc syscall.RawConn) bool { return false }

// Close has nothing to stop.
func (p *Parker) Close() {}
