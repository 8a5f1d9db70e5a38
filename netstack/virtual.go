package netstack

import (
	"errors"
	"net/netip"
)

// NewVirtual makes a stack with no device at all: the in-process ("tcpip.js") approach,
// where the application dials and listens through the stack itself. Traffic between its
// own addresses stays in gVisor (HandleLocal); it has routes only to the subnets of its
// addresses, so DialTCP elsewhere fails at once with ENETUNREACH, and a packet routed to
// a subnet address it does not own is discarded (gVisor drops packets that come back
// from one of its own addresses, so there is nothing to loop them to).
//
// To connect two stacks, or to put a Handler behind a stack, link them with an in-memory
// device pair instead: a, b := memtun.Pipe(...); NewTUN(a, ...); NewTUN(b, ...).
//
// addrs are added to cfg.Addrs; cfg.Handler and cfg.UDPHandler must be nil.
func NewVirtual(cfg Config, addrs ...netip.Prefix) (*Stack, error) {
	if cfg.Handler != nil {
		return nil, errors.New("netstack: a virtual stack has no inbound link for a Handler; use memtun.Pipe and NewTUN")
	}
	if cfg.UDPHandler != nil {
		return nil, errors.New("netstack: a virtual stack has no inbound link for a UDPHandler; use memtun.Pipe and NewTUN")
	}
	if cfg.EchoHandler != nil {
		return nil, errors.New("netstack: a virtual stack has no inbound link for an EchoHandler; use memtun.Pipe and NewTUN")
	}
	cfg.Addrs = append(append([]netip.Prefix(nil), cfg.Addrs...), addrs...)
	if cfg.MTU == 0 {
		cfg.MTU = DefaultVirtualMTU
	}
	return newStack(nil, cfg)
}
