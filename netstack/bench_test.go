package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quicgate/quicgate/netstack/memtun"
)

const benchChunk = 64 << 10

// sinkHandler accepts every flow; "up" flows are read to EOF, "down" flows get bytes
// written until the peer goes away. It reports the bytes moved on done.
func sinkHandler(down bool, done chan<- int64) Handler {
	return HandlerFunc(func(r *TCPRequest) {
		c, err := r.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		if !down {
			n, _ := io.Copy(io.Discard, c)
			done <- n
			return
		}
		buf := make([]byte, benchChunk)
		var n int64
		for {
			m, err := c.Write(buf)
			n += int64(m)
			if err != nil {
				done <- n
				return
			}
		}
	})
}

// runFlow moves b.N chunks over one flow through dial and reports Gbit/s.
func runFlow(b *testing.B, down bool, done chan int64, dial func(context.Context) (net.Conn, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	total := int64(b.N) * benchChunk
	if down {
		for got := int64(0); got < total; {
			n, err := c.Read(buf)
			got += int64(n)
			if err != nil {
				b.Fatal(err)
			}
		}
	} else {
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		if n := <-done; n != total {
			b.Fatalf("sink got %d bytes, want %d", n, total)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total)*8/elapsed.Seconds()/1e9, "Gbit/s")
	if down {
		c.Close()
		<-done
	}
}

// BenchmarkPipelineThroughput measures one flow over the CreateNetTUN pipeline: an app
// on wireguard's netstack (one packet per Read) through our batched NewTUN stack into a
// Handler.
func BenchmarkPipelineThroughput(b *testing.B) {
	for _, mtu := range []int{1500, 9000, 65535} {
		for _, down := range []bool{false, true} {
			b.Run(fmt.Sprintf("mtu=%d/%s", mtu, dirName(down)), func(b *testing.B) {
				done := make(chan int64, 1)
				app, _ := newPipeline(b, mtu, sinkHandler(down, done))
				runFlow(b, down, done, func(ctx context.Context) (net.Conn, error) {
					return app.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("10.99.0.5:80"))
				})
			})
		}
	}
}

// BenchmarkMemPipeThroughput measures one flow between two of our stacks over a memtun
// pipe with batches of 128 both ways: the link cost without wireguard's one-packet Read.
func BenchmarkMemPipeThroughput(b *testing.B) {
	for _, mtu := range []int{1500, 9000, 65535} {
		for _, down := range []bool{false, true} {
			b.Run(fmt.Sprintf("mtu=%d/%s", mtu, dirName(down)), func(b *testing.B) {
				done := make(chan int64, 1)
				x, y := memtun.Pipe(mtu, 128, 1024)
				app, err := NewTUN(x, Config{Addrs: virtAddrs})
				if err != nil {
					b.Fatal(err)
				}
				defer app.Close()
				gw, err := NewTUN(y, Config{Handler: sinkHandler(down, done)})
				if err != nil {
					b.Fatal(err)
				}
				defer gw.Close()
				runFlow(b, down, done, func(ctx context.Context) (net.Conn, error) {
					return app.DialTCP(ctx, netip.MustParseAddrPort("10.99.0.5:80"))
				})
			})
		}
	}
}

func dirName(down bool) string {
	if down {
		return "down"
	}
	return "up"
}
