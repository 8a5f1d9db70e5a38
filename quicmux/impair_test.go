package quicmux

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// impairProxy is a UDP relay between a QUIC client and server that drops, delays and
// reorders datagrams, and can change the source port it uses toward the server mid-flight,
// as a NAT that rebinds does.
type impairProxy struct {
	t       *testing.T
	front   *net.UDPConn // the client sends here
	server  *net.UDPAddr
	loss    float64       // probability of dropping a datagram, each way
	delay   time.Duration // added one-way delay
	jitter  time.Duration // extra random delay, which reorders datagrams
	dropped atomic.Int64
	passed  atomic.Int64

	mu     sync.Mutex
	back   *net.UDPConn // toward the server; replaced by rebind
	client *net.UDPAddr
	closed bool
	wg     sync.WaitGroup
	rng    *rand.Rand
}

func newImpairProxy(t *testing.T, server string, loss float64, delay, jitter time.Duration) *impairProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	p := &impairProxy{t: t, front: front, server: sa, loss: loss, delay: delay, jitter: jitter, rng: rand.New(rand.NewPCG(1, 2))}
	p.rebind()
	p.wg.Add(1)
	go p.fromClient()
	t.Cleanup(p.close)
	return p
}

func (p *impairProxy) addr() string { return p.front.LocalAddr().String() }

// rebind moves the server-facing side to a new source port; the old one is closed, so
// datagrams the server still sends there are lost, as with a NAT that forgot the mapping.
func (p *impairProxy) rebind() {
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	old := p.back
	p.back = back
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	p.wg.Add(1)
	go p.fromServer(back)
}

func (p *impairProxy) close() {
	p.mu.Lock()
	p.closed = true
	back := p.back
	p.mu.Unlock()
	_ = p.front.Close()
	_ = back.Close()
	p.wg.Wait()
}

// impair decides a datagram's fate: dropped, or sent after a delay.
func (p *impairProxy) impair(b []byte, send func([]byte)) {
	p.mu.Lock()
	drop := p.rng.Float64() < p.loss
	d := p.delay
	if p.jitter > 0 {
		d += time.Duration(p.rng.Int64N(int64(p.jitter)))
	}
	p.mu.Unlock()
	if drop {
		p.dropped.Add(1)
		return
	}
	p.passed.Add(1)
	pkt := append([]byte(nil), b...)
	p.wg.Add(1)
	time.AfterFunc(d, func() {
		defer p.wg.Done()
		send(pkt)
	})
}

func (p *impairProxy) fromClient() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.client = from
		p.mu.Unlock()
		p.impair(buf[:n], func(b []byte) {
			p.mu.Lock()
			back, closed := p.back, p.closed
			p.mu.Unlock()
			if !closed {
				_, _ = back.WriteToUDP(b, p.server)
			}
		})
	}
}

func (p *impairProxy) fromServer(back *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := back.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.impair(buf[:n], func(b []byte) {
			p.mu.Lock()
			client, closed := p.client, p.closed
			p.mu.Unlock()
			if !closed && client != nil {
				_, _ = p.front.WriteToUDP(b, client)
			}
		})
	}
}

// setLoss changes the probability of dropping a datagram, each way: 1 makes the path a
// black hole, as a server host that died or a link that stopped carrying packets.
func (p *impairProxy) setLoss(loss float64) {
	p.mu.Lock()
	p.loss = loss
	p.mu.Unlock()
}

// clientAddr is the address the client's packets last came from.
func (p *impairProxy) clientAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return ""
	}
	return p.client.String()
}
