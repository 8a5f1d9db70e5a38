package quicmux

import (
	"testing"
	"time"
)

// The limiter lets a burst through, then one line a period, and the first line after it
// held some back says how many.
func TestLineLimit(t *testing.T) {
	var l lineLimit
	now := time.Unix(1000, 0)
	for i := range lineBurst {
		if ok, held := l.allowAt(now); !ok || held != 0 {
			t.Fatalf("line %d of the burst: %v, %d held", i, ok, held)
		}
	}
	for range 5 {
		if ok, _ := l.allowAt(now); ok {
			t.Fatal("a line past the burst went through at once")
		}
	}
	if ok, held := l.allowAt(now.Add(lineEvery)); !ok || held != 5 {
		t.Fatalf("after a period: %v, %d held; want a line saying 5", ok, held)
	}
	if ok, _ := l.allowAt(now.Add(lineEvery)); ok {
		t.Fatal("two lines in one period")
	}
}
