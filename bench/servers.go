package bench

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
)

// Destinations are the two servers every path leads to: a sink that reads until EOF and
// answers with the count of bytes it got (8 bytes, big endian), and an echo.
type Destinations struct {
	Sink, Echo net.Listener
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      map[net.Conn]struct{}
}

// Listen starts both servers on ip (port chosen by the system).
func Listen(ip string) (*Destinations, error) {
	return ListenWith(ip, serveSink, ServeEcho)
}

// ListenWith starts a sink and an echo with handlers of the caller's (a benchmark whose sink
// speaks another protocol), each connection in a goroutine of its own, closed after its
// handler returns and by Close.
func ListenWith(ip string, sinkHandler, echoHandler func(net.Conn)) (*Destinations, error) {
	sink, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	echo, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		_ = sink.Close()
		return nil, err
	}
	d := &Destinations{Sink: sink, Echo: echo, conns: map[net.Conn]struct{}{}}
	d.wg.Add(2)
	go d.serve(sink, sinkHandler)
	go d.serve(echo, echoHandler)
	return d, nil
}

func (d *Destinations) serve(ln net.Listener, handle func(net.Conn)) {
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
func (d *Destinations) Close() {
	_ = d.Sink.Close()
	_ = d.Echo.Close()
	d.mu.Lock()
	for c := range d.conns {
		_ = c.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

func serveSink(c net.Conn) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			var out [8]byte
			binary.BigEndian.PutUint64(out[:], uint64(n))
			_, _ = c.Write(out[:])
			return
		}
		if err != nil {
			return
		}
	}
}

// ServeEcho writes back what it reads until the connection ends.
func ServeEcho(c net.Conn) {
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
