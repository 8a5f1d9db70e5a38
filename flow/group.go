package flow

import (
	"context"
	"errors"
	"sync"
)

// ErrDrained is the cause of the flows a drain had to reset because they outlived it.
var ErrDrained = errors.New("flow: drain timeout: flow reset")

// Group is a set of open flows and the one way they drain: the server's flows, and each
// ingress's. A flow is counted with Start before it begins and Done when it has ended; it
// runs under Context, which Drain cancels to reset the flows that outlive it.
type Group struct {
	ctx   context.Context
	reset context.CancelCauseFunc

	mu       sync.Mutex
	draining bool
	open     int
	flows    sync.WaitGroup
}

// NewGroup returns an empty group whose flows' context is a child of parent: parent
// ending resets them too.
func NewGroup(parent context.Context) *Group {
	g := &Group{}
	g.ctx, g.reset = context.WithCancelCause(parent)
	return g
}

// Context is the context the group's flows run under.
func (g *Group) Context() context.Context { return g.ctx }

// Start counts a new flow. It reports false once the group drains: the flow must then be
// refused, and Done not called.
func (g *Group) Start() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return false
	}
	g.open++
	g.flows.Add(1)
	return true
}

// Done marks a flow counted by Start as ended.
func (g *Group) Done() {
	g.mu.Lock()
	g.open--
	g.mu.Unlock()
	g.flows.Done()
}

// Open is the number of flows started and not done.
func (g *Group) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// Drain refuses new flows from now on, lets the open ones run until they end or ctx ends,
// then resets those still open (their context ends with ErrDrained) and waits until every
// flow is done. It returns ctx's error if it had to reset a flow. A Drain after the first
// waits again.
func (g *Group) Drain(ctx context.Context) error {
	g.mu.Lock()
	g.draining = true
	open := g.open
	g.mu.Unlock()
	if open == 0 {
		return nil
	}
	done := make(chan struct{})
	go func() { g.flows.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	g.reset(ErrDrained)
	<-done
	return ctx.Err()
}

// Close resets every open flow and waits for them: a Drain that does not wait.
func (g *Group) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = g.Drain(ctx)
}
