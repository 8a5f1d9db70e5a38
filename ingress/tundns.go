package ingress

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/quicgate/quicgate/quicmux"
)

// NameResolver looks names up at the far side: *quicmux.Client is one (Resolve asks the
// server, which answers the addresses its policy lets a flow reach).
type NameResolver interface {
	Resolve(ctx context.Context, name string) ([]netip.Addr, error)
}

var _ NameResolver = (*quicmux.Client)(nil)

// The TUN's DNS responder (TUNConfig.DNS): queries sent to DNS:53, over UDP or TCP, are
// answered here rather than carried as flows. A and AAAA questions become one resolve at
// the server (NameResolver), answered with the addresses of the family asked for; the
// answers are cached for dnsTTL, which is also the TTL they carry. How each outcome is
// answered:
//
//	addresses          NOERROR with those of the question's family (none: NOERROR, no data)
//	denied             REFUSED: the server's policy reaches none of the name's addresses
//	does not resolve   NXDOMAIN
//	other failures     SERVFAIL (the lookup failed or timed out; no server): not cached
//	other types        NOERROR with no answers, so that a stub asking for HTTPS, MX or PTR
//	                   records moves on to A/AAAA at once; NOTIMP would be read by some
//	                   stubs (systemd-resolved) as a broken server and make them retry
//	                   with fewer features, or give up on it
//	other opcodes      NOTIMP; a question count other than one: FORMERR
//	unparsable header  dropped (nothing to answer to)
const (
	dnsTTL = 60 * time.Second
	// dnsIdle ends a UDP socket's or TCP connection's responder when its app has sent
	// nothing for this long; each query's 5-tuple holds one of the stack's UDP flows until
	// then.
	dnsIdle = 10 * time.Second
	// dnsResolveTimeout bounds one resolve at the server, so a stub's retry finds it done.
	dnsResolveTimeout = 15 * time.Second
	// dnsCacheMax bounds the cache; when full, expired entries go, then all of them.
	dnsCacheMax = 4096
	// dnsUDPMax is the largest UDP answer sent: 512 bytes without EDNS, what the query's
	// EDNS record offers up to dnsEDNSMax with it. A larger answer is cut and marked
	// truncated, so the stub asks again over TCP.
	dnsUDPMax  = 512
	dnsEDNSMax = 1232
	// dnsConcurrent bounds the queries one socket has in progress.
	dnsConcurrent = 16
)

// dnsResponder answers the queries sent to one address.
type dnsResponder struct {
	addr netip.Addr
	r    NameResolver
	log  *logrus.Entry

	mu    sync.Mutex
	cache map[string]*dnsEntry
	names map[netip.Addr]dnsName // the names answered with each address
}

// dnsName is the name an address was last given out for, until expires.
type dnsName struct {
	name    string
	expires time.Time
}

// dnsNameLife is how long a flow to an address answered for a name is sent as a flow to
// that name: well beyond the TTL, as apps keep answers longer than they are told to.
const dnsNameLife = 30 * time.Minute

// dnsEntry is a name's resolve: in progress until ready is closed, then valid until
// expires. Queries for a name being resolved wait for it, so the A and AAAA questions a
// stub sends together cost one resolve.
type dnsEntry struct {
	ready   chan struct{}
	addrs   []netip.Addr
	rcode   dnsmessage.RCode
	expires time.Time
}

func newDNSResponder(addr netip.Addr, r NameResolver, log *logrus.Entry) *dnsResponder {
	return &dnsResponder{addr: addr, r: r, log: log, cache: map[string]*dnsEntry{}, names: map[netip.Addr]dnsName{}}
}

// nameOf is the name an answer gave out addr for, if one did within dnsNameLife.
func (d *dnsResponder) nameOf(addr netip.Addr) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.names[addr.Unmap()]
	if !ok || time.Now().After(n.expires) {
		return "", false
	}
	return n.name, true
}

// remember notes that addrs were given out for name. Called with d.mu held.
func (d *dnsResponder) remember(name string, addrs []netip.Addr, now time.Time) {
	if len(d.names)+len(addrs) > 8*dnsCacheMax {
		for a, n := range d.names {
			if now.After(n.expires) {
				delete(d.names, a)
			}
		}
		if len(d.names)+len(addrs) > 8*dnsCacheMax {
			clear(d.names)
		}
	}
	for _, a := range addrs {
		d.names[a] = dnsName{name: name, expires: now.Add(dnsNameLife)}
	}
}

// lookup resolves name, from the cache when it can.
func (d *dnsResponder) lookup(ctx context.Context, name string) ([]netip.Addr, dnsmessage.RCode) {
	now := time.Now()
	d.mu.Lock()
	e := d.cache[name]
	if e != nil {
		select {
		case <-e.ready:
			if now.After(e.expires) {
				e = nil
			}
		default:
		}
	}
	owner := e == nil
	if owner {
		if len(d.cache) >= dnsCacheMax {
			d.evict(now)
		}
		e = &dnsEntry{ready: make(chan struct{})}
		d.cache[name] = e
	}
	d.mu.Unlock()
	if owner {
		rctx, cancel := context.WithTimeout(ctx, dnsResolveTimeout)
		addrs, err := d.r.Resolve(rctx, name)
		cancel()
		e.addrs, e.rcode = addrs, rcodeOf(err)
		e.expires = time.Now().Add(dnsTTL)
		d.mu.Lock()
		if e.rcode == dnsmessage.RCodeServerFailure && d.cache[name] == e {
			delete(d.cache, name) // a failure is worth asking again at once
		}
		d.remember(name, addrs, time.Now())
		d.mu.Unlock()
		if err != nil && d.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			d.log.WithError(err).WithFields(logrus.Fields{"name": name, "rcode": e.rcode.String()}).Debug("dns: resolve failed")
		}
		close(e.ready)
		return e.addrs, e.rcode
	}
	select {
	case <-e.ready:
		return e.addrs, e.rcode
	case <-ctx.Done():
		return nil, dnsmessage.RCodeServerFailure
	}
}

// evict drops the expired entries, and every finished one if that freed too few. Called
// with d.mu held.
func (d *dnsResponder) evict(now time.Time) {
	for _, all := range []bool{false, true} {
		for name, e := range d.cache {
			select {
			case <-e.ready:
				if all || now.After(e.expires) {
					delete(d.cache, name)
				}
			default:
			}
		}
		if len(d.cache) < dnsCacheMax*3/4 {
			return
		}
	}
}

// rcodeOf is the answer to a resolve's error.
func rcodeOf(err error) dnsmessage.RCode {
	switch {
	case err == nil:
		return dnsmessage.RCodeSuccess
	case errors.Is(err, quicmux.ErrDenied):
		return dnsmessage.RCodeRefused
	case errors.Is(err, quicmux.ErrUnreachable), errors.Is(err, quicmux.ErrBadTarget):
		return dnsmessage.RCodeNameError
	}
	return dnsmessage.RCodeServerFailure
}

// answer is the response to query, at most max bytes (0: no limit, TCP), or nil when there
// is nothing to answer to.
func (d *dnsResponder) answer(ctx context.Context, query []byte, max int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, nil, nil, nil, max)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil, nil, max)
	}
	q := qs[0]
	_ = p.SkipAllAnswers()
	_ = p.SkipAllAuthorities()
	var edns *dnsmessage.OPTResource
	for {
		rh, err := p.AdditionalHeader()
		if err != nil {
			break
		}
		if rh.Type == dnsmessage.TypeOPT {
			edns = &dnsmessage.OPTResource{}
			if max > 0 && int(rh.Class) > dnsUDPMax {
				max = min(int(rh.Class), dnsEDNSMax) // an OPT record's class is its UDP size
			}
			break
		}
		if p.SkipAdditional() != nil {
			break
		}
	}
	var addrs []netip.Addr
	if q.Class == dnsmessage.ClassINET && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeAAAA) {
		name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
		var all []netip.Addr
		all, resp.RCode = d.lookup(ctx, name)
		for _, a := range all {
			if a.Is4() == (q.Type == dnsmessage.TypeA) {
				addrs = append(addrs, a)
			}
		}
	}
	return buildAnswer(resp, q, addrs, edns, max)
}

// buildAnswer builds the response with as many of addrs as fit in max bytes, marked
// truncated if not all did.
func buildAnswer(h dnsmessage.Header, q dnsmessage.Question, addrs []netip.Addr, edns *dnsmessage.OPTResource, max int) []byte {
	for n := len(addrs); n >= 0; n-- {
		h.Truncated = n < len(addrs)
		if b := build(h, &q, addrs[:n], edns, 0); b != nil && (max == 0 || len(b) <= max) {
			return b
		}
	}
	return nil
}

// build packs a response; q nil: no question.
func build(h dnsmessage.Header, q *dnsmessage.Question, addrs []netip.Addr, edns *dnsmessage.OPTResource, max int) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if q != nil {
		if b.StartQuestions() != nil || b.Question(*q) != nil {
			return nil
		}
	}
	if b.StartAnswers() != nil {
		return nil
	}
	for _, a := range addrs {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: uint32(dnsTTL / time.Second)}
		var err error
		if a.Is4() {
			err = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		} else {
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil
		}
	}
	if edns != nil {
		if b.StartAdditionals() != nil {
			return nil
		}
		var rh dnsmessage.ResourceHeader
		if rh.SetEDNS0(dnsEDNSMax, dnsmessage.RCodeSuccess, false) != nil || b.OPTResource(rh, *edns) != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil || max > 0 && len(out) > max {
		return nil
	}
	return out
}

// packetConn is a UDP flow's app side as the responder uses it (*netstack.UDPConn).
type packetConn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// serveUDP answers the queries on one UDP 5-tuple until ctx ends or the app has sent
// nothing for dnsIdle; each query is answered in a goroutine of its own (a stub sends A and
// AAAA together), dnsConcurrent at most.
func (d *dnsResponder) serveUDP(ctx context.Context, conn packetConn) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		stop()
		_ = conn.Close()
	}()
	slots := make(chan struct{}, dnsConcurrent)
	for {
		buf := make([]byte, dnsEDNSMax)
		_ = conn.SetReadDeadline(time.Now().Add(dnsIdle))
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // too many at once: dropped, the stub asks again
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if out := d.answer(ctx, buf[:n], dnsUDPMax); out != nil {
				_, _ = conn.Write(out)
			}
		})
	}
}

// serveTCP answers the length-prefixed queries on one TCP connection, in order, until ctx
// ends, the app closes it, or it has been idle for dnsIdle.
func (d *dnsResponder) serveTCP(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	defer c.Close()
	var pre [2]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(dnsIdle))
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(pre[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		out := d.answer(ctx, q, 0)
		if out == nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(dnsIdle))
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)); err != nil {
			return
		}
	}
}
