// Package httpproxy reaches a TCP address through an HTTP CONNECT proxy, for quicgate's
// client on a network where UDP is blocked and only an HTTP proxy lets traffic out. It owns:
//
//   - which proxy to use (url.go, env.go): Parse reads a --proxy value ("none", "http://",
//     "https://", or a bare host:port), FromEnvironment reads HTTPS_PROXY and ALL_PROXY and
//     honours NO_PROXY, and Redacted prints a proxy URL for logs without its password;
//   - the CONNECT exchange (dial.go): Dialer.DialContext connects to the proxy (over TLS for
//     an https:// proxy), asks it for a tunnel, with Basic authentication when the URL
//     carries user info, and hands back the tunnel as a net.Conn;
//   - how it fails (errors.go): ErrAuth, ErrRefused, ErrUnreachable and ErrBadURL, which
//     every error it returns wraps, each with a one-line message that never shows the
//     proxy password.
//
// It imports only the standard library and nothing of quicgate, so the client decides what
// a failure means (retry, report, exit).
package httpproxy
