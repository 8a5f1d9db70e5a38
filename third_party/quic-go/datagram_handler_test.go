package quic

import (
	"context"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/testdata"

	"github.com/stretchr/testify/require"
)

// recordingHandler keeps copies of the datagrams it is handed, and counts DatagramsDone.
type recordingHandler struct {
	mu      sync.Mutex
	got     []string
	pending int // handed over since the last DatagramsDone
	done    int
	all     chan struct{}
	want    int
}

func (h *recordingHandler) HandleDatagram(p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, string(p))
	h.pending++
}

func (h *recordingHandler) DatagramsDone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending == 0 {
		panic("DatagramsDone without a datagram")
	}
	h.pending = 0
	h.done++
	if len(h.got) == h.want {
		close(h.all)
	}
}

// quicgate patch: a handler set with SetDatagramHandler gets every datagram in order, on the
// run loop, each packet's followed by one DatagramsDone; SendDatagramParts sends its two
// parts as one datagram.
func TestDatagramHandler(t *testing.T) {
	tlsConf := testdata.GetTLSConfig()
	tlsConf.NextProtos = []string{"quic-go-integration-test"}
	ln, err := Listen(newUDPConnLocalhost(t), tlsConf, &Config{EnableDatagrams: true})
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scaleDuration(10*time.Second))
	defer cancel()
	cl, err := Dial(ctx, newUDPConnLocalhost(t), ln.Addr(), &tls.Config{RootCAs: testdata.GetRootCA(), ServerName: "localhost", NextProtos: []string{"quic-go-integration-test"}}, &Config{EnableDatagrams: true})
	require.NoError(t, err)
	defer cl.CloseWithError(0, "")
	srv, err := ln.Accept(ctx)
	require.NoError(t, err)
	defer srv.CloseWithError(0, "")

	h := &recordingHandler{all: make(chan struct{}), want: 3}
	srv.SetDatagramHandler(h)
	require.NoError(t, cl.SendDatagram([]byte("one")))
	require.NoError(t, cl.SendDatagramParts([]byte("tw"), []byte("o")))
	require.NoError(t, cl.SendDatagramParts(nil, []byte("three")))
	select {
	case <-h.all:
	case <-ctx.Done():
		t.Fatal("the handler did not get the datagrams")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, []string{"one", "two", "three"}, h.got)
	require.GreaterOrEqual(t, h.done, 1)
	require.Zero(t, h.pending)
}
