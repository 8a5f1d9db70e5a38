package congestion

// quicgate patch: BBR (see bbr_sender.go).

// maxFilter is a windowed running maximum: the largest value seen within the last window
// units of time (for BBR's bottleneck bandwidth, the time is a count of round trips).
// It is Kathleen Nichols' algorithm as in Linux lib/win_minmax.c: three samples, the best,
// second best and third best of successive sub-windows, so the maximum ages out smoothly
// without storing every sample.
type maxFilter struct {
	window uint64
	s      [3]filterSample
}

type filterSample struct {
	t, v uint64
}

func (f *maxFilter) Get() uint64 { return f.s[0].v }

func (f *maxFilter) Reset(t, v uint64) {
	f.s = [3]filterSample{{t, v}, {t, v}, {t, v}}
}

// Update records the value v seen at time t and returns the current maximum.
func (f *maxFilter) Update(t, v uint64) uint64 {
	s := filterSample{t, v}
	if v >= f.s[0].v || t-f.s[2].t > f.window { // a new maximum, or nothing left in the window
		f.Reset(t, v)
		return v
	}
	if v >= f.s[1].v {
		f.s[2] = s
		f.s[1] = s
	} else if v >= f.s[2].v {
		f.s[2] = s
	}
	return f.subwinUpdate(s)
}

// subwinUpdate ages the best samples out as the window passes them.
func (f *maxFilter) subwinUpdate(s filterSample) uint64 {
	dt := s.t - f.s[0].t
	switch {
	case dt > f.window:
		// The best sample left the window: promote the second and third best, and make
		// the new sample the third best.
		f.s[0] = f.s[1]
		f.s[1] = f.s[2]
		f.s[2] = s
		if s.t-f.s[0].t > f.window {
			f.s[0] = f.s[1]
			f.s[1] = f.s[2]
			f.s[2] = s
		}
	case f.s[1].t == f.s[0].t && dt > f.window/4:
		// A quarter of the window passed without a second best: take one from here.
		f.s[2] = s
		f.s[1] = s
	case f.s[2].t == f.s[1].t && dt > f.window/2:
		// Half the window passed without a third best.
		f.s[2] = s
	}
	return f.s[0].v
}
