package wan

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/quicgate/quicgate/bench/wanlink"
)

// Profile is one emulated link: the same rate, round trip and loss in both directions.
type Profile struct {
	Name string        `json:"name"` // canonical, as ParseProfile reads it: "100M/40ms/1%"
	Rate int64         `json:"rate_bps"`
	RTT  time.Duration `json:"rtt_ns"`
	Loss float64       `json:"loss"` // fraction, each direction
}

// DefaultProfiles are the profiles of a full run.
func DefaultProfiles() []Profile {
	var ps []Profile
	for _, s := range []string{"100M/40ms/0%", "100M/40ms/0.1%", "100M/40ms/1%", "100M/40ms/3%", "20M/200ms/1%", "1G/10ms/0%"} {
		p, err := ParseProfile(s)
		if err != nil {
			panic(err) // a typo in the list above
		}
		ps = append(ps, p)
	}
	return ps
}

// ParseProfile reads RATE/RTT/LOSS%, e.g. "100M/40ms/0.1%" or "1G/10ms/0%".
func ParseProfile(s string) (Profile, error) {
	f := strings.Split(strings.TrimSpace(s), "/")
	if len(f) != 3 {
		return Profile{}, fmt.Errorf("profile %q: want RATE/RTT/LOSS%%, e.g. 100M/40ms/1%%", s)
	}
	rate, err := ParseRate(f[0])
	if err != nil {
		return Profile{}, fmt.Errorf("profile %q: %w", s, err)
	}
	rtt, err := time.ParseDuration(f[1])
	if err != nil || rtt <= 0 {
		return Profile{}, fmt.Errorf("profile %q: round trip %q is not a positive duration", s, f[1])
	}
	pct, ok := strings.CutSuffix(f[2], "%")
	loss, err := strconv.ParseFloat(pct, 64)
	if !ok || err != nil || loss < 0 || loss >= 100 {
		return Profile{}, fmt.Errorf("profile %q: loss %q is not a percentage in [0, 100)", s, f[2])
	}
	p := Profile{Rate: rate, RTT: rtt, Loss: loss / 100}
	p.Name = fmt.Sprintf("%s/%v/%s%%", FormatRate(rate), rtt, strconv.FormatFloat(loss, 'f', -1, 64))
	return p, nil
}

// ParseRate reads a rate in bit/s with an optional k, M or G suffix (powers of 1000).
func ParseRate(s string) (int64, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*mult > 100e9 {
		return 0, fmt.Errorf("rate %q is not a rate like 100M or 1G (bit/s)", s)
	}
	return int64(v * mult), nil
}

// FormatRate writes a rate as ParseRate reads it.
func FormatRate(r int64) string {
	switch {
	case r%1e9 == 0:
		return strconv.FormatInt(r/1e9, 10) + "G"
	case r%1e6 == 0:
		return strconv.FormatInt(r/1e6, 10) + "M"
	case r%1e3 == 0:
		return strconv.FormatInt(r/1e3, 10) + "k"
	}
	return strconv.FormatInt(r, 10)
}

// Mbps is the link rate in Mbit/s.
func (p Profile) Mbps() float64 { return float64(p.Rate) / 1e6 }

// Params are one direction's emulator parameters (seed distinguishes the directions).
func (p Profile) Params(seed uint64) wanlink.Params {
	return wanlink.Symmetric(p.Rate, p.RTT, p.Loss, 1500, seed)
}

// Label is the profile for a table header: "100 Mbit/s, 40 ms, 1 %".
func (p Profile) Label() string {
	rate := fmt.Sprintf("%g Mbit/s", p.Mbps())
	if p.Rate >= 1e9 {
		rate = fmt.Sprintf("%g Gbit/s", float64(p.Rate)/1e9)
	}
	return fmt.Sprintf("%s, %v, %g %%", rate, p.RTT, p.Loss*100)
}
