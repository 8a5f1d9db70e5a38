//go:build !unix

package quic

// quicgate patch: see sys_conn_unreachable.go; elsewhere every send error but EMSGSIZE still
// closes the connection, as upstream does.
func isNetworkSendErr(error) bool { return false }
