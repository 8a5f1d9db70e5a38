package quicmux

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// lineLimit rate-limits a log line that a client can make the server repeat (a refused
// request, an allowed name that resolves only to guarded addresses): lineBurst lines at
// once, then one every lineEvery; it counts the lines it held back, for the next line that
// goes through to say (the field "suppressed"). The metrics count every event; the log
// says what kind of thing happens, not each time it does.
type lineLimit struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	held   int
}

const (
	lineBurst = 20
	lineEvery = 100 * time.Millisecond // 10 lines a second once the burst is spent
)

// allow reports whether a line may be logged now, and how many were held back since the
// last one that was.
func (l *lineLimit) allow() (ok bool, held int) { return l.allowAt(time.Now()) }

func (l *lineLimit) allowAt(now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = lineBurst
	} else {
		l.tokens = min(lineBurst, l.tokens+float64(now.Sub(l.last))/float64(lineEvery))
	}
	l.last = now
	if l.tokens < 1 {
		l.held++
		return false, 0
	}
	l.tokens--
	held, l.held = l.held, 0
	return true, held
}

// withHeld adds to a line's fields how many like it were held back before it.
func withHeld(f logrus.Fields, held int) logrus.Fields {
	if held > 0 {
		f["suppressed"] = held
	}
	return f
}
