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
			go app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort("10.99.0.5:1"))
			<-held

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := app.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("10.99.0.5:2"))
			if err == nil || strings.Contains(err.Error(), "refused") {
				t.Fatalf("dial beyond the bound: %v, want a timeout", err)
			}
			if n := tc.dropped(s.Stats()); n == 0 {
				t.Errorf("drop not counted: %+v", s.Stats())
			}
			close(release)
			// With the slot free, the client's retransmitted SYN (or a new one) is handled.
			_, err = app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort("10.99.0.5:3"))
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
