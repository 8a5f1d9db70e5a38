// Package looptest holds the loopback ends that tests of a tunnel need and that need no
// tunnel themselves: a destination TCP server (Destination, with Echo), a port nothing
// listens on (ClosedPort), a check that a connection ends in a reset (ExpectReset), a UDP
// relay that can lose every packet from one moment on (Relay), and functions as a dialer
// or resolver (DialerFunc, ResolverFunc).
//
// It imports no quicgate package but flow, so that package quicmux's own tests, which
// cannot import internal/quicmuxtest (it imports quicmux), use it as well as every other
// package's tests. Every helper owns what it opens and closes it at the test's cleanup.
package looptest
