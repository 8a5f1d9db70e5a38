package wan

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// The generator against the destinations on loopback (no privileges, no emulator).
func startDests(t *testing.T) *Dests {
	t.Helper()
	d, err := ListenDests("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func TestGenerateBulk(t *testing.T) {
	d := startDests(t)
	res, err := Generate(context.Background(), Spec{Kind: "bulk", Sink: d.Sink.Addr().String(), Echo: d.Echo.Addr().String(),
		Settle: 5 * time.Second, Flows: 3, Duration: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.FlowMbps) != 3 || res.Mbps <= 0 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range res.FlowMbps {
		if f <= 0 {
			t.Errorf("a flow with no goodput: %+v", res.FlowMbps)
		}
	}
	if res.SettleMs <= 0 {
		t.Errorf("settle not timed: %+v", res)
	}
}

func TestGenerateLatencyAndTTFB(t *testing.T) {
	d := startDests(t)
	spec := Spec{Kind: "latency", Sink: d.Sink.Addr().String(), Echo: d.Echo.Addr().String(),
		Duration: 300 * time.Millisecond, Interval: 20 * time.Millisecond, Grace: time.Second}
	res, err := Generate(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 15 || res.Unanswered != 0 || res.P50Ms <= 0 || res.P99Ms < res.P50Ms || res.P99Censored {
		t.Errorf("alone: %+v", res)
	}
	spec.WithBulk, spec.Ramp = true, 100*time.Millisecond
	if res, err = Generate(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if res.Requests != 15 || res.Unanswered != 0 || res.BulkMbps <= 0 {
		t.Errorf("with bulk: %+v", res)
	}
	res, err = Generate(context.Background(), Spec{Kind: "ttfb", Echo: d.Echo.Addr().String(), Samples: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TTFBMs) != 4 || res.MedianTTFBMs <= 0 {
		t.Errorf("ttfb: %+v", res)
	}
}

// blackHole accepts connections and never answers.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					_ = c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func TestSettleFailsOnAFullPath(t *testing.T) {
	_, err := Generate(context.Background(), Spec{Kind: "ttfb", Echo: blackHole(t), Samples: 1, Settle: 200 * time.Millisecond})
	if !errors.Is(err, ErrUnsettled) {
		t.Fatalf("got %v, want ErrUnsettled", err)
	}
}

// Replies that never come rank above every answered one: the percentiles say "at least".
func TestPercentileCensored(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		answered []time.Duration
		n        int
		q        float64
		want     float64
		censored bool
	}{
		{ms(5, 1, 3, 2, 4), 5, 0.5, 3, false},
		{ms(5, 1, 3, 2, 4), 5, 0.99, 5, false},
		{ms(1, 2, 3), 100, 0.5, 1000, true}, // 97 of 100 unanswered
		{ms(1, 2, 3), 4, 0.5, 2, false},     // one unanswered, the median still known
		{ms(1, 2, 3), 4, 0.99, 1000, true},
		{nil, 0, 0.99, 0, false},
	}
	for _, tt := range tests {
		got, c := percentile(tt.answered, tt.n, tt.q, time.Second)
		if got != tt.want || c != tt.censored {
			t.Errorf("percentile(%v of %d, %v) = %v %v, want %v %v", tt.answered, tt.n, tt.q, got, c, tt.want, tt.censored)
		}
	}
}

func TestGenerateRejectsBadSpecs(t *testing.T) {
	for _, s := range []Spec{{Kind: "nope"}, {Kind: "bulk"}, {Kind: "latency", Interval: time.Second, Duration: time.Millisecond}, {Kind: "ttfb"}} {
		if _, err := Generate(context.Background(), s); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

// An echo that answers the first request (the check that the flow is open) and then stops:
// every timed request is unanswered, and both percentiles are censored at the grace time.
func TestLatencyUnanswered(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, reqSize)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf)
		}
		_, _ = io.Copy(io.Discard, c)
	}()
	res, err := Generate(context.Background(), Spec{Kind: "latency", Echo: ln.Addr().String(),
		Duration: 100 * time.Millisecond, Interval: 10 * time.Millisecond, Grace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 10 || res.Unanswered != 10 || !res.P50Censored || !res.P99Censored || res.P99Ms != 200 {
		t.Errorf("%+v", res)
	}
}
