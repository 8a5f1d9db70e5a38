package looptest

import (
	"context"
	"net"
	"net/netip"
)

// DialerFunc is a function as a dialer (quicmux.Dialer, for a server whose dials a test
// steers or fails).
type DialerFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f DialerFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// ResolverFunc is a function as a resolver (quicmux.Resolver).
type ResolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f ResolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}
