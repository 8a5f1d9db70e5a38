package quicmux

import (
	"context"
	"crypto/tls"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/quicgate/quicgate/third_party/quic-go/qlog"
	"github.com/quicgate/quicgate/third_party/quic-go/qlogwriter"
)

// mtuTrace records the path MTU that quic-go's DPLPMTUD settles on.
type mtuTrace struct {
	mu   sync.Mutex
	max  int
	done bool
}

func (t *mtuTrace) AddProducer() qlogwriter.Recorder { return t }
func (t *mtuTrace) Close() error                     { return nil }
func (t *mtuTrace) RecordEvent(e qlogwriter.Event) {
	if u, ok := e.(qlog.MTUUpdated); ok {
		t.mu.Lock()
		t.max = max(t.max, u.Value)
		t.done = t.done || u.Done
		t.mu.Unlock()
	}
}

// TestPacketsGrowPastEthernetSizeOnLoopback guards the patch in third_party/quic-go: on
// loopback (MTU 65536) path MTU discovery must reach well past upstream's 1452-byte
// ceiling, since that is most of the -L throughput (docs/performance.md).
func TestPacketsGrowPastEthernetSizeOnLoopback(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	limits := Limits{}.withDefaults(true)
	udp, err := listenUDP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{id.Cert}, NextProtos: []string{"t"}}, limits.quicConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	received := make(chan int64, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			received <- -1
			return
		}
		s, err := c.AcceptStream(ctx)
		if err != nil {
			received <- -1
			return
		}
		n, _ := io.Copy(io.Discard, s)
		received <- n
	}()

	trace := &mtuTrace{}
	conf := Limits{}.withDefaults(false).quicConfig(false)
	conf.Tracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return trace }
	c, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	const total = 32 << 20
	for sent := 0; sent < total; sent += len(buf) {
		if _, err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if n := <-received; n != total {
		t.Fatalf("server received %d bytes, want %d", n, total)
	}
	trace.mu.Lock()
	defer trace.mu.Unlock()
	if trace.max < 8000 {
		t.Fatalf("path MTU discovery reached %d bytes on loopback (done %v); want well past 1452: is third_party/quic-go's packet-size patch in place?", trace.max, trace.done)
	}
	t.Logf("path MTU on loopback: %d bytes (done %v)", trace.max, trace.done)
}
