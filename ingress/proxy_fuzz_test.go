package ingress

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzSOCKSRequest feeds arbitrary bytes to the SOCKS5 handshake, with and without
// username/password configured: it never panics; what it writes is the method choice, the
// authentication status and at most one well-formed reply with a known code; a request it
// takes has a valid target, and with users configured only after the right password.
func FuzzSOCKSRequest(f *testing.F) {
	connect := func(tail ...byte) []byte { return append([]byte{5, 1, 0, 5, 1, 0}, tail...) }
	auth := []byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 6, 's', '3', 'c', 'r', 'e', 't'}
	for _, seed := range [][]byte{
		connect(1, 127, 0, 0, 1, 0, 80),
		connect(4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187),
		connect(3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0, 80),
		connect(3, 9, '1', '2', '7', '.', '0', '.', '0', '.', '1', 0, 80),
		connect(3, 0, 0, 80),
		connect(1, 127, 0, 0, 1, 0, 0),
		connect(9, 1, 2, 3, 4, 0, 80),
		{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0},
		{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80},
		{5, 0},
		{5, 2, 0, 2},
		{5, 255},
		{4, 1, 0, 80, 127, 0, 0, 1, 0},
		append(slices.Clone(auth), 5, 1, 0, 1, 10, 0, 0, 1, 0, 22),
		{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 1, 'x'},
		{5, 1, 2, 2, 0, 0},
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	users := map[string]string{"alice": "s3cret"}
	f.Fuzz(func(t *testing.T, data []byte, withUsers bool) {
		if len(data) == 0 || data[0] != socksVersion {
			return // not SOCKS5: readProxyRequest sends it elsewhere
		}
		u := map[string]string(nil)
		if withUsers {
			u = users
		}
		var out bytes.Buffer
		req, err := readSOCKS(bufio.NewReader(bytes.NewReader(data)), &out, u)
		w := out.Bytes()
		// The method choice comes first, whatever follows.
		if len(w) > 0 {
			if len(w) < 2 || w[0] != socksVersion || (w[1] != socksNoAuth && w[1] != socksUserPass && w[1] != socksNoAcceptable) {
				t.Fatalf("method choice % x", w)
			}
			if w[1] == socksNoAcceptable && len(w) != 2 {
				t.Fatalf("wrote % x after refusing every method", w)
			}
			w = w[2:]
		}
		if withUsers && len(w) >= 2 {
			if w[0] != socksUserPassVersion || w[1] > 1 {
				t.Fatalf("authentication status % x", w[:2])
			}
			if w[1] == 1 && len(w) != 2 {
				t.Fatalf("wrote % x after failing the authentication", w)
			}
			w = w[2:]
		}
		if err != nil {
			if req != nil {
				t.Fatalf("a request and an error: %v", err)
			}
			switch {
			case len(w) == 0:
			case len(w) == 10 && w[0] == socksVersion && w[1] >= socksGeneralFailure && w[1] <= socksAtypNotSupported && w[3] == socksAtypIPv4:
			default:
				t.Fatalf("failure reply % x (%v)", w, err)
			}
			return
		}
		if len(w) != 0 {
			t.Fatalf("wrote % x before the server answered", w)
		}
		if !req.associate && !req.target.IsValid() { // a UDP association has no target
			t.Fatalf("invalid target %+v", req.target)
		}
		if withUsers && !bytes.Contains(data, []byte("\x05alice\x06s3cret")) {
			t.Fatalf("a request taken without the password: % x", data)
		}
	})
}

// FuzzHTTPProxyRequest feeds arbitrary bytes to the HTTP proxy handshake: it never panics;
// a failure is answered with a 4xx status; a request it takes has a valid target, and a
// plain-HTTP one a head that parses again, in origin form, with Connection: close and no
// Proxy-* header.
func FuzzHTTPProxyRequest(f *testing.F) {
	for _, seed := range []string{
		"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
		"CONNECT [::1]:22 HTTP/1.1\r\n\r\n",
		"CONNECT localhost HTTP/1.1\r\n\r\n",
		"GET http://example.com/a?b=c HTTP/1.1\r\nHost: other\r\nProxy-Connection: keep-alive\r\nConnection: x-a, close\r\nX-A: 1\r\n\r\n",
		"POST http://127.0.0.1:8080/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"GET http://[::1]/ HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET https://example.com/ HTTP/1.1\r\n\r\n",
		"GET http://bad_host-/ HTTP/1.1\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	users := map[string]string{"alice": "s3cret"}
	f.Fuzz(func(t *testing.T, data []byte, withUsers bool) {
		u := map[string]string(nil)
		if withUsers {
			u = users
		}
		var out bytes.Buffer
		req, err := readHTTPProxy(bufio.NewReader(bytes.NewReader(data)), &out, u)
		if err != nil {
			if req != nil || !strings.HasPrefix(out.String(), "HTTP/1.1 4") {
				t.Fatalf("failure answered %q (%v)", out.String(), err)
			}
			if withUsers && errors.Is(err, errProxyAuth) && !strings.HasPrefix(out.String(), "HTTP/1.1 407") {
				t.Fatalf("authentication failure answered %q", out.String())
			}
			return
		}
		if out.Len() != 0 {
			t.Fatalf("wrote %q before the server answered", out.String())
		}
		if !req.target.IsValid() {
			t.Fatalf("invalid target %+v", req.target)
		}
		if req.plain == nil {
			return // CONNECT
		}
		host := req.plain.URL.Host
		var head bytes.Buffer
		if err := req.plain.Write(&head); err != nil {
			return // the body the client announced is not there: the flow ends with an error
		}
		again, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head.Bytes())))
		if err != nil {
			t.Fatalf("rewritten request %q does not parse: %v", head.Bytes(), err)
		}
		if again.URL.IsAbs() || !again.Close || again.Host != host {
			t.Fatalf("rewritten request %q: absolute %v, close %v, host %q (want %q)", head.Bytes(), again.URL.IsAbs(), again.Close, again.Host, host)
		}
		for name := range again.Header {
			if strings.HasPrefix(name, "Proxy-") {
				t.Fatalf("rewritten request %q keeps %s", head.Bytes(), name)
			}
		}
	})
}

// FuzzSOCKSUDP: a SOCKS5 UDP datagram either fails to parse, or splits into a valid target,
// a header that parses to the same target with an empty payload, and the rest.
func FuzzSOCKSUDP(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'q'},
		append([]byte{0, 0, 0, 3, 9}, "localhost\x00\x35payload"...),
		{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187},
		{0, 0, 1, 1, 127, 0, 0, 1, 0, 53}, {0, 0, 0, 9}, {},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tgt, header, payload, err := parseSOCKSUDP(b)
		if err != nil {
			return
		}
		if !tgt.IsValid() || len(header)+len(payload) != len(b) {
			t.Fatalf("%x: target %v, header %x, payload %x", b, tgt, header, payload)
		}
		again, h2, p2, err := parseSOCKSUDP(header)
		if err != nil || again != tgt || !bytes.Equal(h2, header) || len(p2) != 0 {
			t.Fatalf("header %x parses to %v %x %x %v, want %v", header, again, h2, p2, err, tgt)
		}
	})
}
