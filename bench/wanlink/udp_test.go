package wanlink

import (
	"syscall"
	"testing"
)

// isUDP tells UDP from other protocols in both IP versions, and short or non-IP bytes from
// neither.
func TestIsUDP(t *testing.T) {
	v4 := func(proto byte) []byte { b := make([]byte, 28); b[0] = 0x45; b[9] = proto; return b }
	v6 := func(next byte) []byte { b := make([]byte, 48); b[0] = 0x60; b[6] = next; return b }
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"IPv4 UDP", v4(syscall.IPPROTO_UDP), true},
		{"IPv4 TCP", v4(syscall.IPPROTO_TCP), false},
		{"IPv6 UDP", v6(syscall.IPPROTO_UDP), true},
		{"IPv6 TCP", v6(syscall.IPPROTO_TCP), false},
		{"short", v4(syscall.IPPROTO_UDP)[:10], false},
		{"not IP", make([]byte, 60), false},
	} {
		if got := isUDP(tc.b); got != tc.want {
			t.Errorf("%s: isUDP = %v, want %v", tc.name, got, tc.want)
		}
	}
}
