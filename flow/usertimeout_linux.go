package flow

import "golang.org/x/sys/unix"

// setUserTimeout sets TCP_USER_TIMEOUT (milliseconds).
func setUserTimeout(fd, ms int) error {
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
}
