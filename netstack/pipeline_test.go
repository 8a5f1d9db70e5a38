package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// newPipeline builds the full TUN path without root: wireguard's CreateNetTUN is the
// "application host" (its *Net dials as an app on a host would), its tun.Device is bound
// to our Stack with NewTUN, and h gets the flows.
func newPipeline(t testing.TB, mtu int, h Handler) (*wgnetstack.Net, *Stack) {
	t.Helper()
	return newPipelineConfig(t, mtu, Config{Handler: h})
}

func newPipelineConfig(t testing.TB, mtu int, cfg Config) (*wgnetstack.Net, *Stack) {
	t.Helper()
	dev, app, err := wgnetstack.CreateNetTUN(
		[]netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:99::1")}, nil, mtu)
	if err != nil {
		t.Fatalf("CreateNetTUN: %v", err)
	}
	if cfg.Logger == nil {
		log := logrus.New()
		log.SetLevel(logrus.InfoLevel)
		cfg.Logger = logrus.NewEntry(log)
	}
	s, err := NewTUN(dev, cfg)
	if err != nil {
		dev.Close()
		t.Fatalf("NewTUN: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return app, s
}

// echoHandler accepts every flow, records its destination and echoes it.
type echoHandler struct {
	dsts chan netip.AddrPort
}

func (h *echoHandler) HandleTCP(r *TCPRequest) {
	if h.dsts != nil {
		h.dsts <- r.Dst()
	}
	c, err := r.Accept()
	if err != nil {
		return
	}
	echo(c)
}

func TestPipelineAccept(t *testing.T) {
	h := &echoHandler{dsts: make(chan netip.AddrPort, 1)}
	app, _ := newPipeline(t, 9000, h)
	for _, dst := range []string{"10.99.0.5:80", "[fd00:99::5]:80"} {
		t.Run(dst, func(t *testing.T) {
			want := netip.MustParseAddrPort(dst)
			ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
			defer cancel()
			c, err := app.DialContextTCPAddrPort(ctx, want)
			if err != nil {
				t.Fatalf("dial %v: %v", want, err)
			}
			defer c.Close()
			if got := <-h.dsts; got != want {
				t.Errorf("Dst() = %v, want %v", got, want)
			}
			checkEcho(t, c, payloadSize())
		})
	}
}

func TestPipelineReject(t *testing.T) {
	var calls atomic.Int32
	app, s := newPipeline(t, 1500, HandlerFunc(func(r *TCPRequest) {
		calls.Add(1)
		r.Reject()
		r.Reject() // a second decision does nothing
		if _, err := r.Accept(); !errors.Is(err, ErrDecided) {
			t.Errorf("Accept after Reject: %v, want ErrDecided", err)
		}
	}))
	for _, tc := range []struct {
		name string
		dst  string
	}{
		{"v4", "10.99.0.5:81"},
		{"v6", "[fd00:99::5]:81"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort(tc.dst))
			// wireguard's Net goes through gonet, which turns gVisor's error into text.
			if err == nil || !strings.Contains(err.Error(), "connection was refused") {
				t.Fatalf("dial: %v, want connection was refused", err)
			}
		})
	}
	// The refusal answered the first SYN that reached the handler: one handler call and one
	// RST per dial, and no SYN dropped on the way. (A refusal that came only for a
	// retransmitted SYN would show as a second call or a counted drop; a SYN left
	// unanswered would end the dial with a timeout, not a refusal.)
	if calls.Load() != 2 {
		t.Errorf("handler called %d times, want 2", calls.Load())
	}
	if st := s.Stats(); st.Rejected != 2 || st.DroppedInFlight != 0 || st.DroppedPerSource != 0 {
		t.Errorf("stats %+v, want 2 rejected and nothing dropped", st)
	}
}

// TestPipelineUndecided checks that a handler returning without a decision rejects.
func TestPipelineUndecided(t *testing.T) {
	app, _ := newPipeline(t, 1500, HandlerFunc(func(r *TCPRequest) {}))
	_, err := app.DialContextTCPAddrPort(context.Background(), netip.MustParseAddrPort("10.99.0.5:82"))
	if err == nil || !strings.Contains(err.Error(), "connection was refused") {
		t.Fatalf("dial: %v, want connection was refused", err)
	}
}

func TestPipelineParallel(t *testing.T) {
	const flows = 100
	app, _ := newPipeline(t, 9000, &echoHandler{})
	var g errgroup.Group
	for i := range flows {
		g.Go(func() error {
			dst := netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.99.%d.%d", i/200, 2+i%200)), uint16(1000+i))
			if i%2 == 1 {
				dst = netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("fd00:99::%x", 0x100+i)), 443)
			}
			ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
			defer cancel()
			c, err := app.DialContextTCPAddrPort(ctx, dst)
			if err != nil {
				return fmt.Errorf("dial %v: %w", dst, err)
			}
			defer c.Close()
			checkEcho(t, c, 64<<10)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelineCloseUndecided closes the stack while handlers wait on their context and a
// dial is in progress: Close must return promptly and leave no goroutine behind
// (TestMain's goleak check).
func TestPipelineCloseUndecided(t *testing.T) {
	waiting := make(chan struct{}, 4)
	app, s := newPipeline(t, 1500, HandlerFunc(func(r *TCPRequest) {
		waiting <- struct{}{}
		<-r.Context().Done()
		if _, err := r.Accept(); err == nil {
			t.Error("Accept on a closed stack succeeded")
		}
	}))
	dialErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
		defer cancel()
		c, err := app.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("10.99.0.5:83"))
		if c != nil {
			c.Close()
		}
		dialErr <- err
	}()
	select {
	case <-waiting:
	case err := <-dialErr:
		t.Fatalf("dial ended (%v) before the handler had it", err)
	}
	// Close takes milliseconds; the bound leaves room for a loaded machine and catches a
	// Close that waits for the handlers on their own (forever) or for gVisor's SYN-ACK
	// retransmissions (about two minutes).
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-dialErr; err == nil {
		t.Error("dial succeeded through a closed stack")
	}
}

// TestOwnDialRefused checks that our own DialTCP maps a refusal to ECONNREFUSED over the
// pipeline's reverse direction: our stack dials the app host, which has no listener.
func TestOwnDialRefused(t *testing.T) {
	_, s := newPipelineConfig(t, 1500, Config{Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.255.1/32")}})
	_, err := s.DialTCP(context.Background(), netip.MustParseAddrPort("10.99.0.1:9"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("DialTCP: %v, want ECONNREFUSED", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("error %#v is not a dial *net.OpError", err)
	}
}
