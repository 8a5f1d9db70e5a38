package netstack

import (
	"context"
	"go/parser"
	"go/token"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInFlightBounds checks that SYNs beyond MaxInFlight (global) or
// MaxInFlightPerSource are dropped, not reset: the dial times out instead of being
// refused, and the drop is counted.
func TestInFlightBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		dropped func(Stats) uint64
	}{
		{"global", Config{MaxInFlight: 1}, func(s Stats) uint64 { return s.DroppedInFlight }},
		{"per-source", Config{MaxInFlightPerSource: 1}, func(s Stats) uint64 { return s.DroppedPerSource }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			held := make(chan struct{}, 1)
			tc.cfg.Handler = HandlerFunc(func(r *TCPRequest) {
				if r.Dst().Port() == 1 {
					held <- struct{}{}
					select {
					case <-release:
					case <-r.Context().Done():
					}
				}
				r.Reject()
			})
			app, s := newPipelineConfig(t, 1500, tc.cfg)
			first := make(chan error, 1)
			go func() {
				_, err := app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort("10.99.0.5:1"))
				first <- err
			}()
			<-held

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dialed := make(chan error, 1)
			go func() {
				_, err := app.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("10.99.0.5:2"))
				dialed <- err
			}()
			// The stack counts the SYN beyond the bound as it drops it...
			waitFor(t, func() bool { return tc.dropped(s.Stats()) > 0 }, "the SYN beyond the bound counted as dropped")
			// ...and answers it with nothing. A reset would reach the dial within a round
			// trip of this in-memory path; it gets 300 ms more before the dial is given up
			// (a slow machine can only hide a wrong reset here, never fail a right drop).
			timer := time.AfterFunc(300*time.Millisecond, cancel)
			defer timer.Stop()
			if err := <-dialed; err == nil || strings.Contains(err.Error(), "refused") {
				t.Fatalf("dial beyond the bound: %v, want it left unanswered", err)
			}
			close(release)
			// The held request is rejected once released; its slot is free by the time the
			// handler returns, which may come just after the refusal (then the next SYN is
			// dropped once more and its retransmission handled).
			if err := <-first; err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("held dial after release: %v, want refused", err)
			}
			// With the slot free, the client's retransmitted SYN (or a new one) is handled.
			_, err := app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort("10.99.0.5:3"))
			if err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("dial after release: %v, want refused", err)
			}
			if st := s.Stats(); st.Rejected < 2 {
				t.Errorf("Rejected = %d, want >= 2", st.Rejected)
			}
		})
	}
}

// TestNoQuicmuxImport keeps netstack free of the tunnel core.
func TestNoQuicmuxImport(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	more, _ := filepath.Glob("*/*.go")
	for _, f := range append(files, more...) {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(p, "quicmux") {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
