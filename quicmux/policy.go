package quicmux

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/quicgate/quicgate/flow"
)

// ErrBadRule: an --allow rule could not be parsed.
var ErrBadRule = errors.New("quicmux: bad allow rule")

// Policy decides which destinations a server may dial. For a domain target the server asks
// about the name first; if the name is not allowed as such, it resolves the name and dials
// only the resolved addresses the policy allows (so a name cannot smuggle in an address).
// Allow is asked about TCP flows; a Policy that is also a ProtoPolicy is asked about each
// protocol, and one that is not allows UDP where it allows TCP.
type Policy interface {
	Allow(t flow.Target) bool
}

// ProtoPolicy is a Policy that tells TCP flows from UDP flows. Rules is one.
type ProtoPolicy interface {
	Policy
	AllowProto(p Proto, t flow.Target) bool
}

// AnyPortPolicy is a Policy that can say whether it allows a destination on some port, for
// either protocol: what the server asks before it answers a resolve request (KindResolve)
// with an address, so that a name's addresses are told only to clients that could reach
// them. A server whose Policy is not one denies every resolve. Rules is one.
type AnyPortPolicy interface {
	Policy
	// AllowAnyPort reports whether a flow of either protocol to t (an address or a name;
	// its Port is ignored) is allowed on at least one port.
	AllowAnyPort(t flow.Target) bool
}

// Proto is the transport protocol of a flow, or of a rule (ProtoAny: both).
type Proto uint8

const (
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "any"
}

// allows reports whether policy allows a flow of protocol p to t.
func allows(policy Policy, p Proto, t flow.Target) bool {
	if pp, ok := policy.(ProtoPolicy); ok {
		return pp.AllowProto(p, t)
	}
	return policy.Allow(t)
}

// Rule allows a destination prefix or host name on a range of ports, for TCP, UDP or both.
type Rule struct {
	Prefix netip.Prefix // set for address rules
	Host   string       // set for name rules: "example.com", or "*.example.com" for its subdomains
	PortLo uint16
	PortHi uint16
	Proto  Proto // ProtoAny: TCP and UDP
}

// Rules allows a target when any rule does.
type Rules []Rule

var (
	_ ProtoPolicy   = Rules(nil)
	_ AnyPortPolicy = Rules(nil)
)

// Allow reports whether a rule matches t for TCP.
func (rs Rules) Allow(t flow.Target) bool { return rs.AllowProto(ProtoTCP, t) }

// AllowProto reports whether a rule matches t for protocol p.
func (rs Rules) AllowProto(p Proto, t flow.Target) bool {
	for _, r := range rs {
		if (r.Proto == ProtoAny || r.Proto == p) && r.Allow(t) {
			return true
		}
	}
	return false
}

// AllowAnyPort reports whether a rule matches t on some port, for TCP or UDP.
func (rs Rules) AllowAnyPort(t flow.Target) bool {
	for _, r := range rs {
		t.Port = r.PortLo
		if r.Allow(t) {
			return true
		}
	}
	return false
}

// Allow reports whether r matches t, whatever its protocol.
func (r Rule) Allow(t flow.Target) bool {
	if t.Port < r.PortLo || t.Port > r.PortHi {
		return false
	}
	if r.Prefix.IsValid() {
		return t.Addr.IsValid() && r.Prefix.Contains(t.Addr.Unmap())
	}
	if t.Host == "" {
		return false
	}
	h := strings.TrimSuffix(t.Host, ".")
	if suffix, ok := strings.CutPrefix(r.Host, "*."); ok {
		return strings.HasSuffix(h, "."+suffix)
	}
	return h == r.Host
}

// String gives the rule back in the form ParseRule reads.
func (r Rule) String() string {
	var s string
	if r.Proto != ProtoAny {
		s = r.Proto.String() + ":"
	}
	if r.Prefix.IsValid() {
		s += r.Prefix.String()
	} else {
		s += r.Host
	}
	switch {
	case r.PortLo == 1 && r.PortHi == 65535:
		return s
	case r.PortLo == r.PortHi:
		return s + ":" + strconv.Itoa(int(r.PortLo))
	}
	return s + ":" + strconv.Itoa(int(r.PortLo)) + "-" + strconv.Itoa(int(r.PortHi))
}

// ParseRules parses each rule; the error names the first bad one.
func ParseRules(specs []string) (Rules, error) {
	rs := make(Rules, 0, len(specs))
	for _, s := range specs {
		r, err := ParseRule(s)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// ParseRule parses one --allow rule:
//
//	CIDR            10.0.0.0/8, fd00::/64 (all ports)
//	CIDR:PORT       10.0.0.0/8:443, fd00::/64:443
//	CIDR:LOW-HIGH   127.0.0.1/32:8000-8999
//	ADDR[:PORTS]    127.0.0.1, 127.0.0.1:80, [::1]:80 (a single address)
//	NAME[:PORTS]    example.com, *.example.com:443
//
// A rule allows TCP and UDP flows; a "tcp:" or "udp:" in front allows only that protocol
// (udp:10.0.0.53:53).
func ParseRule(s string) (Rule, error) {
	whole := s
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("%w %q: %s", ErrBadRule, whole, why)
	}
	proto := ProtoAny
	if rest, ok := strings.CutPrefix(s, "tcp:"); ok {
		proto, s = ProtoTCP, rest
	} else if rest, ok := strings.CutPrefix(s, "udp:"); ok {
		proto, s = ProtoUDP, rest
	}
	addrPart, portPart, hasPorts := s, "", false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("missing ]")
		}
		addrPart = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return bad("expected :PORT after ]")
			}
			portPart, hasPorts = rest[1:], true
		}
	case strings.Contains(s, "/"):
		slash := strings.Index(s, "/")
		bits, ports, ok := strings.Cut(s[slash+1:], ":")
		addrPart, portPart, hasPorts = s[:slash+1]+bits, ports, ok
	default:
		if _, err := netip.ParseAddr(s); err == nil {
			break // a bare IPv6 address has colons but no port
		}
		if i := strings.LastIndex(s, ":"); i >= 0 {
			addrPart, portPart, hasPorts = s[:i], s[i+1:], true
		}
	}
	r := Rule{PortLo: 1, PortHi: 65535, Proto: proto}
	if hasPorts {
		lo, hi, err := parsePortRange(portPart)
		if err != nil {
			return bad(err.Error())
		}
		r.PortLo, r.PortHi = lo, hi
	}
	switch {
	case strings.Contains(addrPart, "/"):
		p, err := netip.ParsePrefix(addrPart)
		if err != nil {
			return bad("not a CIDR prefix")
		}
		if p.Masked() != p {
			return bad("host bits set; did you mean " + p.Masked().String() + "?")
		}
		r.Prefix = p
	default:
		if a, err := netip.ParseAddr(addrPart); err == nil {
			if a.Zone() != "" {
				return bad("zoned addresses are not allowed")
			}
			a = a.Unmap()
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
			break
		}
		name := strings.ToLower(strings.TrimSuffix(addrPart, "."))
		check := strings.TrimPrefix(name, "*.")
		if _, err := netip.ParseAddr(check); err == nil {
			return bad("an address with a trailing dot")
		}
		if strings.Contains(check, "*") || strings.HasSuffix(check, ".") || flow.CheckHostname(check) != nil {
			return bad("not an address, a CIDR prefix or a host name")
		}
		r.Host = name
	}
	return r, nil
}

// ParseListenRule parses where a reverse forward may have the server listen (--allow-listen,
// permitlisten=): an address rule as ParseRule reads it (ADDR[:PORTS], CIDR[:PORTS]);
// "localhost" is 127.0.0.1. Listening on all interfaces (a bind address of 0.0.0.0 or ::)
// takes a rule that contains that address: 0.0.0.0:8080, or 0.0.0.0/0:8080.
func ParseListenRule(s string) (Rule, error) {
	if rest, ok := strings.CutPrefix(strings.ToLower(s), "localhost"); ok && (rest == "" || rest[0] == ':') {
		s = "127.0.0.1" + rest
	}
	r, err := ParseRule(s)
	if err != nil {
		return Rule{}, err
	}
	if !r.Prefix.IsValid() {
		return Rule{}, fmt.Errorf("%w %q: a listen rule takes an IP address or a CIDR prefix, not a name", ErrBadRule, s)
	}
	if r.Proto != ProtoAny {
		return Rule{}, fmt.Errorf("%w %q: a listen rule is for TCP only; it takes no protocol", ErrBadRule, s)
	}
	return r, nil
}

// ParseListenRules parses each listen rule; the error names the first bad one.
func ParseListenRules(specs []string) (Rules, error) {
	rs := make(Rules, 0, len(specs))
	for _, s := range specs {
		r, err := ParseListenRule(s)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func parsePortRange(s string) (lo, hi uint16, err error) {
	loS, hiS, isRange := strings.Cut(s, "-")
	if lo, err = flow.ParsePort(loS); err != nil || lo == 0 {
		return 0, 0, fmt.Errorf("port %q is not 1-65535", loS)
	}
	hi = lo
	if isRange {
		if hi, err = flow.ParsePort(hiS); err != nil || hi == 0 {
			return 0, 0, fmt.Errorf("port %q is not 1-65535", hiS)
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("port range %s runs backwards", s)
		}
	}
	return lo, hi, nil
}
