package quicmux

import (
	"sync"
	"time"
)

// Failure is one failed flow or connection, as `quicgate status` lists it.
type Failure struct {
	Time time.Time `json:"time"`
	// Ingress is where the flow came in (see Flow.Ingress; the server's flows: quic), or
	// "connection" for the client's failed connection to the server.
	Ingress string `json:"ingress"`
	// Peer is the flow's app (client) or the client's fingerprint (server); Target is
	// where the flow went, or the server for a connection.
	Peer   string `json:"peer,omitempty"`
	Target string `json:"target"`
	Reason string `json:"reason"`
	// Count is how many failures in a row had this ingress, target and reason; Time and
	// Peer are the last one's.
	Count int `json:"count"`
}

// recentFailures is how many failures a failureLog keeps.
const recentFailures = 20

// failureLog keeps the last recentFailures failures in a ring.
type failureLog struct {
	mu   sync.Mutex
	ring [recentFailures]Failure
	n    int // failures ever added
}

// add records f, folded into the newest entry when that one failed the same way: a client
// retrying a refused target, or a server it cannot reach, fills one line, not the list.
func (l *failureLog) add(f Failure) {
	if f.Time.IsZero() {
		f.Time = time.Now()
	}
	f.Count = 1
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		last := &l.ring[(l.n-1)%recentFailures]
		if last.Ingress == f.Ingress && last.Target == f.Target && last.Reason == f.Reason {
			last.Time, last.Peer = f.Time, f.Peer
			last.Count++
			return
		}
	}
	l.ring[l.n%recentFailures] = f
	l.n++
}

// list returns the kept failures, newest first.
func (l *failureLog) list() []Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(l.n, recentFailures)
	out := make([]Failure, 0, k)
	for i := 1; i <= k; i++ {
		out = append(out, l.ring[(l.n-i)%recentFailures])
	}
	return out
}
