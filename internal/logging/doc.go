// Package logging holds quicgate's one logger convention: a library takes a *logrus.Entry
// (its Config's Logger, an Options' Logger), and a nil one discards. OrDiscard is that rule,
// written once, for every package that takes a logger.
package logging
