package logging

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

// A logger given is returned as it is; nil becomes one that writes nowhere, a new one each
// time.
func TestOrDiscard(t *testing.T) {
	given := logrus.NewEntry(logrus.New())
	if OrDiscard(given) != given {
		t.Fatal("OrDiscard replaced a logger it was given")
	}
	a, b := OrDiscard(nil), OrDiscard(nil)
	if a == nil || a.Logger == b.Logger {
		t.Fatalf("OrDiscard(nil) = %p and %p, want two distinct loggers", a, b)
	}
	if a.Logger.Out != io.Discard {
		t.Fatalf("OrDiscard(nil) writes to %T, want io.Discard", a.Logger.Out)
	}
}
