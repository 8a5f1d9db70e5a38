package bench

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Relay is the plain TCP relay of the "Go TCP relay" row: for each target a loopback
// listener whose connections are dialed on to the target and copied both ways, through a
// userspace buffer (no splice: a tunnel must see its bytes), with half-close. It does the
// TCP work every -L design must do, an accept and a dial a flow, and nothing else: no
// encryption, no multiplexing, no second process. So what it reaches on this machine bounds
// what any Go -L tunnel can reach on the same work.
type Relay struct {
	lns   []net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ListenRelay starts one listener on ip for each target (ports chosen by the system).
func ListenRelay(ip string, targets []string) (*Relay, error) {
	r := &Relay{conns: map[net.Conn]struct{}{}}
	for _, t := range targets {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			r.Close()
			return nil, err
		}
		r.lns = append(r.lns, ln)
		r.wg.Add(1)
		go r.serve(ln, t)
	}
	return r, nil
}

// Addrs are the listeners' addresses, in the order of the targets.
func (r *Relay) Addrs() []string {
	var out []string
	for _, ln := range r.lns {
		out = append(out, ln.Addr().String())
	}
	return out
}

// Close stops the listeners, closes the open connections and waits for every goroutine.
func (r *Relay) Close() {
	for _, ln := range r.lns {
		_ = ln.Close()
	}
	r.mu.Lock()
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) track(c net.Conn, add bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

func (r *Relay) serve(ln net.Listener, target string) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors, say: do not spin
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.track(c, true)
			defer r.track(c, false)
			defer c.Close()
			d, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			r.track(d, true)
			defer r.track(d, false)
			defer d.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				copyClose(d.(*net.TCPConn), c)
			}()
			copyClose(c.(*net.TCPConn), d)
			<-done
		}()
	}
}

// Hiding ReadFrom and WriteTo keeps io.CopyBuffer from splicing socket to socket.
type (
	onlyWriter struct{ io.Writer }
	onlyReader struct{ io.Reader }
)

var relayBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyClose copies src to dst through a pooled 64 KiB buffer and then shuts dst's send side.
func copyClose(dst *net.TCPConn, src net.Conn) {
	buf := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(buf)
	_, _ = io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *buf)
	_ = dst.CloseWrite()
}
