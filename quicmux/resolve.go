package quicmux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// MaxResolveAddrs bounds the addresses one resolve answer carries; the server keeps the
// first ones, in the order found.
const MaxResolveAddrs = 32

// AppendAddrs appends a resolve answer's addresses, which follow its ok status:
//
//	count(1) | count × (atyp(1) | addr(4 or 16))
//
// It writes at most MaxResolveAddrs of them.
func AppendAddrs(b []byte, addrs []netip.Addr) []byte {
	addrs = addrs[:min(len(addrs), MaxResolveAddrs)]
	b = append(b, byte(len(addrs)))
	for _, a := range addrs {
		b = appendAddr(b, a)
	}
	return b
}

// ReadAddrs reads the addresses AppendAddrs wrote. Errors wrap ErrProtocol.
func ReadAddrs(r io.Reader) ([]netip.Addr, error) {
	var one [1]byte
	bad := func(why string) ([]netip.Addr, error) {
		return nil, fmt.Errorf("%w: resolve answer: %s", ErrProtocol, why)
	}
	if _, err := io.ReadFull(r, one[:]); err != nil {
		return bad("no address count")
	}
	n := int(one[0])
	if n > MaxResolveAddrs {
		return bad(fmt.Sprintf("%d addresses", n))
	}
	addrs := make([]netip.Addr, 0, n)
	for range n {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			return bad("truncated")
		}
		switch one[0] {
		case atypIPv4:
			var v [4]byte
			if _, err := io.ReadFull(r, v[:]); err != nil {
				return bad("truncated")
			}
			addrs = append(addrs, netip.AddrFrom4(v))
		case atypIPv6:
			var v [16]byte
			if _, err := io.ReadFull(r, v[:]); err != nil {
				return bad("truncated")
			}
			addrs = append(addrs, netip.AddrFrom16(v).Unmap())
		default:
			return bad(fmt.Sprintf("address type %d", one[0]))
		}
	}
	return addrs, nil
}

// serveResolve answers a resolve request: the name is looked up as for a flow (hosts file
// first, then the resolver with the name made absolute), and the answer keeps the
// addresses a flow to the name could reach on some port under the policy (reachable). A
// name that keeps none is denied; one that does not resolve is unreachable; a lookup that
// fails otherwise, or not within the dial timeout, has timed out. Each is counted in the
// dial results and logged at debug: resolves come often, and a denied one is no incident.
func (s *Server) serveResolve(ctx context.Context, cl *connInfo, str *quic.Stream, name string, log *logrus.Entry) {
	if !s.flows.Start() {
		s.cfg.Metrics.dialResult(StatusShuttingDown)
		s.reject(str, StatusShuttingDown, codeShutdown)
		return
	}
	defer s.flows.Done()
	addrs, status := s.lookupAllowed(ctx, name)
	s.cfg.Metrics.dialResult(status)
	if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		log.WithFields(logrus.Fields{"name": name, "result": status.String(), "addrs": addrs}).Debug("resolve")
	}
	if status != StatusOK {
		if status != StatusDenied {
			s.cfg.Metrics.failed(Failure{Ingress: ingressServer, Peer: cl.name, Target: "resolve " + name, Reason: status.String()})
		}
		s.reject(str, status, codeFlowReset)
		return
	}
	_ = str.SetWriteDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	_, _ = str.Write(AppendAddrs(AppendStatus(nil, StatusOK), addrs))
	_ = str.Close()
	str.CancelRead(codeFlowReset) // a resolve has no payload to read
}

// lookupAllowed resolves name under the dial timeout and a dial slot, and keeps the
// addresses that reachable allows.
func (s *Server) lookupAllowed(ctx context.Context, name string) ([]netip.Addr, Status) {
	policy, ok := s.cfg.Policy.(AnyPortPolicy)
	if !ok {
		return nil, StatusDenied
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	select {
	case s.dialSlots <- struct{}{}:
		defer func() { <-s.dialSlots }()
	case <-ctx.Done():
		return nil, StatusTimedOut
	}
	ips := s.hosts.lookup(name)
	fromHosts := len(ips) > 0
	if !fromHosts {
		var err error
		ips, err = s.cfg.Resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(name, ".")+".")
		if err != nil {
			var dnsErr *net.DNSError
			if ctx.Err() == nil && errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return nil, StatusUnreachable
			}
			return nil, StatusTimedOut
		}
	}
	var addrs []netip.Addr
	for _, ip := range ips {
		// On some port, for either protocol: the rules' verdict on any flow to the name.
		if ip = ip.Unmap(); s.reaches(policy.AllowAnyPort, flow.Target{Host: name}, ip, fromHosts) {
			addrs = append(addrs, ip)
		}
	}
	if len(addrs) == 0 {
		return nil, StatusDenied
	}
	return addrs, StatusOK
}

// Resolve asks the server for the addresses of name, as it resolves names for flows:
// the addresses a flow to name could reach on some port under its policy, in the order
// found (IPv4 and IPv6 mixed). Its errors match ErrDenied (the policy allows none of
// them), ErrUnreachable (the name does not resolve), ErrTimedOut (the lookup failed or
// took longer than the server's dial timeout), ErrShuttingDown, ErrTooManyFlows, or
// ErrServerUnreachable; a bad name matches ErrBadTarget.
func (c *Client) Resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	hdr, err := AppendRequest(nil, Request{Kind: KindResolve, Target: flow.Target{Host: name}})
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	err = c.ask(ctx, hdr, func(r io.Reader) (err error) {
		addrs, err = ReadAddrs(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return addrs, nil
}
