package ingress

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// SOCKS5 (RFC 1928) and its username/password authentication (RFC 1929): CONNECT, and UDP
// ASSOCIATE (socksudp.go).
const (
	socksVersion = 5

	socksNoAuth       = 0x00
	socksUserPass     = 0x02
	socksNoAcceptable = 0xff

	socksUserPassVersion = 1

	socksConnect      = 1
	socksBind         = 2
	socksUDPAssociate = 3

	socksAtypIPv4   = 1
	socksAtypDomain = 3
	socksAtypIPv6   = 4
)

// SOCKS5 reply codes (RFC 1928, section 6).
const (
	socksSucceeded           = 0x00
	socksGeneralFailure      = 0x01
	socksNotAllowed          = 0x02
	socksNetworkUnreachable  = 0x03
	socksHostUnreachable     = 0x04
	socksConnectionRefused   = 0x05
	socksTTLExpired          = 0x06
	socksCommandNotSupported = 0x07
	socksAtypNotSupported    = 0x08
)

// socksReplyCode maps why a flow failed to its SOCKS5 reply: the server's status where it
// answered one, and for a flow that never reached it "network unreachable" (the tunnel is
// the network) or a general failure.
func socksReplyCode(err error) byte {
	switch {
	case errors.Is(err, quicmux.ErrRefused):
		return socksConnectionRefused
	case errors.Is(err, quicmux.ErrDenied):
		return socksNotAllowed
	case errors.Is(err, quicmux.ErrUnreachable):
		return socksHostUnreachable
	case errors.Is(err, quicmux.ErrTimedOut):
		return socksTTLExpired
	case errors.Is(err, quicmux.ErrServerUnreachable):
		return socksNetworkUnreachable
	}
	return socksGeneralFailure // shutting down, a drain, a bad request, a lost connection
}

// socksReply is a reply with BND.ADDR and BND.PORT from addr (zero when it is not an IP
// address and port).
func socksReply(code byte, addr net.Addr) []byte {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	a := ap.Addr().Unmap()
	b := []byte{socksVersion, code, 0}
	if a.Is6() {
		b = append(b, socksAtypIPv6)
	} else {
		b = append(b, socksAtypIPv4)
		if !a.Is4() {
			a = netip.IPv4Unspecified()
		}
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// socksError is a handshake that failed after the reply code was sent.
func socksError(w io.Writer, code byte, format string, a ...any) error {
	_, _ = w.Write(socksReply(code, nil))
	return fmt.Errorf("socks5: "+format+" (replied 0x%02x)", append(a, code)...)
}

// readSOCKS reads a SOCKS5 greeting, the authentication it chose and the request, and
// answers all but the request's outcome: that reply waits for the server (proxyRequest's
// accept and reject). A failure is answered where SOCKS5 has a way to say it.
func readSOCKS(br *bufio.Reader, w io.Writer, users map[string]string) (*proxyRequest, error) {
	var hdr [2]byte // VER, NMETHODS
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("socks5: greeting: %w", err)
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return nil, fmt.Errorf("socks5: greeting: %w", err)
	}
	method := byte(socksNoAuth)
	if users != nil {
		method = socksUserPass
	}
	if !bytes.Contains(methods, []byte{method}) {
		_, _ = w.Write([]byte{socksVersion, socksNoAcceptable})
		if users != nil {
			return nil, fmt.Errorf("socks5: the client offers no username/password authentication (methods % x): %w", methods, errProxyAuth)
		}
		return nil, fmt.Errorf("socks5: the client offers no method without authentication (methods % x)", methods)
	}
	if _, err := w.Write([]byte{socksVersion, method}); err != nil {
		return nil, err
	}
	if users != nil {
		if err := socksAuthenticate(br, w, users); err != nil {
			return nil, err
		}
	}

	var req [4]byte // VER, CMD, RSV, ATYP
	if _, err := io.ReadFull(br, req[:]); err != nil {
		return nil, fmt.Errorf("socks5: request: %w", err)
	}
	if req[0] != socksVersion {
		return nil, socksError(w, socksGeneralFailure, "request version %d", req[0])
	}
	var host string
	switch req[3] {
	case socksAtypIPv4, socksAtypIPv6:
		b := make([]byte, 4)
		if req[3] == socksAtypIPv6 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("socks5: request: %w", err)
		}
		a, _ := netip.AddrFromSlice(b)
		host = a.String()
	case socksAtypDomain:
		n, err := br.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("socks5: request: %w", err)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("socks5: request: %w", err)
		}
		host = string(b)
	default:
		return nil, socksError(w, socksAtypNotSupported, "address type %d", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(br, port[:]); err != nil {
		return nil, fmt.Errorf("socks5: request: %w", err)
	}
	switch req[1] {
	case socksConnect:
	case socksUDPAssociate:
		// DST names where the client will send from, which may be zero: the association
		// takes the control connection's host instead (socksudp.go).
		return &proxyRequest{proto: "socks5 udp", associate: true}, nil
	case socksBind:
		return nil, socksError(w, socksCommandNotSupported, "BIND is not supported")
	default:
		return nil, socksError(w, socksCommandNotSupported, "command %d", req[1])
	}
	// A domain stays a name, for the server to resolve; one that is an address literal is
	// taken as the address.
	t, err := flow.ParseTarget(net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))))
	if err != nil {
		return nil, socksError(w, socksHostUnreachable, "target: %v", err)
	}
	return &proxyRequest{
		proto:  "socks5",
		target: t,
		accept: func(w io.Writer, local net.Addr) error {
			_, err := w.Write(socksReply(socksSucceeded, local))
			return err
		},
		reject: func(w io.Writer, err error) { _, _ = w.Write(socksReply(socksReplyCode(err), nil)) },
	}, nil
}

// socksAuthenticate runs RFC 1929's subnegotiation: VER(1) ULEN UNAME PLEN PASSWD, answered
// with VER(1) and 0 for success.
func socksAuthenticate(br *bufio.Reader, w io.Writer, users map[string]string) error {
	ver, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("socks5: authentication: %w", err)
	}
	if ver != socksUserPassVersion {
		_, _ = w.Write([]byte{socksUserPassVersion, 1})
		return fmt.Errorf("socks5: authentication version %d", ver)
	}
	field := func() (string, error) {
		n, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return string(b), err
	}
	user, err := field()
	if err != nil {
		return fmt.Errorf("socks5: authentication: %w", err)
	}
	pass, err := field()
	if err != nil {
		return fmt.Errorf("socks5: authentication: %w", err)
	}
	if !checkUser(users, user, pass) {
		_, _ = w.Write([]byte{socksUserPassVersion, 1})
		return fmt.Errorf("socks5: %w", errProxyAuth) // not the user: a mistyped password may be in it
	}
	_, err = w.Write([]byte{socksUserPassVersion, 0})
	return err
}
