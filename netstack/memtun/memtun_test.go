package memtun

import (
	"errors"
	"os"
	"testing"
)

func TestPipe(t *testing.T) {
	a, b := Pipe(1500, 4, 2)
	if a.BatchSize() != 4 {
		t.Fatalf("BatchSize = %d", a.BatchSize())
	}
	const off = 10
	pkt := func(s string) []byte { return append(make([]byte, off), s...) }
	if n, err := a.Write([][]byte{pkt("one"), pkt("two")}, off); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 3)
	n, err := b.Read(bufs, sizes, off)
	if err != nil || n != 2 || string(bufs[1][off:off+sizes[1]]) != "two" {
		t.Fatalf("Read = %d, %v, %q", n, err, bufs[1][off:off+sizes[1]])
	}

	// A writer blocked on a full queue wakes up when its device closes.
	a.Write([][]byte{pkt("1"), pkt("2")}, off)
	done := make(chan error)
	go func() { _, err := a.Write([][]byte{pkt("3")}, off); done <- err }()
	a.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("blocked Write after Close: %v", err)
	}
	// The peer's Read returns what was queued; its Close ends a blocked Read.
	if n, _ := b.Read(bufs, sizes, off); n != 2 {
		t.Fatalf("Read = %d, want the 2 queued packets", n)
	}
	go func() { _, err := b.Read(bufs, sizes, off); done <- err }()
	b.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("blocked Read after Close: %v", err)
	}
	if _, ok := <-b.Events(); ok {
		if _, ok := <-b.Events(); ok {
			t.Fatal("Events not closed")
		}
	}
}
