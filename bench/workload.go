package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Dest names which destination server a flow goes to.
type Dest int

const (
	ToSink Dest = iota
	ToEcho
)

// DialFunc opens a flow through a path to one of the destinations.
type DialFunc func(ctx context.Context, d Dest) (net.Conn, error)

type closeWriter interface{ CloseWrite() error }

// Bulk runs flows parallel uploads to the sink for dur and returns the goodput the sink
// counted, in bits per second, and the bytes moved.
func Bulk(ctx context.Context, dial DialFunc, flows int, dur time.Duration) (bps float64, moved int64, err error) {
	var total atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(dur)
	for range flows {
		g.Go(func() error {
			c, err := dial(ctx, ToSink)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 256<<10)
			_ = c.SetWriteDeadline(deadline.Add(30 * time.Second))
			for time.Now().Before(deadline) {
				if _, err := c.Write(buf); err != nil {
					return fmt.Errorf("bulk write: %w", err)
				}
			}
			if cw, ok := c.(closeWriter); ok {
				_ = cw.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				return fmt.Errorf("bulk: reading the sink's count: %w", err)
			}
			total.Add(int64(binary.BigEndian.Uint64(n[:])))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	el := time.Since(start).Seconds()
	return float64(total.Load()) * 8 / el, total.Load(), nil
}

// FlowRate opens flows for dur from workers goroutines, each doing one 1-byte request and
// reply, and returns flows per second.
func FlowRate(ctx context.Context, dial DialFunc, workers int, dur time.Duration) (float64, error) {
	var count atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(dur)
	for range workers {
		g.Go(func() error {
			b := []byte{'x'}
			for time.Now().Before(deadline) {
				c, err := dial(ctx, ToEcho)
				if err != nil {
					return err
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(b); err != nil {
					c.Close()
					return err
				}
				if _, err := io.ReadFull(c, b); err != nil {
					c.Close()
					return fmt.Errorf("flow rate: %w", err)
				}
				_ = c.Close()
				count.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// Latency sends 64-byte requests on one established flow to the echo for dur (at most
// 100,000 of them) and returns the p50 and p99 round trip.
func Latency(ctx context.Context, dial DialFunc, dur time.Duration) (p50, p99 time.Duration, err error) {
	c, err := dial(ctx, ToEcho)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	req := make([]byte, 64)
	resp := make([]byte, 64)
	var samples []time.Duration
	deadline := time.Now().Add(dur)
	_ = c.SetDeadline(deadline.Add(10 * time.Second))
	for len(samples) < 100000 && time.Now().Before(deadline) {
		t := time.Now()
		if _, err := c.Write(req); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return 0, 0, err
		}
		samples = append(samples, time.Since(t))
	}
	slices.Sort(samples)
	return samples[len(samples)/2], samples[len(samples)*99/100], nil
}

// Idle opens n flows to the echo, each proven with one round trip, calls measure while they
// are all open, then closes them.
func Idle(ctx context.Context, dial DialFunc, n int, measure func()) error {
	conns := make([]net.Conn, n)
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			c, err := dial(ctx, ToEcho)
			if err != nil {
				return fmt.Errorf("idle flow %d: %w", i, err)
			}
			mu.Lock()
			conns[i] = c
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			b := []byte{'i'}
			if _, err := c.Write(b); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return fmt.Errorf("idle flow %d: %w", i, err)
			}
			_ = c.SetDeadline(time.Time{})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // let the processes settle
	measure()
	return nil
}
