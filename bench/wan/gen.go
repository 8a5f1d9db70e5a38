package wan

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// Spec is one measurement for the load generator (qgwan gen, in the client namespace).
type Spec struct {
	Kind string `json:"kind"` // "bulk", "latency" or "ttfb"
	Sink string `json:"sink"` // where the generator connects to reach the metering sink
	Echo string `json:"echo"` // and the echo
	// Settle: before measuring, one round trip on a new flow must complete within this, so
	// that data a previous measurement left in the path is gone (0: no check).
	Settle time.Duration `json:"settle,omitempty"`
	// bulk: Flows parallel uploads for Duration.
	Flows    int           `json:"flows,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	// latency: a 64-byte request every Interval for Duration on one flow, each answered by
	// 64 bytes; WithBulk runs one bulk flow on the same path meanwhile, started Ramp before
	// the first request. Replies still missing Grace after the last request count as lost.
	Interval time.Duration `json:"interval,omitempty"`
	WithBulk bool          `json:"with_bulk,omitempty"`
	Ramp     time.Duration `json:"ramp,omitempty"`
	Grace    time.Duration `json:"grace,omitempty"`
	// ttfb: Samples new flows one after another, each timed from the start of its connect to
	// the first byte of the reply to its 64-byte request.
	Samples int `json:"samples,omitempty"`
}

// Result is what a measurement found. Times are in milliseconds, rates in Mbit/s.
type Result struct {
	SettleMs float64   `json:"settle_ms,omitempty"`
	Mbps     float64   `json:"mbps,omitempty"`      // bulk: the flows' goodput together
	FlowMbps []float64 `json:"flow_mbps,omitempty"` // bulk: each flow's
	// latency: percentiles over every request sent; a request never answered ranks above
	// every answered one, and a percentile that falls on one is censored (at least Grace).
	P50Ms       float64 `json:"p50_ms,omitempty"`
	P99Ms       float64 `json:"p99_ms,omitempty"`
	P50Censored bool    `json:"p50_censored,omitempty"`
	P99Censored bool    `json:"p99_censored,omitempty"`
	Requests    int     `json:"requests,omitempty"`
	Unanswered  int     `json:"unanswered,omitempty"`
	BulkMbps    float64 `json:"bulk_mbps,omitempty"` // latency with bulk: the bulk flow's goodput meanwhile
	// ttfb: every sample and their median.
	TTFBMs       []float64 `json:"ttfb_ms,omitempty"`
	MedianTTFBMs float64   `json:"median_ttfb_ms,omitempty"`
}

// ErrUnsettled means the settling round trip did not complete in time: the path still holds
// data from an earlier measurement (or is broken).
var ErrUnsettled = errors.New("path not quiet")

const reqSize = 64

var dialer = net.Dialer{Timeout: 30 * time.Second}

// Generate runs spec.
func Generate(ctx context.Context, spec Spec) (Result, error) {
	var res Result
	if spec.Settle > 0 {
		d, err := settle(ctx, spec.Echo, spec.Settle)
		if err != nil {
			return res, err
		}
		res.SettleMs = ms(d)
	}
	var err error
	switch spec.Kind {
	case "bulk":
		err = bulk(ctx, spec, &res)
	case "latency":
		err = latency(ctx, spec, &res)
	case "ttfb":
		err = ttfb(ctx, spec, &res)
	default:
		err = fmt.Errorf("unknown measurement %q", spec.Kind)
	}
	return res, err
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// abort closes c with a reset, so nothing it still holds is sent: the next measurement finds
// the path empty instead of behind this one's leftovers.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func settle(ctx context.Context, echo string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dialer.DialContext(ctx, "tcp", echo)
	if err != nil {
		return 0, fmt.Errorf("%w: connecting: %v", ErrUnsettled, err)
	}
	defer abort(c)
	_ = c.SetDeadline(start.Add(timeout))
	b := []byte{'s'}
	if _, err := c.Write(b); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnsettled, err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, fmt.Errorf("%w: no echo within %v: %v", ErrUnsettled, timeout, err)
	}
	return time.Since(start), nil
}

func bulk(ctx context.Context, spec Spec, res *Result) error {
	if spec.Flows < 1 || spec.Duration <= 0 {
		return fmt.Errorf("bulk: %d flows for %v", spec.Flows, spec.Duration)
	}
	stop := make(chan struct{})
	t := time.AfterFunc(spec.Duration, func() { close(stop) })
	defer t.Stop()
	start := time.Now()
	rates := make([]float64, spec.Flows)
	errs := make([]error, spec.Flows)
	var wg sync.WaitGroup
	for i := range spec.Flows {
		wg.Go(func() { rates[i], errs[i] = bulkFlow(ctx, spec.Sink, start, stop) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, r := range rates {
		res.Mbps += r / 1e6
		res.FlowMbps = append(res.FlowMbps, r/1e6)
	}
	return nil
}

// bulkFlow uploads to the sink until stop is closed and returns its goodput in bit/s: the
// bytes the sink had received at its last report, over the time from start to that report.
func bulkFlow(ctx context.Context, sink string, start time.Time, stop <-chan struct{}) (float64, error) {
	c, err := dialer.DialContext(ctx, "tcp", sink)
	if err != nil {
		return 0, fmt.Errorf("bulk: %w", err)
	}
	var mu sync.Mutex
	var lastTS, lastN int64
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		var rep [16]byte
		for {
			if _, err := io.ReadFull(c, rep[:]); err != nil {
				return
			}
			mu.Lock()
			lastTS, lastN = int64(binary.BigEndian.Uint64(rep[:8])), int64(binary.BigEndian.Uint64(rep[8:]))
			mu.Unlock()
		}
	}()
	// A blocked write returns when stop (or ctx) moves its deadline to now.
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		select {
		case <-stop:
		case <-ctx.Done():
		}
		_ = c.SetWriteDeadline(time.Now())
	}()
	buf := make([]byte, 128<<10)
	var werr error
	for {
		if _, err := c.Write(buf); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				werr = fmt.Errorf("bulk write: %w", err)
			}
			break
		}
	}
	<-watch
	mu.Lock()
	ts, n := lastTS, lastN
	mu.Unlock()
	abort(c)
	<-reading
	if werr != nil {
		return 0, werr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if ts == 0 || ts <= start.UnixNano() {
		return 0, nil // the sink never reported: nothing got through
	}
	return float64(n) * 8 / (float64(ts-start.UnixNano()) / 1e9), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func latency(ctx context.Context, spec Spec, res *Result) error {
	if spec.Interval <= 0 || spec.Duration < spec.Interval {
		return fmt.Errorf("latency: a request every %v for %v", spec.Interval, spec.Duration)
	}
	grace := spec.Grace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	c, err := dialer.DialContext(ctx, "tcp", spec.Echo)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	defer abort(c)
	req := make([]byte, reqSize)
	// One round trip first: the flow is open end to end before any timing.
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, make([]byte, reqSize)); err != nil {
		return fmt.Errorf("latency: first round trip: %w", err)
	}
	_ = c.SetDeadline(time.Time{})

	var bulkDone chan struct{}
	stopBulk := make(chan struct{})
	if spec.WithBulk {
		bulkDone = make(chan struct{})
		go func() {
			defer close(bulkDone)
			r, err := bulkFlow(ctx, spec.Sink, time.Now(), stopBulk)
			if err == nil {
				res.BulkMbps = r / 1e6
			}
		}()
		select {
		case <-time.After(spec.Ramp):
		case <-ctx.Done():
		}
	}

	n := int(spec.Duration / spec.Interval)
	var mu sync.Mutex
	sent := make([]time.Time, n)
	rtts := make([]time.Duration, n)
	for i := range rtts {
		rtts[i] = -1
	}
	replies := make(chan struct{})
	go func() {
		defer close(replies)
		buf := make([]byte, reqSize)
		for range n {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			now := time.Now()
			i := binary.BigEndian.Uint64(buf)
			mu.Lock()
			if i < uint64(n) && !sent[i].IsZero() {
				rtts[i] = now.Sub(sent[i])
			}
			mu.Unlock()
		}
	}()
	first := time.Now()
	var werr error
	for i := range n {
		if d := time.Until(first.Add(time.Duration(i) * spec.Interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		binary.BigEndian.PutUint64(req, uint64(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(grace))
		if _, err := c.Write(req); err != nil {
			werr = fmt.Errorf("latency: request %d: %w", i, err)
			break
		}
	}
	select {
	case <-replies:
	case <-time.After(grace):
	case <-ctx.Done():
	}
	abort(c) // ends the reader if replies are still missing
	<-replies
	close(stopBulk)
	if bulkDone != nil {
		<-bulkDone
	}
	if werr != nil {
		return werr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	res.Requests = n
	var answered []time.Duration
	for _, r := range rtts {
		if r >= 0 {
			answered = append(answered, r)
		}
	}
	res.Unanswered = n - len(answered)
	res.P50Ms, res.P50Censored = percentile(answered, n, 0.50, grace)
	res.P99Ms, res.P99Censored = percentile(answered, n, 0.99, grace)
	return nil
}

// percentile is the nearest-rank q-quantile of n samples of which answered are the known
// ones (the rest are larger than any): in milliseconds, or censored at floor.
func percentile(answered []time.Duration, n int, q float64, floor time.Duration) (float64, bool) {
	if n == 0 {
		return 0, false
	}
	slices.Sort(answered)
	rank := max(1, int(math.Ceil(q*float64(n))))
	if rank > len(answered) {
		return ms(floor), true
	}
	return ms(answered[rank-1]), false
}

func ttfb(ctx context.Context, spec Spec, res *Result) error {
	if spec.Samples < 1 {
		return fmt.Errorf("ttfb: %d samples", spec.Samples)
	}
	req := make([]byte, reqSize)
	for i := range spec.Samples {
		start := time.Now()
		c, err := dialer.DialContext(ctx, "tcp", spec.Echo)
		if err != nil {
			return fmt.Errorf("ttfb: %w", err)
		}
		_ = c.SetDeadline(start.Add(30 * time.Second))
		var b [1]byte
		_, err = c.Write(req)
		if err == nil {
			_, err = io.ReadFull(c, b[:])
		}
		d := time.Since(start)
		_ = c.Close()
		if err != nil {
			return fmt.Errorf("ttfb: sample %d: %w", i, err)
		}
		res.TTFBMs = append(res.TTFBMs, ms(d))
	}
	sorted := slices.Clone(res.TTFBMs)
	slices.Sort(sorted)
	res.MedianTTFBMs = sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		res.MedianTTFBMs = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	return nil
}
