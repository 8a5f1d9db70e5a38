package streamlink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicgate/quicgate/internal/looptest"
	quic "github.com/quicgate/quicgate/third_party/quic-go"
)

// testTLS returns the server's and the client's TLS configs over a self-signed certificate
// for "localhost", with the ALPN protocol "test".
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		NextProtos:   []string{"test"},
	}
	client = &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"test"}}
	return server, client
}

// sizedConn records the largest packet written through it.
type sizedConn struct {
	*Conn
	largest atomic.Int64
}

func (c *sizedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	for {
		l := c.largest.Load()
		if int64(len(p)) <= l || c.largest.CompareAndSwap(l, int64(len(p))) {
			break
		}
	}
	return c.Conn.WriteTo(p, addr)
}

// TestQUIC runs a QUIC connection over a TCP stream, from a Conn to a Server, with 16 KiB
// packets (the client sends some of 16383 bytes): 8 MiB sent on a stream come back through the server's echo intact; the
// connection the server accepts has the TCP client's address; and when the client's
// stream ends, the server's Claim context ends, and the QUIC connections on both sides
// end.
func TestQUIC(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true") // not a UDP socket, by design
	serverTLS, clientTLS := testTLS(t)
	conf := &quic.Config{InitialPacketSize: 16383}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)

	srv := newServer(t, ServerConfig{})
	serverTr := &quic.Transport{Conn: srv}
	t.Cleanup(func() { _ = serverTr.Close() })
	ln, err := serverTr.Listen(serverTLS, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })

	type accepted struct {
		conn  *quic.Conn
		claim context.Context
		err   error
	}
	acceptc := make(chan accepted, 1)
	echoed := make(chan error, 1)
	go func() {
		qc, err := ln.Accept(ctx)
		if err != nil {
			acceptc <- accepted{err: err}
			return
		}
		claim, ok := srv.Claim(qc.RemoteAddr())
		if !ok {
			acceptc <- accepted{conn: qc, err: errors.New("Claim of the accepted connection's address failed")}
			return
		}
		acceptc <- accepted{conn: qc, claim: claim}
		st, err := qc.AcceptStream(ctx)
		if err != nil {
			echoed <- err
			return
		}
		_, err = io.Copy(st, st)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		echoed <- err
	}()

	tcp := dialTCP(t, srv.Addr(), "")
	pc := ownConn(t, tcp)
	sized := &sizedConn{Conn: pc}
	clientTr := &quic.Transport{Conn: sized}
	t.Cleanup(func() { _ = clientTr.Close() })
	qc, err := clientTr.Dial(ctx, pc.RemoteAddr(), clientTLS, conf)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	a := looptest.Await(t, acceptc, "the server's Accept")
	if a.conn != nil {
		t.Cleanup(func() { _ = a.conn.CloseWithError(0, "") })
	}
	if a.err != nil {
		t.Fatalf("server: %v", a.err)
	}
	sameAddr(t, "the accepted connection's RemoteAddr", a.conn.RemoteAddr(), tcp.LocalAddr())

	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	data := make([]byte, size)
	rng := mrand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(data)
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		wrote <- err
	}()
	type readResult struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	readc := make(chan readResult, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, st)
		var r readResult
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		readc <- r
	}()
	if err := looptest.Await(t, wrote, "the client's write"); err != nil {
		t.Fatalf("client write: %v", err)
	}
	r := looptest.Await(t, readc, "the echo")
	if r.err != nil {
		t.Fatalf("client read: %v", r.err)
	}
	if r.n != size || r.sum != sha256.Sum256(data) {
		t.Fatalf("echo: %d bytes with sha256 %x; want %d bytes with sha256 %x", r.n, r.sum, size, sha256.Sum256(data))
	}
	if err := looptest.Await(t, echoed, "the server's echo"); err != nil {
		t.Fatalf("server echo: %v", err)
	}
	if l := sized.largest.Load(); l != 16383 {
		t.Fatalf("the client's largest packet: %d bytes; want 16383", l)
	}

	// The client's stream ends under the QUIC connection (no CONNECTION_CLOSE is sent):
	// the Server's stream ends, so does its Claim context, and the server application
	// closes its connection; the client's transport, its socket gone, ends its own.
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a.claim, "the server's Claim context after the client's stream ended")
	if err := a.conn.CloseWithError(0, "stream ended"); err != nil {
		t.Fatalf("server CloseWithError: %v", err)
	}
	waitDone(t, a.conn.Context(), "the server's connection")
	waitDone(t, qc.Context(), "the client's connection after its stream closed")
}
