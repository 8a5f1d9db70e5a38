// Package quicmuxtest is the in-process tunnel rig for tests: a quicmux server on loopback
// and a client connected to it, with fresh identities that trust each other and loggers to
// t.Log, started from whatever configuration a test gives and closed at its cleanup
// (Start), optionally through a relay between them (Via, with looptest.Relay).
//
// The loopback ends a test puts around the tunnel (destinations, closed ports, a reset
// check, dialer and resolver functions) are in package looptest, which imports no quicmux:
// package quicmux's own tests, which cannot import this package, keep a rig of their own
// (quicmux/harness_test.go, which reaches into the server's config) and share looptest.
package quicmuxtest
