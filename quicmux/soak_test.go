package quicmux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

var (
	soakFlows    = flag.Int("soak.flows", 10000, "concurrent flows the soak test holds open")
	soakDuration = flag.Duration("soak.duration", 10*time.Second, "how long the soak test churns flows")
)

// halfPipe is an in-memory connection pair whose ends can half-close (CloseWrite), as TCP
// can; net.Pipe cannot.
func halfPipe() (*memConn, *memConn) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	return &memConn{r: ar, w: aw}, &memConn{r: br, w: bw}
}

type memConn struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *memConn) CloseWrite() error                { return c.w.Close() }
func (c *memConn) Close() error                     { _ = c.w.Close(); return c.r.Close() }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// memEcho echoes until EOF, then half-closes, then closes.
func memEcho(c *memConn) {
	defer c.Close()
	if _, err := io.Copy(c, c); err == nil {
		_ = c.CloseWrite()
	}
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// The soak test holds 10,000 flows open on one connection while others open, move data and
// close continuously; then everything closes and nothing may be left behind: goroutines,
// file descriptors and heap return to near their start, and no byte was lost.
// Longer: go test ./quicmux -run Soak -soak.duration 10m
func TestSoak(t *testing.T) {
	flows := *soakFlows
	if raceEnabled || testing.Short() {
		flows = min(flows, 500)
	}
	baseGoroutines, baseFDs, baseHeap := runtime.NumGoroutine(), openFDs(t), heapInUse()

	// The held flows end at in-memory echoes (this machine allows 20,000 descriptors, and
	// 10,000 TCP destinations would take two each); the churned flows go through real
	// sockets at both ends.
	const memTarget = "127.0.0.77:7"
	t.Run("load", func(t *testing.T) {
		tn := newTunnel(t,
			withClientConfig(func(c *ClientConfig) { c.DialTimeout = 30 * time.Second }),
			withDialer(dialerFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
				if address == memTarget {
					app, far := halfPipe()
					go memEcho(far)
					return app, nil
				}
				var d net.Dialer
				return d.DialContext(ctx, network, address)
			})),
		)
		dst := destination(t, echo)
		local := tn.forward(dst)

		// 1. Hold flows open, each proven with an echo.
		held := make([]net.Conn, flows)
		var g errgroup.Group
		g.SetLimit(256)
		start := time.Now()
		for i := range held {
			g.Go(func() error {
				c, err := tn.client.DialContext(context.Background(), "tcp", memTarget)
				if err != nil {
					return fmt.Errorf("flow %d: %w", i, err)
				}
				held[i] = c
				return echoOnce(c, fmt.Sprintf("held %d", i))
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d flows open in %v; %d goroutines", flows, time.Since(start).Round(time.Millisecond), runtime.NumGoroutine())

		// 2. Churn: open, move a random amount each way, half-close, check, close.
		var moved, churned atomic.Int64
		ctx, cancel := context.WithTimeout(context.Background(), *soakDuration)
		defer cancel()
		var churn errgroup.Group
		for w := range 16 {
			churn.Go(func() error {
				rng := rand.New(rand.NewPCG(uint64(w), 9))
				for ctx.Err() == nil {
					n, err := churnOne(local, rng)
					if err != nil {
						return err
					}
					moved.Add(n)
					churned.Add(1)
				}
				return nil
			})
		}
		if err := churn.Wait(); err != nil {
			t.Fatal(err)
		}
		t.Logf("churned %d flows, %d bytes each way, beside the held ones", churned.Load(), moved.Load())
		if churned.Load() == 0 {
			t.Fatal("no flow churned")
		}

		// 3. The held flows still work; then close them all.
		for i, c := range held {
			if i%97 == 0 {
				if err := echoOnce(c, "still here"); err != nil {
					t.Fatalf("held flow %d after the churn: %v", i, err)
				}
			}
			_ = c.Close()
		}
	})

	// The load's tunnel, listeners and destinations are closed now: nothing may be left.
	// Goroutines end and memory is freed after the closes return, announced by no event:
	// the counts are polled.
	var g, fds int
	var heap uint64
	settled := poll(func() bool {
		g, fds, heap = runtime.NumGoroutine(), openFDs(t), heapInUse()
		return g <= baseGoroutines+5 && fds <= baseFDs+5 && heap <= baseHeap+64<<20
	})
	report := t.Logf
	if !settled {
		report = t.Errorf
	}
	report("after closing: %d goroutines (start %d), %d fds (start %d), heap %d MiB (start %d MiB)",
		g, baseGoroutines, fds, baseFDs, heap>>20, baseHeap>>20)
}

func echoOnce(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q came back as %q", msg, buf)
	}
	return nil
}

// churnOne runs one short flow through the -L port and checks every byte came back.
func churnOne(local string, rng *rand.Rand) (int64, error) {
	c, err := net.Dial("tcp", local)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, 1+rng.IntN(64<<10))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return 0, werr
	}
	if rerr != nil {
		return 0, rerr
	}
	if !bytes.Equal(sha256Sum(got), sha256Sum(payload)) {
		return 0, fmt.Errorf("echo of %d bytes came back as %d different bytes", len(payload), len(got))
	}
	return int64(len(payload)), nil
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
