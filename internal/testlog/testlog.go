// Package testlog gives tests a logger whose lines go to t.Log, so that they show only for a
// failing test (or with -v).
package testlog

import (
	"testing"

	"github.com/sirupsen/logrus"
)

// New returns an info-level logger writing to t.Log.
func New(t testing.TB) *logrus.Entry {
	lg := logrus.New()
	lg.SetOutput(writer{t})
	lg.SetLevel(logrus.InfoLevel)
	return logrus.NewEntry(lg)
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
