package tun

import "errors"

var (
	// ErrPermission: the process may not create TUN devices or change routes. The error
	// that wraps it names the missing privilege, CAP_NET_ADMIN.
	ErrPermission = errors.New("tun: permission denied")
	// ErrConfig: the configuration is not valid.
	ErrConfig = errors.New("tun: bad configuration")
	// ErrBusy: something Open needs is in use by another process: a TUN device of that
	// name, or the routing table (Config.Table) in this network namespace. The error that
	// wraps it names which.
	ErrBusy = errors.New("tun: busy")
)
