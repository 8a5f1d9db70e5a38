package httpproxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Parse reads a --proxy value. "none" and "" give (nil, nil): no proxy.
// "http://[user:pass@]host[:port]" (port 80 by default) names a plain HTTP proxy and
// "https://[user:pass@]host[:port]" (port 443 by default) one reached over TLS, verified with
// the system roots against host. A value without a scheme, "host:port", is taken as
// http://host:port. Any other scheme (socks5://, ...) and anything unparsable is ErrBadURL.
//
// The URL returned always has a port in its Host; its path, query and fragment are empty.
// User and password are percent-decoded by net/url: a password holding '@', ':' or '/'
// must be written %40, %3A, %2F.
func Parse(s string) (*url.URL, error) {
	return parse(s, "")
}

// parse is Parse, with source ("HTTPS_PROXY: ", or "" for a --proxy value) put in front of
// the detail of an error.
func parse(s, source string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "none") {
		return nil, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, badURL(source, parseDetail(s))
	}
	var port string
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, badURL(source, fmt.Sprintf("scheme %q is not supported (want http:// or https://)", u.Scheme))
	}
	if u.Hostname() == "" {
		return nil, badURL(source, "no proxy host in "+u.Redacted())
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, badURL(source, "a proxy URL has no path, query or fragment: "+u.Redacted())
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, badURL(source, fmt.Sprintf("bad port %q in %s", p, u.Redacted()))
		}
		port = p
	}
	u.Host = net.JoinHostPort(u.Hostname(), port)
	u.Path, u.RawPath = "", ""
	return u, nil
}

// parseDetail says why url.Parse rejected s without quoting the password: url.Error holds
// the whole input, and even its inner error can quote a piece of the user info (an invalid
// %-escape), so the detail comes from parsing s again with the user info left out.
func parseDetail(s string) string {
	scheme, rest, _ := strings.Cut(s, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		if _, err := url.Parse(scheme + "://" + rest[at+1:]); err == nil {
			return "malformed user info (write user:pass with %-escapes for reserved characters)"
		}
		rest = rest[at+1:]
	}
	_, err := url.Parse(scheme + "://" + rest)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if err == nil { // cannot happen: s did not parse, and neither does s without its user info
		return "malformed URL"
	}
	return err.Error()
}

func badURL(source, detail string) error {
	return fmt.Errorf("httpproxy: %w: %s%s", ErrBadURL, source, detail)
}

// Redacted returns u as text with its password, if any, replaced by "xxxxx", for logs and
// messages; "" for a nil u.
func Redacted(u *url.URL) string {
	return u.Redacted()
}
