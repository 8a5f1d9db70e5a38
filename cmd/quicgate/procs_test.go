package main

import "testing"

func TestServerProcsDefault(t *testing.T) {
	for _, tc := range []struct{ cpus, want int }{{1, 1}, {2, 1}, {3, 0}, {4, 0}, {64, 0}} {
		if got := serverProcs(tc.cpus); got != tc.want {
			t.Errorf("serverProcs(%d) = %d, want %d", tc.cpus, got, tc.want)
		}
	}
}
