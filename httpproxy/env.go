package httpproxy

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// proxyVars are the variables FromEnvironment reads, in order: every quicgate flow is
// TLS-like (opaque bytes in a CONNECT tunnel), so the HTTPS proxy is the one that applies,
// and ALL_PROXY is the fallback curl also honours.
var proxyVars = [...]string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"}

// FromEnvironment returns the proxy the environment names for reaching target
// ("host:port"): the value of the first non-empty of HTTPS_PROXY, https_proxy, ALL_PROXY and
// all_proxy, read as Parse reads it, unless the first non-empty of NO_PROXY and no_proxy
// matches target. It returns (nil, nil) when no variable names a proxy, when the one that
// does says "none", or when NO_PROXY matches. A malformed value is ErrBadURL naming the
// variable, whatever NO_PROXY says.
//
// NO_PROXY is a comma-separated list; an entry matches when:
//   - it is "*" (every target);
//   - it is a domain and the target's host is that domain or ends with "." and it, a leading
//     "." or "*." being ignored (as curl does): "example.com" and ".example.com" both match
//     example.com and www.example.com;
//   - it is an IP address equal to the target's host, or a CIDR prefix holding it;
//   - and, if the entry carries a port ("example.com:443", "[::1]:8080"), the target's port
//     is that port.
//
// getenv reads one variable: os.Getenv in production, a map lookup in tests.
func FromEnvironment(target string, getenv func(string) string) (*url.URL, error) {
	var name, value string
	for _, v := range proxyVars {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			name, value = v, s
			break
		}
	}
	if name == "" {
		return nil, nil
	}
	u, err := parse(value, name+": ")
	if err != nil || u == nil {
		return nil, err
	}
	noProxy := getenv("NO_PROXY")
	if strings.TrimSpace(noProxy) == "" {
		noProxy = getenv("no_proxy")
	}
	if noProxyMatches(noProxy, target) {
		return nil, nil
	}
	return u, nil
}

// noProxyMatches reports whether the NO_PROXY list list matches target ("host:port", or a
// bare host, which then matches only entries without a port).
func noProxyMatches(list, target string) bool {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		host, port = target, ""
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	hostIP, hostErr := netip.ParseAddr(host)
	isIP := hostErr == nil
	hostIP = hostIP.Unmap()

	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.ToLower(strings.TrimSpace(entry))
		if entry == "" {
			continue
		}
		if entry == "*" {
			return true
		}
		// An entry's port: "host:port" or "[v6]:port". A bare IPv6 address or prefix
		// ("::1", "fe80::/10") has colons but no port, so SplitHostPort rejects it.
		if h, p, err := net.SplitHostPort(entry); err == nil {
			if p != port {
				continue
			}
			entry = h
		}
		entry = strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]")
		if prefix, err := netip.ParsePrefix(entry); err == nil {
			if isIP && prefix.Masked().Contains(hostIP) {
				return true
			}
			continue
		}
		if ip, err := netip.ParseAddr(entry); err == nil {
			if isIP && ip.Unmap() == hostIP {
				return true
			}
			continue
		}
		if isIP {
			continue
		}
		entry = strings.TrimPrefix(entry, "*")
		entry = strings.TrimSuffix(strings.TrimPrefix(entry, "."), ".")
		if entry != "" && (host == entry || strings.HasSuffix(host, "."+entry)) {
			return true
		}
	}
	return false
}
