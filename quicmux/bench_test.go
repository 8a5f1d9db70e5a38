package quicmux

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
)

func BenchmarkAppendRequest(b *testing.B) {
	req := Request{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("fd00:99::5"), Port: 443}}
	buf := make([]byte, 0, MaxHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendRequest(buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadRequest(b *testing.B) {
	hdr, _ := AppendRequest(nil, Request{Kind: KindTCP, Target: flow.Target{Host: "db.internal.example", Port: 5432}})
	r := bytes.NewReader(hdr)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(hdr)
		if _, err := ReadRequest(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamOpen: one flow per op through DialContext — stream open, header, the
// server's dial and status — then close.
func BenchmarkStreamOpen(b *testing.B) {
	tn := newTunnel(b)
	dst := destination(b, echo)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := tn.client.DialContext(ctx, "tcp", dst)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// BenchmarkRelayThroughput: bulk bytes from a TCP app through -L, the tunnel and the
// server's relay to a TCP sink.
func BenchmarkRelayThroughput(b *testing.B) {
	b.Run("quic", func(b *testing.B) { benchRelayThroughput(b) })
	b.Run("tcp", func(b *testing.B) { benchRelayThroughput(b, withTCPTransport()) })
}

func benchRelayThroughput(b *testing.B, opts ...tunnelOption) {
	tn := newTunnel(b, opts...)
	dst := destination(b, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	c, err := net.Dial("tcp", tn.forward(dst))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*float64(len(buf))*8/time.Since(start).Seconds()/1e9, "Gbit/s")
	tn.client.mu.Lock()
	conn := tn.client.state.conn
	tn.client.mu.Unlock()
	if conn != nil {
		st := conn.ConnectionStats()
		b.ReportMetric(float64(st.PacketsLost)/float64(max(st.PacketsSent, 1))*100, "%lost")
	}
}
