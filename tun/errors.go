package tun

import "errors"

var (
	// ErrPermission: the process may not create TUN devices or change routes. The error
	// that wraps it names the missing privilege, CAP_NET_ADMIN.
	ErrPermission = errors.New("tun: permission denied")
	// ErrConfig: the configuration is not valid.
	ErrConfig = errors.New("tun: bad configuration")
)
