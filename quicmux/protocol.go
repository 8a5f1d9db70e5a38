package quicmux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/quicgate/quicgate/flow"
)

// ALPN is the TLS application protocol every quicgate connection negotiates.
const ALPN = "quicgate/1"

// protocolVersion is the first byte of every request and response.
const protocolVersion = 1

// MaxHeaderLen bounds a request header: version, length and the body it announces.
// The longest valid body is kind, address type, a 255-byte name with its length and a port.
const MaxHeaderLen = 3 + maxBodyLen

const maxBodyLen = 1 + 1 + 1 + 255 + 2

// MinTCPHeaderLen is the smallest header bound that still lets every address target
// through: an IPv6 request is 23 bytes.
const MinTCPHeaderLen = 3 + 1 + 1 + 16 + 2

// Kind says what a stream carries.
type Kind uint8

const (
	// KindPing asks the server for an ok status and nothing else; the client uses it to prove
	// that the server accepted its identity before it reports itself connected.
	KindPing Kind = 0
	// KindTCP carries one TCP flow.
	KindTCP Kind = 1
	// KindListen asks the server to listen on an address of its own for a reverse forward;
	// the stream stays open as long as the listener does.
	KindListen Kind = 2
	// KindAccepted opens a stream the server starts (the only kind it does): one connection
	// its listener accepted, for the client to carry to its local target.
	KindAccepted Kind = 3
	// KindUDP carries one UDP flow: its packets travel as QUIC datagrams, and on the stream
	// when too large for one (udpflow.go).
	KindUDP Kind = 4
	// KindResolve asks the server to look a name up as it would for a flow to it: its target
	// is a domain name and carries no port. After an ok status the server sends the
	// addresses a flow to that name could reach on some port under its policy
	// (AppendAddrs), then ends the stream (resolve.go).
	KindResolve Kind = 5
	// KindEcho asks the server to send one ICMP echo (ICMPv6 for an IPv6 address) to an
	// address and say whether it was answered: its target is an IP address and carries no
	// port. The echo's payload follows the header (AppendEchoPayload); after an ok status
	// the server sends the round-trip time, then ends the stream (echo.go).
	KindEcho Kind = 6
)

func (k Kind) String() string {
	switch k {
	case KindPing:
		return "ping"
	case KindTCP:
		return "tcp"
	case KindListen:
		return "listen"
	case KindAccepted:
		return "accepted"
	case KindUDP:
		return "udp"
	case KindResolve:
		return "resolve"
	case KindEcho:
		return "echo"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Address types, numbered as in SOCKS5.
const (
	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// Request is the header at the start of each stream: written by the client, or by the
// server for KindAccepted.
type Request struct {
	Kind Kind
	// Target is where a TCP flow goes, the server's address a listen asks for (an IP
	// address, not a name), or the address a listener accepted a connection from; unset
	// for KindPing.
	Target flow.Target
	// Listener is, for KindAccepted, the stream ID of the listen request whose listener
	// accepted the connection.
	Listener uint64
}

// AppendRequest appends the encoding of r to b.
//
//	version(1) | length(2, big endian, of what follows) | kind(1) | [listener(8)] | atyp(1) | addr | port(2)
//
// addr is 4 bytes (IPv4), 16 bytes (IPv6), or a length byte and that many bytes (domain,
// for KindTCP, KindUDP and KindResolve). A ping carries kind only; listener is there for
// KindAccepted only; a resolve has a domain and no port (its Target.Port is 0), an echo an
// IP address and no port.
func AppendRequest(b []byte, r Request) ([]byte, error) {
	start := len(b)
	b = append(b, protocolVersion, 0, 0, byte(r.Kind))
	switch r.Kind {
	case KindPing:
	case KindResolve:
		if r.Target.Addr.IsValid() || r.Target.Port != 0 {
			return b[:start], fmt.Errorf("%w: a resolve takes a name and no port: %q", ErrBadTarget, r.Target.String())
		}
		if err := flow.CheckHostname(r.Target.Host); err != nil {
			return b[:start], err
		}
		b = append(b, atypDomain, byte(len(r.Target.Host)))
		b = append(b, r.Target.Host...)
	case KindEcho:
		if !r.Target.Addr.IsValid() || r.Target.Addr.Zone() != "" || r.Target.Port != 0 {
			return b[:start], fmt.Errorf("%w: an echo takes an IP address and no port: %q", ErrBadTarget, r.Target.String())
		}
		b = appendAddr(b, r.Target.Addr)
	case KindTCP, KindListen, KindAccepted, KindUDP:
		t := r.Target
		if !t.IsValid() || (r.Kind == KindListen || r.Kind == KindAccepted) && !t.Addr.IsValid() {
			return b[:start], fmt.Errorf("%w: %q", ErrBadTarget, t.String())
		}
		if r.Kind == KindAccepted {
			b = binary.BigEndian.AppendUint64(b, r.Listener)
		}
		switch {
		case t.Addr.IsValid():
			b = appendAddr(b, t.Addr)
		default:
			if err := flow.CheckHostname(t.Host); err != nil {
				return b[:start], err
			}
			b = append(b, atypDomain, byte(len(t.Host)))
			b = append(b, t.Host...)
		}
		b = binary.BigEndian.AppendUint16(b, t.Port)
	default:
		return b[:start], fmt.Errorf("%w: unknown kind %d", ErrBadRequest, r.Kind)
	}
	binary.BigEndian.PutUint16(b[start+1:], uint16(len(b)-start-3))
	return b, nil
}

// ReadRequest reads one request header from r. It never reads past the header, so payload
// the client sent right behind it stays in r. Errors wrap ErrBadRequest for malformed input.
func ReadRequest(r io.Reader) (Request, error) {
	return ReadRequestLimit(r, MaxHeaderLen)
}

// ReadRequestLimit is ReadRequest with a smaller bound on the header's size (a server
// setting); a header announcing more is a bad request.
func ReadRequestLimit(r io.Reader, limit int) (Request, error) {
	var pre [3]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Request{}, truncated(err)
	}
	if pre[0] != protocolVersion {
		return Request{}, fmt.Errorf("%w: version %d", ErrBadRequest, pre[0])
	}
	n := int(binary.BigEndian.Uint16(pre[1:]))
	if n == 0 || n > maxBodyLen || 3+n > limit {
		return Request{}, fmt.Errorf("%w: header length %d", ErrBadRequest, 3+n)
	}
	var buf [maxBodyLen]byte
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return Request{}, truncated(err)
	}
	return parseRequestBody(body)
}

func parseRequestBody(body []byte) (Request, error) {
	req := Request{Kind: Kind(body[0])}
	rest := body[1:]
	switch req.Kind {
	case KindPing:
		if len(rest) != 0 {
			return Request{}, fmt.Errorf("%w: ping with %d trailing bytes", ErrBadRequest, len(rest))
		}
		return req, nil
	case KindResolve:
		if len(rest) < 2 || rest[0] != atypDomain || int(rest[1])+2 != len(rest) {
			return Request{}, fmt.Errorf("%w: a resolve wants a domain name and nothing after it", ErrBadRequest)
		}
		host := string(rest[2:])
		if err := flow.CheckHostname(host); err != nil {
			return Request{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		req.Target.Host = strings.ToLower(host)
		return req, nil
	case KindEcho:
		switch {
		case len(rest) == 1+4 && rest[0] == atypIPv4:
			req.Target.Addr = netip.AddrFrom4([4]byte(rest[1:]))
		case len(rest) == 1+16 && rest[0] == atypIPv6:
			req.Target.Addr = netip.AddrFrom16([16]byte(rest[1:])).Unmap()
		default:
			return Request{}, fmt.Errorf("%w: an echo wants an IP address and nothing after it", ErrBadRequest)
		}
		return req, nil
	case KindTCP, KindListen, KindUDP:
	case KindAccepted:
		if len(rest) < 8 {
			return Request{}, fmt.Errorf("%w: no listener", ErrBadRequest)
		}
		req.Listener, rest = binary.BigEndian.Uint64(rest), rest[8:]
	default:
		return Request{}, fmt.Errorf("%w: unknown kind %d", ErrBadRequest, body[0])
	}
	if len(rest) < 1 {
		return Request{}, fmt.Errorf("%w: no address", ErrBadRequest)
	}
	atyp, rest := rest[0], rest[1:]
	var t flow.Target
	switch atyp {
	case atypIPv4:
		if len(rest) != 4+2 {
			return Request{}, fmt.Errorf("%w: IPv4 address of %d bytes", ErrBadRequest, len(rest)-2)
		}
		t.Addr = netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
	case atypIPv6:
		if len(rest) != 16+2 {
			return Request{}, fmt.Errorf("%w: IPv6 address of %d bytes", ErrBadRequest, len(rest)-2)
		}
		t.Addr = netip.AddrFrom16([16]byte(rest[:16])).Unmap()
		rest = rest[16:]
	case atypDomain:
		if req.Kind != KindTCP && req.Kind != KindUDP {
			return Request{}, fmt.Errorf("%w: a %s request with a host name", ErrBadRequest, req.Kind)
		}
		if len(rest) < 1 || int(rest[0])+1+2 != len(rest) {
			return Request{}, fmt.Errorf("%w: domain length does not match header", ErrBadRequest)
		}
		host := string(rest[1 : 1+int(rest[0])])
		if err := flow.CheckHostname(host); err != nil {
			return Request{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		t.Host = strings.ToLower(host)
		rest = rest[1+int(rest[0]):]
	default:
		return Request{}, fmt.Errorf("%w: address type %d", ErrBadRequest, atyp)
	}
	t.Port = binary.BigEndian.Uint16(rest)
	if t.Port == 0 {
		return Request{}, fmt.Errorf("%w: port 0", ErrBadRequest)
	}
	req.Target = t
	return req, nil
}

// appendAddr appends an IP address as atyp(1) | addr(4 or 16).
func appendAddr(b []byte, a netip.Addr) []byte {
	if a = a.Unmap(); a.Is4() {
		v := a.As4()
		return append(append(b, atypIPv4), v[:]...)
	}
	v := a.As16()
	return append(append(b, atypIPv6), v[:]...)
}

func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: truncated header", ErrBadRequest)
	}
	return err
}

// Status is the server's answer to a request, sent before any payload.
type Status uint8

const (
	StatusOK          Status = 0
	StatusRefused     Status = 1 // the destination refused the connection
	StatusUnreachable Status = 2 // no route to the destination, or its name did not resolve
	StatusDenied      Status = 3 // the server's policy does not allow the destination
	StatusTimedOut    Status = 4 // the destination did not answer within the dial timeout
	StatusBadRequest  Status = 5 // the header was malformed
	// StatusShuttingDown: the server is draining and takes no new flows; the client
	// reconnects (to the restarted server) for the next ones.
	StatusShuttingDown Status = 6
	// StatusInUse: a listen's address is taken on the server (by another client's reverse
	// forward, or any other program).
	StatusInUse Status = 7
	// StatusTooManyFlows: the client identity has as many streams open as the server allows
	// it (ServerConfig.MaxFlowsPerClient); the stream was not read.
	StatusTooManyFlows Status = 8
)

var statusNames = [...]string{"ok", "refused", "unreachable", "denied", "timed out", "bad request", "shutting down", "in use", "too many flows"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// AppendStatus appends the two-byte response: version(1) | status(1).
func AppendStatus(b []byte, s Status) []byte {
	return append(b, protocolVersion, byte(s))
}

// ReadStatus reads the server's response. A non-ok status is returned as a *StatusError.
func ReadStatus(r io.Reader) error {
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: stream ended before the status", ErrProtocol)
		}
		return err
	}
	if b[0] != protocolVersion {
		return fmt.Errorf("%w: response version %d", ErrProtocol, b[0])
	}
	if s := Status(b[1]); s != StatusOK {
		if int(s) >= len(statusNames) {
			return fmt.Errorf("%w: unknown status %d", ErrProtocol, s)
		}
		return &StatusError{Status: s}
	}
	return nil
}
