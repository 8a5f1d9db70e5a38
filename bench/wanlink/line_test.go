package wanlink

import (
	"math"
	"testing"
	"time"
)

// t0 is the fake clock's origin; every test moves time by adding to it, never by sleeping.
var t0 = time.Unix(1_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newLine(t *testing.T, p Params) *Line[int] {
	t.Helper()
	l, err := NewLine[int](p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// 12 Mbit/s: a 1500-byte packet takes exactly 1 ms to serialize.
const rate12M = 12_000_000

func TestRateShapesToR(t *testing.T) {
	l := newLine(t, Params{Rate: rate12M, Queue: 1 << 30, Delay: 0})
	// 1,000 packets offered at once leave one per millisecond.
	for i := range 1000 {
		if v, due := l.Push(t0, 1500, i); v != Queued || !due.Equal(at(time.Duration(i+1)*time.Millisecond)) {
			t.Fatalf("packet %d: %v due %v, want queued due %v", i, v, due.Sub(t0), time.Duration(i+1)*time.Millisecond)
		}
	}
	// Popping at 10 ms steps: exactly 10 packets (15,000 bytes = 12 Mbit/s) each step.
	var out []int
	for step := 1; step <= 100; step++ {
		n := len(out)
		out = l.Pop(at(time.Duration(step)*10*time.Millisecond), out, 1<<20)
		if got := len(out) - n; got != 10 {
			t.Fatalf("step %d: %d packets due, want 10", step, got)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("%d packets left", l.Len())
	}
}

// The rate holds exactly over many packets whose serialization time is not a whole number
// of nanoseconds (1 Gbit/s, 1,499-byte packets: 11,992 ns each; 7 Mbit/s: 1,713,142.857 ns).
func TestRateExactOverManyPackets(t *testing.T) {
	for _, r := range []int64{1_000_000_000, 7_000_000} {
		l := newLine(t, Params{Rate: r, Queue: 1 << 40})
		const n, size = 100_000, 1499
		var last time.Time
		for i := range n {
			_, last = l.Push(t0, size, i)
		}
		want := float64(n*size*8) / float64(r) * 1e9
		if got := float64(last.Sub(t0)); math.Abs(got-want) > 1 {
			t.Errorf("rate %d: %d packets took %.0f ns, want %.0f", r, n, got, want)
		}
	}
}

// An idle link does not bank capacity: a packet arriving after a pause starts at once, and
// one arriving while the link is busy waits for it.
func TestRateIdleAndBusy(t *testing.T) {
	l := newLine(t, Params{Rate: rate12M, Queue: 1 << 20})
	if _, due := l.Push(t0, 1500, 0); !due.Equal(at(time.Millisecond)) {
		t.Fatalf("first due %v", due.Sub(t0))
	}
	if _, due := l.Push(at(10*time.Millisecond), 1500, 1); !due.Equal(at(11 * time.Millisecond)) {
		t.Fatalf("after idle due %v, want 11ms", due.Sub(t0))
	}
	if _, due := l.Push(at(10*time.Millisecond+500*time.Microsecond), 750, 2); !due.Equal(at(11*time.Millisecond + 500*time.Microsecond)) {
		t.Fatalf("behind a busy link due %v, want 11.5ms", due.Sub(t0))
	}
}

func TestQueueTailDrops(t *testing.T) {
	l := newLine(t, Params{Rate: rate12M, Queue: 10 * 1500})
	var verdicts [20]Verdict
	for i := range verdicts {
		verdicts[i], _ = l.Push(t0, 1500, i)
	}
	for i, v := range verdicts {
		want := Queued
		if i >= 10 {
			want = QueueFull
		}
		if v != want {
			t.Fatalf("packet %d at t=0: %v, want %v (queue holds 10)", i, v, want)
		}
	}
	if got := l.Backlog(t0); got != 15000 {
		t.Fatalf("backlog %d, want 15000", got)
	}
	// After 5 ms, 5 packets have left the bottleneck: room for exactly 5 more.
	now := at(5 * time.Millisecond)
	if got := l.Backlog(now); got != 7500 {
		t.Fatalf("backlog at 5ms %d, want 7500", got)
	}
	for i := range 6 {
		v, _ := l.Push(now, 1500, 100+i)
		if want := map[bool]Verdict{true: Queued, false: QueueFull}[i < 5]; v != want {
			t.Fatalf("packet %d at 5ms: %v, want %v", i, v, want)
		}
	}
	// A small packet still fits where a big one did not.
	if v, _ := l.Push(now.Add(100*time.Microsecond), 100, 200); v != Queued {
		t.Fatalf("100-byte packet with 150 bytes free: %v", v)
	}
	if l.Len() != 16 {
		t.Fatalf("%d packets in the line, want 16", l.Len())
	}
}

func TestDelayApplied(t *testing.T) {
	const d = 20 * time.Millisecond
	l := newLine(t, Params{Delay: d}) // no rate limit: delay only
	l.Push(t0, 1500, 1)
	l.Push(at(time.Millisecond), 60, 2)
	if got := l.Pop(at(d-time.Nanosecond), nil, 10); len(got) != 0 {
		t.Fatalf("%v out before the delay", got)
	}
	if got := l.Pop(at(d), nil, 10); len(got) != 1 || got[0] != 1 {
		t.Fatalf("at the delay: %v, want [1]", got)
	}
	if next, ok := l.Next(); !ok || !next.Equal(at(d+time.Millisecond)) {
		t.Fatalf("next due %v %v, want 21ms", next.Sub(t0), ok)
	}
	// With a rate, the delay comes after serialization.
	l = newLine(t, Params{Rate: rate12M, Queue: 1 << 20, Delay: d})
	if _, due := l.Push(t0, 1500, 1); !due.Equal(at(d + time.Millisecond)) {
		t.Fatalf("due %v, want delay + 1ms serialization", due.Sub(t0))
	}
}

func TestLossFraction(t *testing.T) {
	for _, p := range []float64{0.001, 0.01, 0.03} {
		l := newLine(t, Params{Loss: p, Seed: 42})
		const n = 200_000
		lost := 0
		for i := range n {
			if v, _ := l.Push(t0, 1500, i); v == Lost {
				lost++
			}
		}
		// Binomial: 5 standard deviations is a bound a correct generator passes for any
		// seed with near certainty; the seed is fixed, so the outcome never changes.
		sd := math.Sqrt(n * p * (1 - p))
		if d := math.Abs(float64(lost) - n*p); d > 5*sd {
			t.Errorf("loss %.3f: %d of %d lost, want %.0f ± %.0f", p, lost, n, n*p, 5*sd)
		}
		if l.Len() != n-lost {
			t.Errorf("loss %.3f: %d queued, want %d", p, l.Len(), n-lost)
		}
	}
}

func TestLossReproducibleBySeed(t *testing.T) {
	pattern := func(seed uint64) []int {
		l := newLine(t, Params{Loss: 0.05, Seed: seed})
		var lost []int
		for i := range 10_000 {
			if v, _ := l.Push(t0, 100, i); v == Lost {
				lost = append(lost, i)
			}
		}
		return lost
	}
	a, b, c := pattern(7), pattern(7), pattern(8)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("same seed, %d and %d losses", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, loss %d differs: %d vs %d", i, a[i], b[i])
		}
	}
	same := len(a) == len(c)
	for i := 0; same && i < len(a); i++ {
		same = a[i] == c[i]
	}
	if same {
		t.Fatal("seeds 7 and 8 lose the same packets")
	}
}

// Packets of mixed sizes, arriving at irregular times, with loss and a full queue now and
// then, come out in the order they went in, none before it is due.
func TestOrderKept(t *testing.T) {
	l := newLine(t, Params{Rate: 50_000_000, Queue: 30_000, Delay: 5 * time.Millisecond, Loss: 0.02, Seed: 3})
	now := t0
	want := []int{}
	var got []int
	dues := map[int]time.Time{}
	for i := range 20_000 {
		now = now.Add(time.Duration(i%7) * 37 * time.Microsecond)
		if v, due := l.Push(now, 40+(i*131)%1461, i); v == Queued {
			want = append(want, i)
			dues[i] = due
		}
		if i%50 == 0 {
			n := len(got)
			got = l.Pop(now, got, 1<<20)
			for _, p := range got[n:] {
				if dues[p].After(now) {
					t.Fatalf("packet %d out at %v, due %v", p, now.Sub(t0), dues[p].Sub(t0))
				}
			}
		}
	}
	got = l.Pop(now.Add(time.Hour), got, 1<<30)
	if len(got) != len(want) {
		t.Fatalf("%d packets out, %d went in", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("position %d: packet %d, want %d", i, got[i], want[i])
		}
	}
	if len(want) == 20_000 {
		t.Fatal("no packet was dropped: the test exercises neither loss nor the queue")
	}
}

func TestPopMax(t *testing.T) {
	l := newLine(t, Params{})
	for i := range 10 {
		l.Push(t0, 100, i)
	}
	if got := l.Pop(t0, nil, 4); len(got) != 4 || got[3] != 3 {
		t.Fatalf("Pop max 4: %v", got)
	}
	if l.Len() != 6 {
		t.Fatalf("%d left, want 6", l.Len())
	}
}

func TestParamsValidate(t *testing.T) {
	for _, p := range []Params{{Rate: -1}, {Rate: 1000}, {Delay: -1}, {Loss: 1}, {Loss: -0.1}} {
		if _, err := NewLine[int](p); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
