package looptest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay forwards one client's datagrams to a server and back until Blackhole, after which
// it drops everything both ways: the path is gone without a packet to say so.
type Relay struct {
	front, back *net.UDPConn
	blackhole   atomic.Bool
	client      atomic.Pointer[net.UDPAddr]
}

// NewRelay starts a relay on loopback to server (host:port), for a client to dial at Addr;
// it stops at the test's cleanup.
func NewRelay(t testing.TB, server string) *Relay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	saddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		_ = front.Close()
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, saddr)
	if err != nil {
		_ = front.Close()
		t.Fatal(err)
	}
	r := &Relay{front: front, back: back}
	var wg sync.WaitGroup
	wg.Go(r.toServer)
	wg.Go(r.toClient)
	t.Cleanup(func() {
		_ = front.Close()
		_ = back.Close()
		wg.Wait()
	})
	return r
}

// Addr is where the client sends its datagrams.
func (r *Relay) Addr() string { return r.front.LocalAddr().String() }

// Blackhole drops every datagram from now on.
func (r *Relay) Blackhole() { r.blackhole.Store(true) }

func (r *Relay) toServer() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r.client.Store(from)
		if !r.blackhole.Load() {
			_, _ = r.back.Write(buf[:n])
		}
	}
}

func (r *Relay) toClient() {
	buf := make([]byte, 65536)
	for {
		n, err := r.back.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP port unreachable and the like
		}
		if to := r.client.Load(); to != nil && !r.blackhole.Load() {
			_, _ = r.front.WriteToUDP(buf[:n], to)
		}
	}
}
