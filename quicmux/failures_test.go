package quicmux

import (
	"fmt"
	"testing"
)

// The failure log keeps the newest recentFailures entries, newest first, and folds a failure
// into the newest entry when it failed the same way.
func TestFailureLog(t *testing.T) {
	var l failureLog
	if got := l.list(); len(got) != 0 {
		t.Fatalf("empty log lists %v", got)
	}
	l.add(Failure{Ingress: "connection", Target: "server:4433", Reason: "timeout"})
	l.add(Failure{Ingress: "connection", Target: "server:4433", Reason: "timeout"})
	l.add(Failure{Ingress: "-L a", Peer: "127.0.0.1:1", Target: "db:5432", Reason: "denied"})
	l.add(Failure{Ingress: "-L a", Peer: "127.0.0.1:2", Target: "db:5432", Reason: "denied"})
	got := l.list()
	if len(got) != 2 || got[0].Count != 2 || got[0].Peer != "127.0.0.1:2" || got[1].Count != 2 || got[1].Ingress != "connection" {
		t.Fatalf("folded log = %+v, want the -L failure (twice, last peer) then the connection's (twice)", got)
	}
	if got[0].Time.Before(got[1].Time) {
		t.Fatalf("newest first: %v before %v", got[0].Time, got[1].Time)
	}
	for i := range 2 * recentFailures {
		l.add(Failure{Ingress: "tun", Target: fmt.Sprintf("10.0.0.%d:80", i), Reason: "refused"})
	}
	got = l.list()
	if len(got) != recentFailures {
		t.Fatalf("kept %d failures, want %d", len(got), recentFailures)
	}
	for i, f := range got {
		if want := fmt.Sprintf("10.0.0.%d:80", 2*recentFailures-1-i); f.Target != want || f.Count != 1 {
			t.Fatalf("entry %d = %+v, want target %s once", i, f, want)
		}
	}
	var m *Metrics // nil metrics record nothing and list nothing
	m.failed(Failure{Reason: "x"})
	if m.RecentFailures() != nil {
		t.Fatal("nil metrics listed failures")
	}
}
