package logging

import (
	"io"

	"github.com/sirupsen/logrus"
)

// OrDiscard returns log, or, if it is nil, a logger that writes nowhere. Each discarding
// logger is a new one, so that a caller that changes its level or hooks changes no one
// else's.
func OrDiscard(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	return Discard()
}

// Discard returns a logger that writes nowhere.
func Discard() *logrus.Entry {
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	return logrus.NewEntry(lg)
}
