package ingress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
)

// maxAssociationTargets bounds the targets one SOCKS5 UDP association sends to at once: each
// is a UDP flow.
const maxAssociationTargets = 64

// serveAssociate serves a SOCKS5 UDP ASSOCIATE (RFC 1928, section 7): a UDP socket on the
// proxy's address relays the client's datagrams, each with its SOCKS5 UDP header naming a
// target, as UDP flows through the tunnel (one per target; a name is resolved by the
// server), and the targets' answers back with the header naming where they came from. Only
// datagrams from the control connection's host are taken, and fragments (FRAG > 0) are
// dropped, as RFC 1928 allows. The association ends with its control connection.
func (p *Proxy) serveAssociate(conn net.Conn, local flow.Conn, peer string) {
	defer p.flows.Done()
	ut := p.cfg.UDP
	if ut == nil {
		_, _ = conn.Write(socksReply(socksCommandNotSupported, nil))
		closeAfterReply(conn, local)
		return
	}
	bind := netip.AddrPortFrom(conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), 0)
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bind))
	if err != nil {
		_, _ = conn.Write(socksReply(socksGeneralFailure, nil))
		closeAfterReply(conn, local)
		p.log.WithError(err).Warn("socks5 UDP ASSOCIATE: no UDP socket")
		return
	}
	if _, err := conn.Write(socksReply(socksSucceeded, uc.LocalAddr())); err != nil {
		_ = uc.Close()
		local.Abort()
		return
	}
	shared, err := flow.NewSharedUDPSocket(uc)
	if err != nil {
		_ = uc.Close()
		local.Abort()
		return
	}
	ctx, cancel := context.WithCancel(p.flows.Context())
	a := &association{
		ctx: ctx, tun: ut, shared: shared, name: p.name, peer: peer,
		client: conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(),
		flows:  map[string]*associationFlow{},
		log:    p.log.WithFields(logrus.Fields{"peer": peer, "proto": "socks5 udp", "udp": uc.LocalAddr().String()}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { // the control connection: its end (or the proxy's) ends the association
		_, _ = io.Copy(io.Discard, conn)
		cancel()
	})
	stop := context.AfterFunc(ctx, func() {
		_ = uc.Close()
		local.Abort() // ends the copy above when the proxy, not the client, ends it
	})
	a.log.Debug("socks5 UDP association open")
	a.wg = &wg
	_ = shared.ReadLoop(a.route)
	cancel()
	stop()
	_ = uc.Close()
	_ = local.Close()
	wg.Wait()
	a.log.Debug("socks5 UDP association closed")
}

// association is one SOCKS5 UDP association.
type association struct {
	ctx    context.Context
	tun    UDPTunnel
	shared *flow.SharedUDPSocket
	name   string // the -D ingress
	peer   string
	client netip.Addr                     // the control connection's host
	reply  atomic.Pointer[netip.AddrPort] // where the client's datagrams came from last
	log    *logrus.Entry
	// wg counts the flows' set-up and relays: the association ends once they have.
	wg *sync.WaitGroup

	mu    sync.Mutex
	flows map[string]*associationFlow // by target
}

// associationFlow is one target's flow: the client's end of it.
type associationFlow struct {
	sharedFlow
	target flow.Target
	header []byte // the SOCKS5 UDP header its answers carry
}

// route hands each of the client's datagrams, its SOCKS5 header taken off, to its target's
// flow.
func (a *association) route(ps [][]byte, from []netip.AddrPort) {
	for i, b := range ps {
		if from[i].Addr() != a.client {
			continue // only the client's host may use the association
		}
		t, header, payload, err := parseSOCKSUDP(b)
		if err != nil {
			continue
		}
		reply := from[i] // from is the read batch's, reused once route returns
		a.reply.Store(&reply)
		if f := a.flowFor(t, header); f != nil {
			f.deliver([][]byte{payload})
		}
	}
}

// flowFor returns t's flow, starting it if there is room.
func (a *association) flowFor(t flow.Target, header []byte) *associationFlow {
	key := t.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if f, ok := a.flows[key]; ok {
		return f
	}
	if len(a.flows) >= maxAssociationTargets {
		return nil
	}
	f := &associationFlow{target: t, header: append([]byte(nil), header...)}
	f.write = func(ps [][]byte) { a.answer(f, ps) }
	f.onClose = func() { a.remove(f) }
	a.flows[key] = f
	a.wg.Go(func() { a.open(f) })
	return f
}

// remove forgets f, so that a later datagram for its target opens a new flow.
func (a *association) remove(f *associationFlow) {
	a.mu.Lock()
	if a.flows[f.target.String()] == f {
		delete(a.flows, f.target.String())
	}
	a.mu.Unlock()
}

// open opens f's flow and relays it until it or the association ends.
func (a *association) open(f *associationFlow) {
	tun, err := a.tun.OpenUDP(a.ctx, f.target, a.name, a.peer)
	if err != nil {
		a.remove(f)
		if a.ctx.Err() == nil {
			a.log.WithError(err).WithField("target", f.target.String()).Info("udp flow failed")
		}
		return
	}
	a.wg.Add(1)
	// The relay closes f when the flow ends, which removes it (onClose).
	flow.RelayPackets(a.ctx, &f.sharedFlow, tun, flow.PacketRelayOptions{}, func(flow.PacketStats, error) { a.wg.Done() })
}

// answer sends the target's packets to the client, each after the header that names the
// target.
func (a *association) answer(f *associationFlow, ps [][]byte) {
	to := a.reply.Load()
	if to == nil {
		return
	}
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = append(f.header[:len(f.header):len(f.header)], p...)
	}
	_ = a.shared.WriteTo(out, *to)
}

// parseSOCKSUDP splits a SOCKS5 UDP datagram (RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA)
// into its target, its header (which the target's answers carry back) and its payload.
// Fragments are refused.
func parseSOCKSUDP(b []byte) (t flow.Target, header, payload []byte, err error) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 {
		return t, nil, nil, errors.New("socks5 udp: bad header")
	}
	if b[2] != 0 {
		return t, nil, nil, errors.New("socks5 udp: fragments are not supported")
	}
	var host string
	rest := b[4:]
	switch b[3] {
	case socksAtypIPv4, socksAtypIPv6:
		n := 4
		if b[3] == socksAtypIPv6 {
			n = 16
		}
		if len(rest) < n+2 {
			return t, nil, nil, errors.New("socks5 udp: short address")
		}
		a, _ := netip.AddrFromSlice(rest[:n])
		host, rest = a.String(), rest[n:]
	case socksAtypDomain:
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+2 {
			return t, nil, nil, errors.New("socks5 udp: short name")
		}
		host, rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	default:
		return t, nil, nil, fmt.Errorf("socks5 udp: address type %d", b[3])
	}
	port := binary.BigEndian.Uint16(rest)
	t, err = flow.ParseTarget(net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return t, nil, nil, err
	}
	hlen := len(b) - len(rest) + 2
	return t, b[:hlen:hlen], rest[2:], nil
}
