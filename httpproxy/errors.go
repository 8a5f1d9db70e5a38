package httpproxy

import "errors"

// The errors every failure of this package wraps, so that callers can tell them apart with
// errors.Is; the messages around them say which proxy, which target and what it answered.
var (
	// ErrAuth: the proxy answered 407 Proxy Authentication Required, to a request that
	// carried no credentials or to one whose credentials it did not accept.
	ErrAuth = errors.New("proxy needs authentication")

	// ErrRefused: the proxy answered with a status neither 2xx nor 407 (403 Forbidden,
	// 502 Bad Gateway, ...), answered something that is not HTTP, or closed the connection
	// without answering.
	ErrRefused = errors.New("proxy refused the connection")

	// ErrUnreachable: the proxy itself could not be reached: the TCP dial or, for an
	// https:// proxy, the TLS handshake failed, or the context ended before the proxy
	// answered (the error then also wraps the context's error).
	ErrUnreachable = errors.New("proxy unreachable")

	// ErrBadURL: a proxy URL (a --proxy value or an environment variable) cannot be used.
	ErrBadURL = errors.New("bad proxy URL")
)
