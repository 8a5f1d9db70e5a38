package quicmux

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/quicgate/quicgate/flow"
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

// serveResolve answers a resolve request: admission (admission.go) judges the name as a
// flow's target on any port (rulesFor), looked up the one way the server looks names up
// (hosts file first, then the resolver with the name made absolute), and keeps the
// addresses a flow to the name could reach on some port under the policy. A name that keeps
// none is denied; one that does not exist is unreachable; a lookup that fails otherwise, or
// not within the dial timeout, has timed out (lookupStatus). The answer is the addresses
// kept, in the order found, and the stream's end.
func (s *Server) serveResolve(ctx context.Context, rq *request) {
	a := s.admit(ctx, rq, nil)
	if a == nil {
		return
	}
	err := s.answer(rq.str, AppendAddrs(AppendStatus(nil, StatusOK), a.addrs), codeFlowReset) // a resolve has no payload to read
	a.end(answered(err))
}

// answered is how a request whose answer is all it carries (a resolve, an echo) ended: ok
// once the answer was written, reset if the stream failed first.
func answered(err error) (string, error, flow.Stats) {
	if err != nil {
		return "reset", err, flow.Stats{}
	}
	return "ok", nil, flow.Stats{}
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
