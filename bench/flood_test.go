package bench

import (
	"net/netip"
	"testing"
)

func TestSourceAddr(t *testing.T) {
	const n = 70000
	seen := map[netip.Addr]bool{}
	pfx := netip.MustParsePrefix("127.16.0.0/12")
	for i := range n {
		a := SourceAddr(i, n)
		if !pfx.Contains(a) || a.As4()[3] == 0 || a.As4()[3] == 255 {
			t.Fatalf("SourceAddr(%d) = %v: outside 127.16.0.0/12 or ending in 0 or 255", i, a)
		}
		if seen[a] {
			t.Fatalf("SourceAddr(%d) = %v twice", i, a)
		}
		seen[a] = true
	}
	if SourceAddr(n, n) != SourceAddr(0, n) {
		t.Error("SourceAddr does not wrap around at n")
	}
}

func TestParseMemory(t *testing.T) {
	m, err := parseMemory("Name:\tquicgate\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n")
	if err != nil || m.RSS != 10<<20 || m.HWM != 20<<20 {
		t.Fatalf("got %+v, %v", m, err)
	}
	if _, err := parseMemory("Name:\tzombie\n"); err == nil {
		t.Error("no error for a status without VmRSS")
	}
}
