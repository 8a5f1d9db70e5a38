//go:build !linux

package flow

// setUserTimeout does nothing where TCP_USER_TIMEOUT is missing: keepalive alone then bounds
// an idle flow, and retransmissions one with bytes in flight.
func setUserTimeout(fd, ms int) error { return nil }
