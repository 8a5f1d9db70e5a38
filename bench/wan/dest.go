package wan

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// reportEvery is how often the metering sink tells the sender how much it has received.
const reportEvery = 50 * time.Millisecond

// Dests are the servers every row's flows end at (in the server namespace): a metering sink
// and an echo.
//
// The sink reads and counts, and every reportEvery writes back a 16-byte report: the wall
// clock in nanoseconds and the bytes received so far (both big endian). The sender computes
// goodput from the last report it got before its deadline, over the window from its own
// dial, without waiting for the path to drain (sender and sink run on one host, so their
// wall clocks agree). The echo writes back what it reads.
type Dests struct {
	Sink, Echo net.Listener
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]struct{}
}

// ListenDests starts both servers on ip, ports chosen by the system.
func ListenDests(ip string) (*Dests, error) {
	sink, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	echo, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		_ = sink.Close()
		return nil, err
	}
	d := &Dests{Sink: sink, Echo: echo, conns: map[net.Conn]struct{}{}}
	d.wg.Add(2)
	go d.serve(sink, serveMeter)
	go d.serve(echo, serveEcho)
	return d, nil
}

func (d *Dests) serve(ln net.Listener, handle func(net.Conn)) {
	defer d.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		d.conns[c] = struct{}{}
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			handle(c)
			d.mu.Lock()
			delete(d.conns, c)
			d.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// Close stops both servers and closes their connections.
func (d *Dests) Close() {
	_ = d.Sink.Close()
	_ = d.Echo.Close()
	d.mu.Lock()
	for c := range d.conns {
		_ = c.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

func serveMeter(c net.Conn) {
	var n atomic.Int64
	done := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		t := time.NewTicker(reportEvery)
		defer t.Stop()
		var rep [16]byte
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				binary.BigEndian.PutUint64(rep[:8], uint64(time.Now().UnixNano()))
				binary.BigEndian.PutUint64(rep[8:], uint64(n.Load()))
				_ = c.SetWriteDeadline(now.Add(10 * time.Second))
				if _, err := c.Write(rep[:]); err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, 256<<10)
	for {
		k, err := c.Read(buf)
		n.Add(int64(k))
		if err != nil {
			break
		}
	}
	close(done)
	<-reported
}

func serveEcho(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if _, werr := c.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
