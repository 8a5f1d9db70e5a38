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
	"sync"

	"github.com/quicgate/quicgate/flow"
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
// an absolute URL, which goes to the destination in origin form (plainFlow: one request per
// proxy connection).
func readHTTPProxy(br *bufio.Reader, w io.Writer, users map[string]string) (*proxyRequest, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		writeHTTPStatus(w, http.StatusBadRequest, "malformed proxy request")
		// Not err itself: textproto quotes the line it could not parse, which may hold
		// credentials.
		return nil, errors.New("http: malformed proxy request")
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
		t, err := flow.ParseTarget(req.URL.Host)
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
	t, err := flow.ParseTarget(net.JoinHostPort(req.URL.Hostname(), port))
	if err != nil {
		writeHTTPStatus(w, http.StatusBadRequest, "bad host in URL")
		return nil, fmt.Errorf("http: %s %q: %v", req.Method, req.RequestURI, err)
	}
	toOrigin(req)
	return &proxyRequest{
		proto:  "http",
		target: t,
		plain:  req,
		accept: func(io.Writer, net.Addr) error { return nil }, // the destination answers
		reject: reject,
	}, nil
}

// toOrigin makes req the request the destination gets: origin form (Request.Write writes
// the URL's path and the Host), the end-to-end headers only (hop-by-hop ones, those the
// Connection header names and Proxy-* dropped), a Via, and "Connection: close". Its body's
// framing is req's own (ContentLength, TransferEncoding), not a header a client could name.
func toOrigin(req *http.Request) {
	h := req.Header
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
	h.Add("Via", fmt.Sprintf("%d.%d quicgate", req.ProtoMajor, req.ProtoMinor))
	req.Close = true
	req.RequestURI = ""
}

// plainFlow is the local end of a plain-HTTP proxy request, which carries that one request
// and its response, and nothing else:
//   - toward the destination it reads the request, written in origin form with its body
//     framed as the client framed it, and then drops whatever else the client sends (a
//     second request, meant for another origin perhaps, must not reach this one) until the
//     client's end;
//   - toward the app it rewrites the response head to say "Connection: close", so that the
//     client does not send its next request on this connection.
type plainFlow struct {
	flow.Conn
	req    *io.PipeReader
	stop   func() // ends the request's writer
	after  bool   // the request is out: drop what the client sends
	wrote  bool   // the response head is through
	header []byte // the response head so far
}

// newPlainFlow starts writing req (its body read from body) for the destination; local is
// the client's end.
func newPlainFlow(local flow.Conn, req *http.Request, wg *sync.WaitGroup) *plainFlow {
	pr, pw := io.Pipe()
	wg.Add(1)
	go func() { // owned: the relay reads the pipe to its end, or Close stops it
		defer wg.Done()
		pw.CloseWithError(req.Write(pw))
	}()
	return &plainFlow{Conn: local, req: pr, stop: func() { _ = pr.Close() }}
}

func (c *plainFlow) Read(p []byte) (int, error) {
	if !c.after {
		n, err := c.req.Read(p)
		if err == nil || n > 0 {
			return n, nil
		}
		if !errors.Is(err, io.EOF) {
			return 0, err
		}
		c.after = true
	}
	var drop [4096]byte
	for {
		if _, err := c.Conn.Read(drop[:]); err != nil {
			return 0, err
		}
	}
}

// maxResponseHead bounds the response head plainFlow rewrites; a longer one goes through as
// it is.
const maxResponseHead = 64 << 10

func (c *plainFlow) Write(p []byte) (int, error) {
	if c.wrote {
		return c.Conn.Write(p)
	}
	c.header = append(c.header, p...)
	end := bytes.Index(c.header, []byte("\r\n\r\n"))
	if end < 0 && len(c.header) < maxResponseHead {
		return len(p), nil
	}
	c.wrote = true
	out := c.header
	if end >= 0 {
		out = append(closeHead(c.header[:end+2]), c.header[end+2:]...)
	}
	c.header = nil
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// closeHead returns a response head (its lines, each ending in CRLF) with the headers that
// keep a connection open replaced by "Connection: close".
func closeHead(head []byte) []byte {
	var out []byte
	for i, line := range bytes.SplitAfter(head, []byte("\r\n")) {
		name, _, _ := bytes.Cut(line, []byte(":"))
		if i > 0 {
			switch strings.ToLower(string(bytes.TrimSpace(name))) {
			case "connection", "keep-alive", "proxy-connection":
				continue
			}
		}
		out = append(out, line...)
	}
	return append(out, "Connection: close\r\n"...)
}

func (c *plainFlow) Close() error {
	c.stop()
	return c.Conn.Close()
}

func (c *plainFlow) Abort() {
	c.stop()
	c.Conn.Abort()
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
