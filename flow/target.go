package flow

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrBadTarget: a target could not be parsed, or names no valid destination.
var ErrBadTarget = errors.New("flow: bad target")

// Target is where a flow goes: an IP address or a domain name, and a port.
// Exactly one of Addr and Host is set.
type Target struct {
	Addr netip.Addr
	Host string
	Port uint16
}

// TargetFromAddrPort returns the target for an IP address and port.
func TargetFromAddrPort(ap netip.AddrPort) Target {
	return Target{Addr: ap.Addr().Unmap(), Port: ap.Port()}
}

// ParseTarget parses "host:port", where host is an IPv4 address, a bracketed IPv6 address
// or a domain name.
func ParseTarget(s string) (Target, error) {
	host, portStr, err := splitHostPort(s)
	if err != nil {
		return Target{}, err
	}
	port, err := ParsePort(portStr)
	if err != nil {
		return Target{}, err
	}
	if port == 0 {
		return Target{}, fmt.Errorf("%w: port 0 in %q", ErrBadTarget, s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return Target{}, fmt.Errorf("%w: zoned address %q", ErrBadTarget, s)
		}
		return Target{Addr: a.Unmap(), Port: port}, nil
	}
	if err := CheckHostname(host); err != nil {
		return Target{}, err
	}
	return Target{Host: strings.ToLower(host), Port: port}, nil
}

// String returns the target as "host:port", bracketing IPv6 addresses.
func (t Target) String() string {
	if t.Addr.IsValid() {
		return netip.AddrPortFrom(t.Addr, t.Port).String()
	}
	return t.Host + ":" + strconv.Itoa(int(t.Port))
}

// IsValid reports whether t names a destination.
func (t Target) IsValid() bool {
	return t.Port != 0 && (t.Addr.IsValid() != (t.Host != ""))
}

// CheckHostname accepts names made of LDH labels (plus underscore) of 1 to 63 bytes,
// 253 bytes at most.
func CheckHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%w: host name of %d bytes", ErrBadTarget, len(h))
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: host name %q", ErrBadTarget, h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: host name %q", ErrBadTarget, h)
			}
		}
	}
	return nil
}

// splitHostPort splits "host:port" and "[v6]:port".
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || len(s) < end+2 || s[end+1] != ':' {
			return "", "", fmt.Errorf("%w: %q", ErrBadTarget, s)
		}
		return s[1:end], s[end+2:], nil
	}
	i := strings.LastIndex(s, ":")
	if i < 0 || strings.Contains(s[:i], ":") {
		return "", "", fmt.Errorf("%w: %q wants host:port (IPv6 in brackets)", ErrBadTarget, s)
	}
	return s[:i], s[i+1:], nil
}

// ParsePort parses a port number, 0 to 65535, in decimal with no sign.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || s == "" || s[0] == '+' {
		return 0, fmt.Errorf("%w: port %q", ErrBadTarget, s)
	}
	return uint16(n), nil
}
