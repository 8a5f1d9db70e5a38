package bench

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/quicgate/quicgate/flow"
)

// Relay is the plain TCP relay of the "Go TCP relay" row: for each target a loopback
// listener whose connections are dialed on to the target and handed to flow.Relay, the
// relay every quicgate flow runs through (userspace buffers both ways, half-close). It does
// the TCP work every -L design must do, an accept and a dial a flow, and nothing else: no
// encryption, no multiplexing, no second process. So what it reaches on this machine bounds
// what any Go -L tunnel can reach on the same work.
type Relay struct {
	lns    []net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ListenRelay starts one listener on ip for each target (ports chosen by the system).
func ListenRelay(ip string, targets []string) (*Relay, error) {
	r := &Relay{}
	r.ctx, r.cancel = context.WithCancel(context.Background())
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

// Close stops the listeners, resets the open flows and waits for every goroutine.
func (r *Relay) Close() {
	for _, ln := range r.lns {
		_ = ln.Close()
	}
	r.cancel()
	r.wg.Wait()
}

func (r *Relay) serve(ln net.Listener, target string) {
	defer r.wg.Done()
	var d net.Dialer
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
			dst, err := d.DialContext(r.ctx, "tcp", target)
			if err != nil {
				_ = c.Close()
				return
			}
			_, _ = flow.Relay(r.ctx, flow.AsConn(c), flow.AsConn(dst))
		}()
	}
}
