package ingress

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/quicgate/quicgate/quicmux"
)

// httpStatusFor maps why a flow failed to the status an HTTP proxy answers: the server's
// verdict on the target, or 503 when the tunnel could not take the flow at all.
func httpStatusFor(err error) int {
	switch {
	case errors.Is(err, quicmux.ErrDenied):
		return http.StatusForbidden
	case errors.Is(err, quicmux.ErrRefused), errors.Is(err, quicmux.ErrUnreachable):
		return http.StatusBadGateway
	case errors.Is(err, quicmux.ErrTimedOut):
		return http.StatusGatewayTimeout
	case errors.Is(err, quicmux.ErrBadRequest):
		return http.StatusBadGateway
	}
	// Shutting down, no connection to the server, the client draining.
	return http.StatusServiceUnavailable
}

// writeHTTPStatus writes a complete response with a one-line text body, and says the
// connection closes.
func writeHTTPStatus(w io.Writer, code int, body string, extra ...string) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	body = "quicgate: " + body + "\n"
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	_, _ = w.Write(b.Bytes())
}

// readHTTPProxy reads an HTTP proxy request: CONNECT host:port, or a plain-HTTP request with
// an absolute URL, which is rewritten to origin form for the destination (hop-by-hop and
// Proxy-* headers dropped, "Connection: close": one request per proxy connection). Its body
// is not read here: it follows the head through the flow as the client sends it.
func readHTTPProxy(br *bufio.Reader, w io.Writer, users map[string]string) (*proxyRequest, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		writeHTTPStatus(w, http.StatusBadRequest, "malformed proxy request")
		return nil, fmt.Errorf("http: %w", err)
	}
	if users != nil && !checkBasic(req.Header.Get("Proxy-Authorization"), users) {
		writeHTTPStatus(w, http.StatusProxyAuthRequired, "proxy authentication required", `Proxy-Authenticate: Basic realm="quicgate"`)
		if req.Header.Get("Proxy-Authorization") == "" {
			return nil, errors.New("http: no Proxy-Authorization (replied 407)")
		}
		return nil, fmt.Errorf("http: %w (replied 407)", errProxyAuth)
	}
	reject := func(w io.Writer, err error) { writeHTTPStatus(w, httpStatusFor(err), err.Error()) }
	if req.Method == http.MethodConnect {
		t, err := quicmux.ParseTarget(req.URL.Host)
		if err != nil || req.URL.Host == "" {
			writeHTTPStatus(w, http.StatusBadRequest, "CONNECT wants host:port")
			return nil, fmt.Errorf("http: CONNECT %q: %v", req.RequestURI, err)
		}
		return &proxyRequest{
			proto:  "http connect",
			target: t,
			accept: func(w io.Writer, _ net.Addr) error {
				_, err := io.WriteString(w, "HTTP/1.1 200 Connection established\r\n\r\n")
				return err
			},
			reject: reject,
		}, nil
	}
	if req.URL.Scheme != "http" || req.URL.Host == "" {
		writeHTTPStatus(w, http.StatusBadRequest, "this is a proxy: it takes CONNECT host:port, or an absolute http:// URL")
		return nil, fmt.Errorf("http: %s %q is not a proxy request", req.Method, req.RequestURI)
	}
	port := req.URL.Port()
	if port == "" {
		port = "80"
	}
	t, err := quicmux.ParseTarget(net.JoinHostPort(req.URL.Hostname(), port))
	if err != nil {
		writeHTTPStatus(w, http.StatusBadRequest, "bad host in URL")
		return nil, fmt.Errorf("http: %s %q: %v", req.Method, req.RequestURI, err)
	}
	return &proxyRequest{
		proto:  "http",
		target: t,
		head:   originRequestHead(req),
		accept: func(io.Writer, net.Addr) error { return nil }, // the destination answers
		reject: reject,
	}, nil
}

// originRequestHead is req's head as the destination gets it: the request line in origin
// form, the Host the absolute URL named, the end-to-end headers, "Connection: close".
func originRequestHead(req *http.Request) []byte {
	h := req.Header.Clone()
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			h.Del(textproto.TrimString(name))
		}
	}
	for _, name := range []string{"Connection", "Keep-Alive", "Te", "Upgrade"} {
		h.Del(name)
	}
	for name := range h {
		if strings.HasPrefix(name, "Proxy-") {
			delete(h, name)
		}
	}
	// ReadRequest took these out of the header; the body goes on as the client framed it.
	if len(req.TransferEncoding) > 0 {
		h.Set("Transfer-Encoding", strings.Join(req.TransferEncoding, ", "))
	}
	for name := range req.Trailer {
		h.Add("Trailer", name)
	}
	h.Set("Connection", "close")
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/%d.%d\r\nHost: %s\r\n", req.Method, req.URL.RequestURI(), req.ProtoMajor, req.ProtoMinor, req.Host)
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// checkBasic reports whether a Proxy-Authorization value is Basic credentials of a
// configured user.
func checkBasic(value string, users map[string]string) bool {
	scheme, cred, ok := strings.Cut(value, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	return ok && checkUser(users, user, pass)
}
