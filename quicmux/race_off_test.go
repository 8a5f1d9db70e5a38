//go:build !race

package quicmux

const raceEnabled = false
