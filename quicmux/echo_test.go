package quicmux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// An echo to an address some rule allows is answered (the host's loopback: an
// unprivileged ICMP socket, or a raw one as root); one no rule allows is denied before
// anything is sent.
func TestEcho(t *testing.T) {
	tn := newTunnel(t, withRules("tcp:127.0.0.1:22", "udp:[::1]:53"))
	ctx := context.Background()
	if _, err := tn.client.Echo(ctx, netip.MustParseAddr("127.0.0.1"), []byte("hello")); err != nil {
		if errors.Is(err, ErrUnreachable) {
			t.Skip("this host allows no ICMP socket (net.ipv4.ping_group_range, CAP_NET_RAW)")
		}
		t.Fatal(err)
	}
	if _, err := tn.client.Echo(ctx, netip.MustParseAddr("::1"), bytes.Repeat([]byte{7}, 1000)); err != nil && !errors.Is(err, ErrUnreachable) {
		t.Fatal(err) // unreachable: a host without IPv6 on lo
	}
	for _, a := range []string{"127.0.0.2", "0.0.0.0", "::2"} {
		if _, err := tn.client.Echo(ctx, netip.MustParseAddr(a), nil); !errors.Is(err, ErrDenied) {
			t.Errorf("echo %s: %v; want denied", a, err)
		}
	}
	if _, err := tn.client.Echo(ctx, netip.MustParseAddr("127.0.0.1"), make([]byte, MaxEchoPayload+1)); !errors.Is(err, ErrBadRequest) {
		t.Errorf("oversized payload: %v; want bad request", err)
	}
}

// Where the host allows no ICMP socket, the server says so once, with the sysctl to set,
// and answers every echo unreachable; a send that times out answers timed out.
func TestEchoRefusedAndTimedOut(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	var mu sync.Mutex
	var got []string
	tn := newTunnel(t, withRules("10.0.0.0/8:1-65535"), withServerConfig(func(c *ServerConfig) {
		c.Logger = logrus.NewEntry(logger)
		c.echo = func(ctx context.Context, addr netip.Addr, payload []byte) (time.Duration, error) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%s %q", addr, payload))
			mu.Unlock()
			if addr == netip.MustParseAddr("10.0.0.9") {
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("%w: %w", errNoICMPSocket, syscall.EPERM)
		}
	}))
	for range 2 {
		if _, err := tn.client.Echo(context.Background(), netip.MustParseAddr("10.0.0.1"), []byte("x")); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("%v; want unreachable", err)
		}
	}
	if _, err := tn.client.Echo(context.Background(), netip.MustParseAddr("10.0.0.9"), nil); !errors.Is(err, ErrTimedOut) {
		t.Fatalf("%v; want timed out", err)
	}
	n := 0
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "net.ipv4.ping_group_range") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d lines name net.ipv4.ping_group_range; want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{`10.0.0.1 "x"`, `10.0.0.1 "x"`, `10.0.0.9 ""`}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("echoes sent %q; want %q", got, want)
	}
}

func TestEchoRequestEncoding(t *testing.T) {
	for _, a := range []string{"192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"} {
		b, err := AppendRequest(nil, Request{Kind: KindEcho, Target: flow.Target{Addr: netip.MustParseAddr(a)}})
		if err != nil {
			t.Fatal(err)
		}
		req, err := ReadRequest(bytes.NewReader(b))
		if err != nil || req.Kind != KindEcho || req.Target.Addr != netip.MustParseAddr(a).Unmap() || req.Target.Port != 0 {
			t.Errorf("%s: %+v, %v", a, req, err)
		}
	}
	if b, _ := AppendRequest(nil, Request{Kind: KindEcho, Target: flow.Target{Addr: netip.MustParseAddr("192.0.2.1")}}); !bytes.Equal(b, []byte{1, 0, 6, 6, 1, 192, 0, 2, 1}) {
		t.Errorf("echo 192.0.2.1 encodes as % x", b)
	}
	for _, bad := range []flow.Target{{Host: "example.com"}, {Addr: netip.MustParseAddr("192.0.2.1"), Port: 1}, {}} {
		if _, err := AppendRequest(nil, Request{Kind: KindEcho, Target: bad}); !errors.Is(err, ErrBadTarget) {
			t.Errorf("%+v: %v; want bad target", bad, err)
		}
	}
	for _, body := range [][]byte{{6}, {6, 1, 1, 2, 3}, {6, 1, 1, 2, 3, 4, 0, 80}, {6, 3, 1, 'a'}} {
		hdr := append([]byte{1, 0, byte(len(body))}, body...)
		if _, err := ReadRequest(bytes.NewReader(hdr)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("% x: %v; want bad request", hdr, err)
		}
	}
}
