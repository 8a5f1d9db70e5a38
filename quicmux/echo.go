package quicmux

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/quicgate/quicgate/flow"
)

// MaxEchoPayload bounds the payload of one echo (KindEcho): enough for ping's default 56
// bytes and for probing a path's MTU up to 4 KiB.
const MaxEchoPayload = 4096

// EchoTimeout is how long the server waits for the destination's echo reply.
const EchoTimeout = 2 * time.Second

// AppendEchoPayload appends what follows an echo's header:
//
//	length(2, big endian) | payload
//
// and the server answers, after an ok status, with the round-trip time:
//
//	rtt(4, big endian, microseconds)
func AppendEchoPayload(b, payload []byte) ([]byte, error) {
	if len(payload) > MaxEchoPayload {
		return b, fmt.Errorf("%w: echo payload of %d bytes (at most %d)", ErrBadRequest, len(payload), MaxEchoPayload)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...), nil
}

// readEchoPayload reads what AppendEchoPayload wrote. Errors wrap ErrBadRequest.
func readEchoPayload(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, truncated(err)
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l > MaxEchoPayload {
		return nil, fmt.Errorf("%w: echo payload of %d bytes", ErrBadRequest, l)
	}
	p := make([]byte, l)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, truncated(err)
	}
	return p, nil
}

// errNoICMPSocket says the server may open neither an unprivileged ICMP socket (its group
// is outside net.ipv4.ping_group_range) nor a raw one (it lacks CAP_NET_RAW).
var errNoICMPSocket = errors.New("no ICMP socket allowed")

// serveEcho answers an echo request: its payload read, admission (admission.go) judges the
// address as a flow's target on any port, for either protocol (an address rule: an echo has
// no port and no name), and under its dial slot the server sends one echo from its own
// ICMP socket; it answers ok with the round-trip time, timed out when no reply came within
// EchoTimeout, or unreachable when the echo could not be sent. Where the host allows no
// ICMP socket, one warning says so (once) and every echo is unreachable.
func (s *Server) serveEcho(ctx context.Context, rq *request) {
	str := rq.str
	payload, err := readEchoPayload(&rq.in) // within the header timeout, from the header's end
	rq.in.settle(time.Time{})
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			s.refuse(rq, StatusBadRequest, err)
			return
		}
		abortStream(str, codeBadRequest) // the stream ended before its payload
		return
	}
	var rtt time.Duration
	a := s.admit(ctx, rq, func(ctx context.Context, addrs []netip.Addr) (netip.Addr, Status, error) {
		var st Status
		var e error
		rtt, st, e = s.sendEchoTo(ctx, addrs[0], payload)
		return addrs[0], st, e
	})
	if a == nil {
		return
	}
	err = s.answer(str, binary.BigEndian.AppendUint32(AppendStatus(nil, StatusOK), uint32(min(rtt.Microseconds(), 1<<32-1))), codeFlowReset)
	a.end(answered(err))
}

// sendEchoTo sends the echo and maps how it went to a status.
func (s *Server) sendEchoTo(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, Status, error) {
	rtt, err := s.echo(ctx, addr, payload)
	switch {
	case err == nil:
		return rtt, StatusOK, nil
	case errors.Is(err, errNoICMPSocket):
		s.noEchoOnce.Do(func() {
			s.log.WithError(err).Warn("echo: this server may not open ICMP sockets, so pings through TUNs go unanswered; " +
				"allow its group in net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range='0 2147483647') or give it CAP_NET_RAW")
		})
		return 0, StatusUnreachable, err
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		return 0, StatusTimedOut, err
	}
	return 0, StatusUnreachable, err
}

// sendEcho sends one ICMP echo request to addr from an unprivileged ICMP socket (Linux: the
// process's group must be in net.ipv4.ping_group_range, which covers IPv6 too), or, where
// that is not allowed, from a raw socket (CAP_NET_RAW); it waits for the matching reply
// until ctx ends.
func sendEcho(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error) {
	addr = addr.Unmap()
	dgram, raw, laddr, proto := "udp4", "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		dgram, raw, laddr, proto = "udp6", "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	isRaw := false
	c, err := icmp.ListenPacket(dgram, laddr)
	if err != nil && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) {
		isRaw = true
		c, err = icmp.ListenPacket(raw, laddr)
		if err != nil && (errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)) {
			return 0, fmt.Errorf("%w: %w", errNoICMPSocket, err)
		}
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	id, seq := int(binary.BigEndian.Uint16(idb[:])), int(binary.BigEndian.Uint16(idb[2:]))
	msg, err := (&icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	var dst net.Addr = &net.UDPAddr{IP: addr.AsSlice()}
	if isRaw {
		dst = &net.IPAddr{IP: addr.AsSlice()}
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	if _, err := c.WriteTo(msg, dst); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500+MaxEchoPayload)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != replyType {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		// A datagram socket's replies are its own (the kernel sets and matches the
		// identifier); a raw socket sees every reply the host gets.
		if !ok || e.Seq != seq || isRaw && (e.ID != id || !sameIP(from, addr)) {
			continue
		}
		return time.Since(start), nil
	}
}

func sameIP(a net.Addr, want netip.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return false
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want
}

// Echo asks the server to send one ICMP echo (ICMPv6 for an IPv6 address) with payload to
// addr and returns the round-trip time it measured. Its errors match ErrDenied (the
// server's policy allows addr on no port), ErrTimedOut (no reply within EchoTimeout),
// ErrUnreachable (the echo could not be sent: no route, or the server may not open ICMP
// sockets), ErrShuttingDown, ErrTooManyFlows, or ErrServerUnreachable; a payload larger
// than MaxEchoPayload matches ErrBadRequest.
func (c *Client) Echo(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error) {
	hdr, err := AppendRequest(nil, Request{Kind: KindEcho, Target: flow.Target{Addr: addr.Unmap()}})
	if err != nil {
		return 0, err
	}
	if hdr, err = AppendEchoPayload(hdr, payload); err != nil {
		return 0, err
	}
	var rtt [4]byte
	err = c.ask(ctx, hdr, func(r io.Reader) error {
		if _, err := io.ReadFull(r, rtt[:]); err != nil {
			return fmt.Errorf("%w: echo answer without its round-trip time", ErrProtocol)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(binary.BigEndian.Uint32(rtt[:])) * time.Microsecond, nil
}
