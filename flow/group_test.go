package flow

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// A Group drains: new flows are refused, open ones run until they end or the drain
// times out, and those still open then see their context end with ErrDrained.
func TestGroupDrain(t *testing.T) {
	g := NewGroup(context.Background())
	if !g.Start() || !g.Start() {
		t.Fatal("Start refused before the drain")
	}
	// One flow ends on its own while the group drains; the other outlives the drain.
	ended, firstDone := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); <-ended; g.Done(); close(firstDone) }()
	reset := make(chan error, 1)
	go func() { defer wg.Done(); <-g.Context().Done(); reset <- context.Cause(g.Context()); g.Done() }()

	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- g.Drain(ctx) }()
	for g.Start() {
		g.Done() // the drain has not begun yet; it refuses new flows once it has
	}
	close(ended)
	<-firstDone
	if n := g.Open(); n != 1 {
		t.Fatalf("%d flows open, want 1", n)
	}
	select {
	case err := <-reset:
		t.Fatalf("a flow was reset (%v) before the drain timed out", err)
	default:
	}
	cancel()
	if err := <-drained; !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain = %v, want the drain context's error", err)
	}
	if err := <-reset; !errors.Is(err, ErrDrained) {
		t.Fatalf("flow reset with %v, want ErrDrained", err)
	}
	wg.Wait()
	if n := g.Open(); n != 0 {
		t.Fatalf("%d flows open after the drain", n)
	}
	// A group whose flows all end drains without resetting anyone.
	g2 := NewGroup(context.Background())
	g2.Start()
	g2.Done()
	if err := g2.Drain(ctx); err != nil {
		t.Fatalf("Drain of an empty group with a done context = %v, want nil", err)
	}
}
