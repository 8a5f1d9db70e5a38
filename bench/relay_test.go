package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// The relay carries both ways and turns a client's half-close into the target's EOF: the sink
// counts every byte and answers after the FIN; the echo returns what it got.
func TestRelayCarriesAndHalfCloses(t *testing.T) {
	d, err := Listen("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := ListenRelay("127.0.0.1", []string{d.Sink.Addr().String(), d.Echo.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addrs := r.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs() = %v, want 2", addrs)
	}
	dial := dialTCP(map[Dest]string{ToSink: addrs[0], ToEcho: addrs[1]})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// 3 MiB to the sink, then CloseWrite: the count comes back only if the FIN went through.
	c, err := dial(ctx, ToSink)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	const size = 3 << 20
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var n [8]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatalf("reading the sink's count: %v", err)
	}
	if got := binary.BigEndian.Uint64(n[:]); got != size {
		t.Errorf("sink counted %d bytes, want %d", got, size)
	}
	_ = c.Close()

	// The echo, byte for byte, in both directions at once.
	e, err := dial(ctx, ToEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_ = e.SetDeadline(time.Now().Add(15 * time.Second))
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	go func() { _, _ = e.Write(want); _ = e.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("echo through the relay returned %d bytes, not the %d sent", len(got), len(want))
	}
}

// A relay whose target refuses ends the client's connection rather than leaving it open.
func TestRelayTargetRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	r, err := ListenRelay("127.0.0.1", []string{dead})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through a relay whose target is down", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the relay kept the connection open although its target refused")
	}
}
