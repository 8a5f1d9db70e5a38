package quicmux

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
)

// How the server judges a request's target (docs/protocol.md, "How the server judges a
// target"), the same for every kind: the rules for the kind (rulesFor), the one resolver
// path for names (lookup: the hosts file, then DNS), and the guard they meet in reaches.

// lookup resolves a name the one way the server resolves names: the hosts file first (the
// operator's own names, trusted to point at the server's own addresses), then the Resolver
// with the name made absolute, so that no search domain can turn it into another. fromHosts
// says which answered.
func (s *Server) lookup(ctx context.Context, name string) (ips []netip.Addr, fromHosts bool, err error) {
	if ips = s.hosts.lookup(name); len(ips) > 0 {
		return ips, true, nil
	}
	ips, err = s.cfg.Resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(name, ".")+".")
	if err != nil {
		return nil, false, err
	}
	return ips, false, nil
}

// lookupStatus is what a failed lookup answers. A resolve tells a name that does not exist
// (unreachable: the TUN's DNS says NXDOMAIN) from a lookup that failed otherwise (timed out:
// SERVFAIL, which a stub asks again); a flow to a name that did not resolve is unreachable
// unless its time ran out (docs/protocol.md).
func lookupStatus(k Kind, ctx context.Context, err error) Status {
	if k == KindResolve {
		var dnsErr *net.DNSError
		if ctx.Err() == nil && errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return StatusUnreachable
		}
		return StatusTimedOut
	}
	if ctx.Err() != nil {
		return StatusTimedOut
	}
	return StatusUnreachable
}

// rulesFor is the rule a request of kind k is judged by: the policy for its protocol (a TCP
// or UDP flow), or for any port and either protocol (a resolve, an echo: they have no port),
// which a Policy that is not an AnyPortPolicy cannot answer (nil: every such request is
// denied). A listen is judged by ListenPolicy instead (judge).
func (s *Server) rulesFor(k Kind) func(flow.Target) bool {
	switch k {
	case KindTCP:
		return s.allowTCP
	case KindUDP:
		return s.allowUDP
	case KindResolve, KindEcho:
		return s.allowAnyPort
	}
	return nil
}

// judge is the addresses a request may go to, in the order to try them (an address
// target's own, or what its name resolves to and the rules and the guard allow), or the
// status that says why none (and an error that says more, if there is more to say).
// buf is room for the addresses.
func (s *Server) judge(ctx context.Context, rq *request, buf []netip.Addr) (addrs []netip.Addr, fromHosts bool, status Status, err error) {
	if rq.kind == KindListen {
		// A bind, not a dial: ListenPolicy's rules say where, and no guard applies (a
		// rule may let a client listen on 0.0.0.0 or on loopback).
		if !s.listenAllowed(rq.cl.fp, netip.AddrPortFrom(rq.target.Addr, rq.target.Port)) {
			return nil, false, StatusDenied, errListenDenied
		}
		return append(buf, rq.target.Addr), false, StatusOK, nil
	}
	allow := s.rulesFor(rq.kind)
	if allow == nil {
		return nil, false, StatusDenied, nil
	}
	addrs, fromHosts, status = s.destinationBy(ctx, rq.kind, allow, rq.target, buf)
	return addrs, fromHosts, status, nil
}

// destinationBy judges t by allow: an address target is its own address if reaches lets
// it; a name is looked up (lookup), and each address it resolves to is kept, in the order
// found, if reaches lets it. The addresses are appended to buf. A name that allow allows but whose addresses are all guarded is
// worth a warning: a DNS answer pointed an allowed name at the server itself (rebinding), or
// the operator meant an address rule.
func (s *Server) destinationBy(ctx context.Context, k Kind, allow func(flow.Target) bool, t flow.Target, buf []netip.Addr) (addrs []netip.Addr, fromHosts bool, status Status) {
	if t.Addr.IsValid() {
		if !s.reaches(allow, t, t.Addr, false) {
			return nil, false, StatusDenied
		}
		return append(buf, t.Addr), false, StatusOK
	}
	ips, fromHosts, err := s.lookup(ctx, t.Host)
	if err != nil {
		return nil, false, lookupStatus(k, ctx, err)
	}
	var guarded []netip.Addr
	addrs = buf
	for _, ip := range ips {
		ip = ip.Unmap()
		switch {
		case s.reaches(allow, t, ip, fromHosts):
			addrs = append(addrs, ip)
		case dialable(ip):
			guarded = append(guarded, ip)
		}
	}
	if len(addrs) == 0 {
		if len(guarded) > 0 && allow(t) {
			if ok, held := s.guardLines.allow(); ok {
				s.log.WithFields(withHeld(logrus.Fields{"kind": k.String(), "target": targetString(k, t), "addrs": guarded}, held)).
					Warn("denied: an allowed name resolves only to loopback, link-local or the server's own addresses, which only an address rule allows")
			}
		}
		return nil, false, StatusDenied
	}
	return addrs, fromHosts, StatusOK
}

// reaches is the one place the rules meet the guard: a flow to t may go to addr if allow
// allows addr itself (an address rule); or if t is a name allow allows, and addr is not
// guarded (loopback, link-local, the server's own) or the name came from the hosts file.
func (s *Server) reaches(allow func(flow.Target) bool, t flow.Target, addr netip.Addr, fromHosts bool) bool {
	if !dialable(addr) {
		return false
	}
	if allow(flow.Target{Addr: addr, Port: t.Port}) {
		return true
	}
	return !t.Addr.IsValid() && allow(t) && (fromHosts || !s.guarded(addr))
}

// dialable rejects addresses that are no single remote host: the unspecified address (which
// connects to the server itself), multicast and the IPv4 broadcast address. A rule such as
// 0.0.0.0/5 would otherwise let 0.0.0.0 reach the server's own loopback services.
func dialable(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
